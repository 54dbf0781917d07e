/**
 * What the parts of the registry share to reach the database:
 * - `Statements`: the embedded store's prepared statements of one part, made at start, dropped at
 *   stop (the synchronous reloads after another process wrote state.db). Using them outside that
 *   window is NOT_READY.
 * - `RegistryWrite`: one write transaction on the `Db` port (the registry's: it also bumps the
 *   registry version on PostgreSQL, see registry.ts).
 * - `constraintOf`: which constraint a failed insert or update broke, on either dialect.
 */
import type { Transaction } from 'kysely';
import { Errors } from '../core/errors.js';
import type { SqliteDatabase } from '../storage/state/index.js';

export type Trx = Transaction<unknown>;
export type RegistryWrite = <T>(fn: (trx: Trx) => Promise<T>) => Promise<T>;

export class Statements<T> {
  private sql: T | undefined;

  constructor(private readonly prepare: (db: SqliteDatabase) => T) {}

  get isOpen(): boolean { return this.sql !== undefined; }

  get q(): T {
    if (!this.sql) throw Errors.NOT_READY('device registry is not started');
    return this.sql;
  }

  open(db: SqliteDatabase): void { this.sql = this.prepare(db); }

  close(): void { this.sql = undefined; }
}

/** 'primary' (the row exists), 'unique' (another unique column), 'foreign' (a referenced row is missing), or null. */
export function constraintOf(err: unknown): 'primary' | 'unique' | 'foreign' | null {
  const e = err as { code?: string; constraint?: string };
  switch (e.code) {
    case 'SQLITE_CONSTRAINT_PRIMARYKEY': return 'primary';
    case 'SQLITE_CONSTRAINT_UNIQUE': return 'unique';
    case 'SQLITE_CONSTRAINT_FOREIGNKEY': return 'foreign';
    case '23505': return e.constraint?.endsWith('_pkey') ? 'primary' : 'unique';
    case '23503': return 'foreign';
    default: return null;
  }
}

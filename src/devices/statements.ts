/**
 * The prepared statements of one part of the registry: made at start, dropped
 * at stop. Using them outside that window is NOT_READY.
 */
import { Errors } from '../core/errors.js';
import type { SqliteDatabase } from '../storage/state/index.js';

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

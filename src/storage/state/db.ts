/**
 * The state store: one SQLite database, <dataDir>/state.db, holding areas,
 * devices (credential hashes only) and the cached presence/latest values.
 *
 * Safe for several processes at once (the server and `keng` CLI commands):
 * WAL journal, busy_timeout, and migrations that take the write lock
 * (BEGIN IMMEDIATE) and re-check the version inside the transaction.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { preparePrivateDb, tightenSqliteFiles } from '../../core/private-files.js';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import { Errors } from '../../core/errors.js';
import { MIGRATIONS, latestVersion, type Migration } from './migrations.js';

/** An open better-sqlite3 connection. */
export type SqliteDatabase = Database.Database;

export interface StateDbOptions {
  dataDir: string;
  logger: Logger;
  /** How long a writer waits for another process's lock (ms). */
  busyTimeoutMs?: number;
  /**
   * false: the database must exist already (the CLI); a missing one is
   * reported as KENG_ERR_NO_STATE instead of being created empty. Default true
   * (the server's first start creates it).
   */
  create?: boolean;
  /** Tests only: a different migration list. */
  migrations?: readonly Migration[];
}

export interface AppliedMigration { version: number; name: string; appliedAt: number }

export const STATE_DB_FILE = 'state.db';

export class StateDb implements Component {
  readonly name = 'state';
  private readonly opts: StateDbOptions;
  private handle: Database.Database | undefined;

  constructor(opts: StateDbOptions) {
    this.opts = opts;
  }

  /** Path of the database file. */
  get file(): string {
    return path.join(this.opts.dataDir, STATE_DB_FILE);
  }

  /** The open connection; throws when start() has not run (or stop() has). */
  get db(): Database.Database {
    if (!this.handle) throw Errors.NOT_READY('state store is not started');
    return this.handle;
  }

  get started(): boolean {
    return this.handle !== undefined;
  }

  async start(): Promise<void> {
    if (this.handle) return;
    const { dataDir, logger } = this.opts;
    const create = this.opts.create ?? true;
    if (create) mkdirSync(dataDir, { recursive: true, mode: 0o750 });
    // Holds credential hashes: the owner only, from its creation on (its -wal and -shm take its mode).
    if (create) preparePrivateDb(this.file);
    let db: Database.Database;
    try {
      db = new Database(this.file, { timeout: this.opts.busyTimeoutMs ?? 5000, fileMustExist: !create });
    } catch (err) {
      if (!create && !existsSync(this.file)) throw Errors.NO_STATE(dataDir, STATE_DB_FILE);
      throw err;
    }
    try {
      db.pragma(`busy_timeout = ${Math.trunc(this.opts.busyTimeoutMs ?? 5000)}`);
      db.pragma('journal_mode = WAL');
      tightenSqliteFiles(this.file); // -wal/-shm left readable by an older version
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      const applied = migrate(db, this.opts.migrations ?? MIGRATIONS, this.file);
      if (applied.length) logger.info({ file: this.file, applied }, 'state store migrated');
      else logger.debug({ file: this.file }, 'state store up to date');
    } catch (err) {
      db.close();
      throw err;
    }
    this.handle = db;
  }

  async stop(): Promise<void> {
    const db = this.handle;
    this.handle = undefined;
    if (db?.open) db.close();
  }

  /** Current schema version of the open database. */
  version(): number {
    return currentVersion(this.db);
  }

  migrations(): AppliedMigration[] {
    return this.db.prepare('SELECT version, name, applied_at AS appliedAt FROM schema_migrations ORDER BY version')
      .all() as AppliedMigration[];
  }
}

function currentVersion(db: Database.Database): number {
  const v = db.prepare('SELECT MAX(version) FROM schema_migrations').pluck().get();
  return typeof v === 'number' ? v : 0;
}

function checkList(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`state migrations must be numbered 1, 2, 3, ... (entry ${i} has version ${m.version})`);
  });
}

/** Applies pending migrations, each in its own write transaction. Returns the versions applied. */
function migrate(db: Database.Database, migrations: readonly Migration[], file: string): number[] {
  checkList(migrations);
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  )`);
  const known = latestVersion(migrations);
  const refuseNewer = (v: number): void => {
    if (v > known) {
      throw Errors.CONFIG(`KENG_DATA_DIR: ${file} has schema version ${v} but this Keng knows versions up to ${known}; `
        + 'it was written by a newer Keng (upgrade Keng or point KENG_DATA_DIR elsewhere)');
    }
  };
  refuseNewer(currentVersion(db));
  const insert = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
  const applied: number[] = [];
  for (const m of migrations) {
    const step = db.transaction(() => {
      const cur = currentVersion(db); // another process may have migrated meanwhile
      refuseNewer(cur);
      if (cur >= m.version) return;
      db.exec(m.up);
      insert.run(m.version, m.name, Date.now());
      applied.push(m.version);
    });
    step.immediate();
  }
  return applied;
}

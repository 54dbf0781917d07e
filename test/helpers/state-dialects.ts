/**
 * Run a state repository's tests on both dialects of the `Db` port: the embedded
 * SQLite state.db (every migration of src/migrations.ts, through the StateDb's own
 * connection as the server does) and a real PostgreSQL (a private server per test
 * file, one fresh database per `open()`, every PG_STATE_SCOPES migration applied).
 *
 *   describe.each(STATE_DIALECTS)('users on %s', (dialect) => {
 *     let h: StateHarness;
 *     beforeEach(async () => { h = await openState(dialect); });
 *     afterEach(() => h.close());
 *     ...
 *   });
 *   afterAll(stopStatePostgres);
 *
 * `h.sqlite` is the raw better-sqlite3 handle on SQLite (for repositories not yet
 * moved to the port), undefined on PostgreSQL.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLogger } from '../../src/core/index.js';
import { ALL_MIGRATIONS, PG_STATE_SCOPES } from '../../src/migrations.js';
import { migrate, openPgDb, type Db, type SqlDialect } from '../../src/storage/sql/index.js';
import { StateDb, stateSqlitePort, type SqliteDatabase } from '../../src/storage/state/index.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';

export const STATE_DIALECTS: SqlDialect[] = ['sqlite', 'postgres'];

export interface StateHarness {
  readonly dialect: SqlDialect;
  readonly db: Db<unknown>;
  /** SQLite only: the StateDb (raw handle at `.db`), for code not yet on the port. */
  readonly state?: StateDb;
  readonly sqlite?: SqliteDatabase;
  /** PostgreSQL only: the database's URL (open more pools on it: several nodes). */
  readonly url?: string;
  close(): Promise<void>;
}

let server: Promise<PostgresServer> | null = null;
let seq = 0;

/** The private PostgreSQL of this test file (started on first use). */
export function statePostgres(): Promise<PostgresServer> {
  server ??= startPostgres();
  return server;
}

/** For afterAll: kill this file's PostgreSQL and delete its directory. */
export async function stopStatePostgres(): Promise<void> {
  const s = server;
  server = null;
  if (s) await (await s).destroy();
}

/** A fresh PostgreSQL database with every state scope migrated; returns its URL. */
export async function freshStateDatabase(): Promise<string> {
  const url = await (await statePostgres()).createDatabase(`state_${process.pid}_${++seq}`);
  const db = openPgDb(url);
  try {
    for (const { scope, migrations } of PG_STATE_SCOPES) await migrate(db, scope, migrations);
  } finally {
    await db.close();
  }
  return url;
}

export async function openState(dialect: SqlDialect): Promise<StateHarness> {
  if (dialect === 'postgres') {
    const url = await freshStateDatabase();
    const db = openPgDb(url);
    return { dialect, db, url, close: () => db.close() };
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-state-'));
  const state = new StateDb({ dataDir: dir, logger: createLogger('silent'), migrations: ALL_MIGRATIONS });
  await state.start();
  return {
    dialect, db: stateSqlitePort(state), state, sqlite: state.db,
    async close() { await state.stop(); rmSync(dir, { recursive: true, force: true }); },
  };
}

/**
 * SQLite: rows for speakers `ids` in the registry's tables (area `p`), which RPC commands need (rpc store-sql.ts
 * stores commands for registered devices only). PostgreSQL's state scopes have no such constraint: nothing to do.
 */
export function seedSpeakerRows(h: StateHarness, ids: readonly string[]): void {
  if (!h.sqlite) return;
  h.sqlite.exec(`INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p', 'P', 'province', NULL, 0)`);
  const add = h.sqlite.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at) VALUES (?, 'speaker', ?, 'p', 'x', ?, 'x', 0)`);
  for (const id of ids) add.run(id, id, id);
}

/**
 * The state store's Db port on SQLite: it shares the StateDb's connection with code still using
 * better-sqlite3 directly, begins IMMEDIATE, nests as a savepoint inside an open transaction
 * (the broadcast path's group commit), rolls back what its function wrote when it throws, and
 * follows the StateDb to a new connection after a restart.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/index.js';
import { StateDb, stateSqlitePort } from '../../src/storage/state/index.js';
import type { Db } from '../../src/storage/sql/index.js';

const migrations = [{ version: 1, name: 't', up: 'CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)' }];
let dir: string;
let state: StateDb;
let db: Db<unknown>;

beforeEach(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'keng-port-'));
  state = new StateDb({ dataDir: dir, logger: createLogger('silent'), migrations });
  await state.start();
  db = stateSqlitePort(state);
});
afterEach(async () => { await state.stop(); rmSync(dir, { recursive: true, force: true }); });

const put = (k: string, v: number) => (trx: Parameters<Parameters<Db<unknown>['write']>[0]>[0]) => sql`INSERT INTO t (k, v) VALUES (${k}, ${v})`.execute(trx);
const rows = (): Array<{ k: string; v: number }> => state.db.prepare('SELECT k, v FROM t ORDER BY k').all() as Array<{ k: string; v: number }>;

describe('state Db port (SQLite)', () => {
  it('commits on the StateDb connection: sync readers see the rows at once', async () => {
    await db.write(async (trx) => { await put('a', 1)(trx); await put('b', 2)(trx); });
    expect(rows()).toEqual([{ k: 'a', v: 1 }, { k: 'b', v: 2 }]);
    expect(state.db.inTransaction).toBe(false);
  });

  it('rolls back everything the function wrote when it throws', async () => {
    await expect(db.write(async (trx) => { await put('a', 1)(trx); throw new Error('boom'); })).rejects.toThrow('boom');
    expect(rows()).toEqual([]);
    expect(state.db.inTransaction).toBe(false);
  });

  it('inside an open transaction (group commit) it is a savepoint: its rollback keeps the outer writes', async () => {
    state.db.exec('BEGIN IMMEDIATE');
    state.db.prepare('INSERT INTO t (k, v) VALUES (?, ?)').run('outer', 1);
    await expect(db.write(async (trx) => { await put('inner', 2)(trx); throw new Error('no'); })).rejects.toThrow('no');
    await db.write(async (trx) => { await put('kept', 3)(trx); });
    expect(state.db.inTransaction).toBe(true);
    state.db.exec('COMMIT');
    expect(rows().map((r) => r.k)).toEqual(['kept', 'outer']);
  });

  it('a write transaction holds the lock against a second process (BEGIN IMMEDIATE)', async () => {
    const Database = (await import('better-sqlite3')).default;
    const other = new Database(state.file, { timeout: 50 });
    try {
      await db.write(async (trx) => {
        await sql`SELECT COUNT(*) FROM t`.execute(trx);
        expect(() => other.prepare('INSERT INTO t (k, v) VALUES (?, ?)').run('x', 9)).toThrow(/locked|busy/i);
      });
    } finally { other.close(); }
  });

  it('follows the StateDb to its new connection after a restart', async () => {
    await db.write(async (trx) => { await put('a', 1)(trx); });
    await state.stop();
    await state.start();
    const r = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM t`.execute(db.kysely);
    expect(r.rows[0]!.n).toBe(1);
    await db.ping();
  });
});

describe('state Db port (SQLite): concurrent transactions', () => {
  it('two writes started in one turn run one after the other: a failing one never undoes the other', async () => {
    const other = stateSqlitePort(state); // another port on the same connection (the CLI, a second module)
    const results = await Promise.allSettled([
      db.write(async (trx) => { await put('a', 1)(trx); await put('a2', 1)(trx); throw new Error('first fails'); }),
      other.write(async (trx) => { await put('b', 2)(trx); await put('b2', 2)(trx); }),
      db.write(async (trx) => { await put('c', 3)(trx); }),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
    expect(rows().map((r) => r.k)).toEqual(['b', 'b2', 'c']);
    expect(state.db.inTransaction).toBe(false);
  });

  it('a snapshot started during a write sees it committed or not at all', async () => {
    const w = db.write(async (trx) => { await put('a', 1)(trx); await put('b', 2)(trx); });
    const seen = db.snapshot(async (trx) => (await sql<{ n: number }>`SELECT COUNT(*) AS n FROM t`.execute(trx)).rows[0]!.n);
    await w;
    expect(await seen).toBe(2);
  });
});

describe('state Db port (SQLite): plain statements and transactions', () => {
  it('a plain statement issued while another task\'s write is open waits for it: a rollback never takes it along', async () => {
    let failLater!: () => void;
    const gate = new Promise<void>((r) => { failLater = r; });
    const w = db.write(async (trx) => { await put('rolled-back', 1)(trx); await gate; throw new Error('no'); });
    await new Promise((r) => setTimeout(r, 10)); // the write's transaction is open now
    const plain = sql`INSERT INTO t (k, v) VALUES ('plain', 2)`.execute(stateSqlitePort(state).kysely);
    failLater();
    await expect(w).rejects.toThrow('no');
    await plain;
    expect(rows().map((r) => r.k)).toEqual(['plain']);
  });
});

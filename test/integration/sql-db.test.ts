import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate, openPgDb, openSqliteDb, redactUrl, type Db, type SqlMigration } from '../../src/storage/sql/index.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { freePort } from '../../tools/ports.js';

let pgServer: PostgresServer;
let dir: string;
let seq = 0;
beforeAll(async () => {
  pgServer = await startPostgres();
  dir = mkdtempSync(path.join(tmpdir(), 'keng-sqldb-'));
}, 120_000);
afterAll(async () => {
  await pgServer?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/** A fresh database per call (tests stay independent). */
const dialects = {
  sqlite: async () => ({ open: ((f = path.join(dir, `t${++seq}.db`)) => () => openSqliteDb(f))() }),
  postgres: async () => { const url = await pgServer.createDatabase(`t${++seq}`); return { open: () => openPgDb(url) }; },
};

const MIGRATIONS: SqlMigration[] = [
  // No IF NOT EXISTS on purpose: running a step twice fails the test.
  { version: 1, name: 'things', sqlite: ['CREATE TABLE things (id INTEGER PRIMARY KEY, v TEXT NOT NULL)'], postgres: ['CREATE TABLE things (id bigint PRIMARY KEY, v text NOT NULL)'] },
  { version: 2, name: 'things.n', sqlite: ['ALTER TABLE things ADD COLUMN n INTEGER'], postgres: ['ALTER TABLE things ADD COLUMN n bigint'] },
];

describe.each(['sqlite', 'postgres'] as const)('Db on %s', (dialect) => {
  it('write commits when fn resolves, rolls back when it throws; migrations run once, also concurrently', async () => {
    const { open } = await dialects[dialect]();
    // SQLite: one Db per file per process (a second connection in the same thread would block the
    // event loop in busy_timeout while the first holds the lock); concurrency there is the mutex.
    const first = open();
    const dbs: Db<unknown>[] = dialect === 'sqlite' ? [first, first, first] : [first, open(), open()];
    try {
      const applied = await Promise.all(dbs.map((d) => migrate(d, 'test', MIGRATIONS)));
      expect(applied.flat().sort()).toEqual([1, 2]);
      expect(await migrate(dbs[0]!, 'test', MIGRATIONS)).toEqual([]);
      const db = dbs[0]!;
      await db.write(async (trx) => { await sql`INSERT INTO things (id, v, n) VALUES (1, 'a', ${2 ** 40})`.execute(trx); });
      await expect(db.write(async (trx) => {
        await sql`INSERT INTO things (id, v) VALUES (2, 'b')`.execute(trx);
        throw new Error('boom');
      })).rejects.toThrow('boom');
      const rows = await sql<{ id: number; v: string; n: number }>`SELECT id, v, n FROM things ORDER BY id`.execute(db.kysely);
      expect(rows.rows).toEqual([{ id: 1, v: 'a', n: 2 ** 40 }]); // bigint comes back as a number
      const recorded = await sql<{ version: number }>`SELECT version FROM keng_migrations WHERE scope = 'test' ORDER BY version`.execute(db.kysely);
      expect(recorded.rows.map((r) => Number(r.version))).toEqual([1, 2]);
      // A database newer than this code is refused.
      await expect(migrate(db, 'test', MIGRATIONS.slice(0, 1))).rejects.toThrow(/version 2, newer than this Keng knows \(1\)/);
      await db.ping();
    } finally {
      for (const d of new Set(dbs)) await d.close();
    }
  });
});

describe('SQLite write transactions are IMMEDIATE', () => {
  it('a write transaction holds the write lock from BEGIN, before its first write', async () => {
    const file = path.join(dir, 'immediate.db');
    const db = openSqliteDb(file);
    await migrate(db, 'test', MIGRATIONS);
    const other = new Database(file);
    other.pragma('busy_timeout = 0');
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    let inside!: () => void;
    const entered = new Promise<void>((r) => { inside = r; });
    const tx = db.write(async (trx) => {
      await sql`SELECT COUNT(*) FROM things`.execute(trx); // a read only: a DEFERRED transaction would hold no write lock yet
      inside();
      await held;
    });
    await entered;
    expect(() => other.prepare("INSERT INTO things (id, v) VALUES (9, 'x')").run()).toThrow(/locked|busy/i);
    release();
    await tx;
    other.prepare("INSERT INTO things (id, v) VALUES (9, 'x')").run();
    other.close();
    await db.close();
  });
});

describe('PostgreSQL failures reject, never hang', () => {
  it('nothing listening: ping rejects quickly', async () => {
    const db = openPgDb(`postgres://keng:secret@127.0.0.1:${await freePort()}/keng`, { connectTimeoutMs: 1_000 });
    await expect(db.ping(3_000)).rejects.toThrow(/ECONNREFUSED/);
    await db.close();
  });

  it('a server that accepts and never answers: the connect timeout rejects', async () => {
    const sockets: net.Socket[] = [];
    const hole = net.createServer((s) => { sockets.push(s); });
    await new Promise<void>((r) => hole.listen(0, '127.0.0.1', r));
    const port = (hole.address() as net.AddressInfo).port;
    const db = openPgDb(`postgres://keng@127.0.0.1:${port}/keng`, { connectTimeoutMs: 500 });
    const t0 = Date.now();
    await expect(sql`SELECT 1`.execute(db.kysely)).rejects.toThrow(/timeout/i);
    expect(Date.now() - t0).toBeLessThan(5_000);
    await db.close();
    for (const s of sockets) s.destroy();
    hole.close();
  });

  it('the server dies and comes back: calls in between reject, later ones work; no crash on idle errors', async () => {
    const url = await pgServer.createDatabase(`t${++seq}`);
    const idleErrors: Error[] = [];
    const db = openPgDb(url, { connectTimeoutMs: 1_000, onIdleError: (e) => idleErrors.push(e) });
    await db.ping();
    await pgServer.kill();
    await expect(db.write(async (trx) => { await sql`SELECT 1`.execute(trx); })).rejects.toThrow();
    await pgServer.restart();
    let ok = false;
    for (let i = 0; i < 50 && !ok; i++) { try { await db.ping(); ok = true; } catch { await new Promise((r) => setTimeout(r, 100)); } }
    expect(ok).toBe(true);
    await db.close();
  }, 60_000);

  it('redacts the password of a URL', () => {
    expect(redactUrl('postgres://keng:s3cret@db.example:5432/keng')).toBe('postgres://keng:***@db.example:5432/keng');
  });
});

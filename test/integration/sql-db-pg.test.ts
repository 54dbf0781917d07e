/**
 * The Db port on a real PostgreSQL behind a TCP proxy that can black-hole it (a cut network gives no
 * error, only silence): readiness probes asked every few hundred ms share one probe in flight instead of
 * piling up hung queries that would hold every pooled connection; a write cut mid-transaction fails after one
 * query timeout, not two. And the settings every connection gets.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPgDb } from '../../src/storage/sql/index.js';
import { startBlackhole, type Blackhole } from '../../tools/blackhole.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';

let server: PostgresServer;
beforeAll(async () => { server = await startPostgres(); }, 120_000);
afterAll(async () => { await server?.destroy(); });

/** A new database reached through a proxy that can cut the network. */
async function behindBlackhole(name: string): Promise<{ url: string; hole: Blackhole }> {
  const url = new URL(await server.createDatabase(name));
  const hole = await startBlackhole({ host: url.hostname, port: Number(url.port) });
  url.hostname = hole.host;
  url.port = String(hole.port);
  return { url: url.toString(), hole };
}

describe('Db.ping on a black-holed network', () => {
  it('probes share one query in flight: the pool keeps its other connections; answers again after the heal', async () => {
    const { url, hole } = await behindBlackhole('probe');
    const db = openPgDb(url, { poolMax: 5 });
    try {
      await db.ping(5_000);
      expect(hole.connections()).toBe(1);
      hole.pause();
      // A balancer's checks: every 100 ms, each giving up after 300 ms.
      const results: Array<Promise<unknown>> = [];
      for (let i = 0; i < 15; i++) {
        results.push(db.ping(300).then(() => 'answered', (e: Error) => e.message));
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(new Set(await Promise.all(results))).toEqual(new Set(['no answer within 300 ms']));
      // One hung probe holds one connection; the pool did not open one per check.
      expect(hole.connections()).toBe(1);
      hole.heal();
      await db.ping(5_000);
    } finally {
      await db.close();
      await hole.close();
    }
  }, 60_000);
});

describe('a write transaction on a black-holed network', () => {
  it('fails after one query timeout, not two: the hung connection is closed, so its ROLLBACK does not wait a timeout of its own', async () => {
    const { url, hole } = await behindBlackhole('cut_write');
    // statement_timeout 2 s, so the client gives up on a silent server after 3 s.
    const db = openPgDb(url, { poolMax: 2, statementTimeoutMs: 2_000 });
    try {
      await sql`CREATE TABLE t (v int)`.execute(db.kysely);
      let cutAt = 0;
      const failed = db.write(async (trx) => {
        await sql`INSERT INTO t VALUES (1)`.execute(trx); // the transaction has begun on the server
        hole.pause();
        cutAt = Date.now();
        await sql`INSERT INTO t VALUES (2)`.execute(trx);
      }).then(() => null, () => Date.now() - cutAt);
      const failedAfterMs = await failed;
      expect(failedAfterMs).not.toBeNull();
      // One query timeout (3 s) and a little; the ROLLBACK queued behind the hung INSERT would take 3 s more.
      expect(failedAfterMs).toBeGreaterThanOrEqual(2_900);
      expect(failedAfterMs).toBeLessThan(5_500); // two timeouts would be 6 s or more
      hole.heal();
      // The pool opens a new connection; the orphaned transaction was never committed.
      await db.write(async (trx) => { await sql`INSERT INTO t VALUES (3)`.execute(trx); });
      const rows = await sql<{ v: number }>`SELECT v FROM t ORDER BY v`.execute(db.kysely);
      expect(rows.rows.map((x) => x.v)).toEqual([3]);
    } finally {
      await db.close();
      await hole.close();
    }
  }, 60_000);
});

describe('session settings', () => {
  it('every pooled connection runs without JIT (compiling a 2,000-row insert cost 265 of its 290 ms)', async () => {
    const db = openPgDb(server.url, { poolMax: 3 });
    try {
      const rows = await Promise.all(Array.from({ length: 3 }, () => db.write(async (trx) => (await sql<{ jit: string }>`SHOW jit`.execute(trx)).rows[0]!.jit)));
      expect(rows).toEqual(['off', 'off', 'off']);
    } finally {
      await db.close();
    }
  });
});

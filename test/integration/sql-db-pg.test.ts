/**
 * The Db port on a real PostgreSQL behind a TCP proxy that can black-hole it (a cut network gives no
 * error, only silence): readiness probes asked every few hundred ms share one probe in flight instead of
 * piling up hung queries that would hold every pooled connection. And the settings every connection gets.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPgDb } from '../../src/storage/sql/index.js';
import { startBlackhole } from '../../tools/blackhole.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';

let server: PostgresServer;
beforeAll(async () => { server = await startPostgres(); }, 120_000);
afterAll(async () => { await server?.destroy(); });

describe('Db.ping on a black-holed network', () => {
  it('probes share one query in flight: the pool keeps its other connections; answers again after the heal', async () => {
    const url = new URL(await server.createDatabase('probe'));
    const hole = await startBlackhole({ host: url.hostname, port: Number(url.port) });
    url.hostname = hole.host;
    url.port = String(hole.port);
    const db = openPgDb(url.toString(), { poolMax: 5 });
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

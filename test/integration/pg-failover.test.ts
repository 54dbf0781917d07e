/**
 * KENG_DATABASE_URL with several hosts (postgres://…@standby,primary/keng): Keng connects to whichever
 * is the primary, and after the primary dies and a standby is promoted it finds the new primary by
 * itself, with the same setting. Real PostgreSQL 15 primary + synchronous streaming standby.
 */
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { splitPgUrl } from '../../src/core/pg-url.js';
import { openPgDb, redactUrl } from '../../src/storage/sql/index.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';

const servers: PostgresServer[] = [];
afterAll(async () => { for (const s of servers.reverse()) await s.destroy(); });

describe('several PostgreSQL hosts in one URL', () => {
  it('reads the host list (and redacts it)', () => {
    expect(splitPgUrl('postgres://k:pw@db1:5432,db2:5433/keng?sslmode=require')).toEqual([
      'postgres://k:pw@db1:5432/keng?sslmode=require', 'postgres://k:pw@db2:5433/keng?sslmode=require']);
    expect(splitPgUrl('postgres://db1/keng')).toEqual(['postgres://db1/keng']);
    expect(() => splitPgUrl('postgres://db1,,db2/keng')).toThrow(/empty host/);
    expect(redactUrl('postgres://k:secret@db1:5432,db2:5433/keng')).toBe('postgres://k:***@db1:5432,db2:5433/keng');
    expect(redactUrl('postgres://db1:5432,db2:5433/keng')).toBe('postgres://db1:5432,db2:5433/keng');
  });

  it('connects to the primary, skipping the standby listed first; after a failover, to the promoted standby', async () => {
    const primary = await startPostgres();
    servers.push(primary);
    const standby = await startPostgres({ standbyOf: primary, synchronous: true });
    servers.push(standby);
    await primary.query('CREATE TABLE t (id int PRIMARY KEY, at text)');
    const url = `postgres://postgres@127.0.0.1:${standby.port},127.0.0.1:${primary.port}/keng`;
    const db = openPgDb(url, { poolMax: 2, connectTimeoutMs: 2_000 });
    try {
      const put = (id: number) => db.write(async (trx) => { await sql`INSERT INTO t (id, at) VALUES (${id}, inet_server_port()::text)`.execute(trx); });
      for (let i = 1; i <= 5; i++) await put(i); // the standby refuses to be used: every write lands on the primary
      expect((await primary.query<{ at: string }>('SELECT DISTINCT at FROM t')).rows).toEqual([{ at: String(primary.port) }]);

      await primary.kill();
      await standby.promote();
      // The same Db, no new setting: calls fail while the pooled connections to the dead primary are
      // discarded, then new connections find the promoted standby.
      const t0 = Date.now();
      let id = 100;
      for (;;) {
        try { await put(id++); break; } catch (err) {
          if (Date.now() - t0 > 30_000) throw err;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      const took = Date.now() - t0;
      const rows = (await standby.query<{ id: number; at: string }>('SELECT id, at FROM t ORDER BY id')).rows;
      expect(rows.slice(0, 5).map((r) => r.id)).toEqual([1, 2, 3, 4, 5]); // synchronous: nothing committed was lost
      expect(rows.at(-1)!.at).toBe(String(standby.port));
      console.log(`pg failover: writes on the promoted standby ${took} ms after the promotion`);
    } finally {
      await db.close();
    }
  }, 180_000);
});

import { afterAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';

// The throw-away PostgreSQL the cluster tests stand on: a crash keeps committed rows (fsync on),
// and a synchronous standby has every committed row when it is promoted after the primary dies.
describe('tools/postgres', () => {
  const servers: PostgresServer[] = [];
  afterAll(async () => { for (const s of servers.reverse()) await s.destroy(); });

  it('primary + synchronous standby; SIGKILL the primary, promote: every committed row is there', async () => {
    const primary = await startPostgres();
    servers.push(primary);
    expect((await primary.query<{ fsync: string }>('SHOW fsync')).rows[0]!.fsync).toBe('on');
    const standby = await startPostgres({ standbyOf: primary, synchronous: true });
    servers.push(standby);
    const rep = await primary.query<{ application_name: string; sync_state: string }>('SELECT application_name, sync_state FROM pg_stat_replication', [], 'postgres');
    expect(rep.rows).toEqual([{ application_name: standby.name, sync_state: 'sync' }]);

    await primary.query('CREATE TABLE t (id int PRIMARY KEY)');
    let committed = 0;
    const writer = (async () => {
      for (let i = 1; ; i++) {
        try { await primary.query('INSERT INTO t VALUES ($1)', [i]); committed = i; } catch { return; }
      }
    })();
    await new Promise((r) => setTimeout(r, 500));
    await primary.kill();
    await writer;
    expect(committed).toBeGreaterThan(10);
    await expect(standby.query('INSERT INTO t VALUES (0)')).rejects.toThrow(/read-only/);
    await standby.promote();
    const { rows } = await standby.query<{ n: string; m: number }>('SELECT count(*) AS n, max(id) AS m FROM t');
    expect(Number(rows[0]!.n)).toBeGreaterThanOrEqual(committed); // the one in flight at the kill may be there too
    expect(rows[0]!.m).toBeLessThanOrEqual(committed + 1);
    await standby.query('INSERT INTO t VALUES (0)'); // writable now

    expect(await standby.createDatabase('other_db')).toMatch(/\/other_db$/);

    // The killed primary restarts (crash recovery) with its own committed rows. (It still waits for
    // its synchronous standby on every commit, so this test only reads from it.)
    await primary.restart();
    expect(Number((await primary.query<{ n: string }>('SELECT count(*) AS n FROM t')).rows[0]!.n)).toBeGreaterThanOrEqual(committed);
  }, 120_000);
});

import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { readStatFields } from '../../tools/proc-stat.js';

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

  // PostgreSQL's children make themselves session leaders, so a signal to the postmaster's process group reached
  // the postmaster alone: a backend went on until it noticed the death (an idle one could still answer a query, seen
  // under load as a write that succeeded after the kill; a busy one runs on until its query ends).
  it('kill(): a backend running a query is gone when kill() resolves, as in a machine crash', async () => {
    const s = await startPostgres();
    servers.push(s);
    const c = new pg.Client({ connectionString: s.url });
    c.on('error', () => { /* the server goes away below */ });
    await c.connect();
    const backend = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    // Minutes of CPU work: a backend checks for the postmaster's death only when it waits, not inside a query.
    const busy = c.query('SELECT count(*) FROM generate_series(1, 10000000000)').then(() => 'answered', () => 'rejected');
    await new Promise((r) => setTimeout(r, 300));
    await s.kill();
    expect(['gone', 'Z']).toContain(readStatFields(backend)?.[0] ?? 'gone');
    expect(await busy).toBe('rejected');
    await c.end().catch(() => undefined);
  }, 60_000);
});

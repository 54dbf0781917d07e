/**
 * The audit chain on both dialects of the state Db port, and in cluster mode: one chain in
 * PostgreSQL that several nodes append to at once (each append locks the head row, so they queue
 * instead of forking), checked by `keng audit verify` against PostgreSQL.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_CLUSTER_ANCHORS_FILE, AuditLog, makeAuditKey, verifyAuditChain, type AuditKey } from '../../src/audit/index.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { CLUSTER_AUDIT_KEY, Cluster, adminApi, removeClusterDirs, seedCluster, type Seed } from '../helpers/cluster.js';
import { STATE_DIALECTS, freshStateDatabase, openState, statePostgres, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';
import { sql } from 'kysely';

const KEY = makeAuditKey(Buffer.alloc(32, 5), 'test key');
const ROOT = path.resolve(__dirname, '../..');
const clock = { now: () => Date.now() };

afterAll(async () => { await stopStatePostgres(); removeClusterDirs(); });

const entry = (node: string, i: number) => ({ actor: { kind: 'user', id: `op-${node}` }, action: 'device.create', target: `device:${node}-${i}`, after: { i } });

describe.each(STATE_DIALECTS)('audit chain on %s', (dialect) => {
  let h: StateHarness;
  beforeAll(async () => { h = await openState(dialect); }, 120_000);
  afterAll(async () => { await h?.close(); });

  it('appends in its own transaction or in the caller\'s (rolled back with it), verifies, catches an edit', async () => {
    const log = new AuditLog({ db: h.db, clock, key: KEY });
    await log.ensureKeyed();
    for (let i = 0; i < 5; i++) await log.record(entry('a', i));
    // In the caller's transaction: a failure after it leaves neither the change nor its entry.
    await expect(h.db.write(async (trx) => {
      await log.record(entry('a', 99), trx);
      throw new Error('the change failed');
    })).rejects.toThrow('the change failed');
    await h.db.write(async (trx) => { await log.record(entry('a', 5), trx); });
    expect(await verifyAuditChain(h.db, { key: KEY })).toEqual({ ok: true, count: 7, lastSeq: 7, keyedSince: 1, keyId: KEY.id, anchors: 0 });
    expect((await log.query({ limit: 2 })).map((e) => e.target)).toEqual(['device:a-5', 'device:a-4']);
    await sql`UPDATE audit_log SET actor = 'user:x' WHERE seq = 3`.execute(h.db.kysely);
    expect(await verifyAuditChain(h.db, { key: KEY })).toMatchObject({ ok: false, kind: 'tampered', seq: 3 });
  });
});

describe('audit chain on PostgreSQL: several nodes', () => {
  it('three nodes appending at once extend one chain: every entry once, contiguous, verified', async () => {
    const url = await freshStateDatabase();
    const dbs: Db<unknown>[] = [openPgDb(url), openPgDb(url), openPgDb(url)];
    try {
      const logs = dbs.map((db) => new AuditLog({ db, clock, key: KEY }));
      await Promise.all(logs.map((l) => l.ensureKeyed())); // three starts at once: one switch entry
      const N = 60;
      await Promise.all(logs.map(async (l, n) => {
        // Several appends in flight per node as well (concurrent requests).
        await Promise.all(Array.from({ length: 4 }, async (_, lane) => {
          for (let i = lane; i < N; i += 4) await l.record(entry(`n${n}`, i));
        }));
      }));
      const report = await verifyAuditChain(dbs[0]!, { key: KEY });
      expect(report).toMatchObject({ ok: true, count: 3 * N + 1, lastSeq: 3 * N + 1, keyedSince: 1 });
      const targets = (await sql<{ target: string }>`SELECT target FROM audit_log WHERE action = 'device.create'`.execute(dbs[1]!.kysely)).rows.map((r) => r.target);
      expect(new Set(targets).size).toBe(3 * N);
      const switches = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM audit_log WHERE action = 'audit.chain_keyed'`.execute(dbs[2]!.kysely);
      expect(switches.rows[0]!.n).toBe(1);
    } finally {
      await Promise.all(dbs.map((d) => d.close()));
    }
  }, 120_000);

  it('an append with another key is refused once the chain is keyed (a node with the wrong key cannot extend it)', async () => {
    const url = await freshStateDatabase();
    const db = openPgDb(url);
    try {
      await new AuditLog({ db, clock, key: KEY }).record(entry('a', 1));
      const other: AuditKey = makeAuditKey(Buffer.alloc(32, 6), 'other');
      await expect(new AuditLog({ db, clock, key: other }).record(entry('b', 1))).rejects.toMatchObject({ code: 'KENG_ERR_AUDIT_KEY' });
    } finally { await db.close(); }
  });
});

describe('audit chain in cluster mode: three Keng nodes, then keng audit verify', () => {
  let redis: RedisServer;
  let seed: Seed;
  let cluster: Cluster;
  let url: string;
  beforeAll(async () => {
    [redis, seed] = await Promise.all([startRedis(), seedCluster([])]);
    url = await freshStateDatabase();
    cluster = new Cluster(seed, url, redis.url);
  }, 180_000);
  afterAll(async () => { await cluster?.destroy(); await redis?.destroy(); });

  /** `keng audit verify` on node a1's data directory (its key, its anchors) and the other nodes' anchor files. */
  const verify = (extra: Record<string, string> = {}) => {
    const dirs = ['a1', 'a2', 'a3'].map((n) => cluster.node(n).env.KENG_DATA_DIR!);
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KENG_')) env[k] = v;
    const anchors = dirs.slice(1).map((d) => path.join(d, AUDIT_CLUSTER_ANCHORS_FILE));
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/keng.js'), 'audit', 'verify', '--anchors', ...anchors], {
      cwd: ROOT, encoding: 'utf8', timeout: 60_000,
      env: { ...env, KENG_DATA_DIR: dirs[0], KENG_DATABASE_URL: url, KENG_REDIS_URL: redis.url, KENG_AUDIT_KEY: CLUSTER_AUDIT_KEY, ...extra },
    });
    return { status: r.status, out: r.stdout + r.stderr };
  };

  it('concurrent audited requests on three nodes and a rolling SIGTERM leave one intact chain', async () => {
    const nodes = await Promise.all(['a1', 'a2', 'a3'].map((n) => cluster.start(n)));
    // Failed logins are audited (auth.login_failed) in the chain's own transaction on PostgreSQL.
    const login = (base: string, user: string) => fetch(`${base}/api/v1/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: user, password: 'wrong-password-1' }),
    }).then((r) => r.status);
    // Five in all, spread over the nodes: the login guard is shared (PostgreSQL), six from one address
    // within a minute are refused on every node. And areas created by an admin (area.create).
    const statuses: number[] = [];
    for (const [j, i] of [0, 1, 2, 0, 1].entries()) statuses.push(await login(nodes[i]!.k.httpUrl, `nobody-${i}-${j}`));
    expect(statuses.filter((s) => s !== 401), `statuses ${statuses.join(',')}`).toEqual([]);
    await Promise.all(nodes.flatMap((n, i) => Array.from({ length: 20 }, (_, j) =>
      adminApi(n.k.httpUrl, 'POST', '/api/v1/areas', { code: `p${i}-${j}`, name: `Tỉnh ${i}-${j}`, level: 'province' }))));
    // Rolling SIGTERM: each node anchors at stop and leaves the chain as it was.
    for (const n of nodes) { n.k.proc.kill('SIGTERM'); expect(await n.k.exited).toMatchObject({ code: 0 }); }
    const pg = await statePostgres();
    const db = url.split('/').pop()!;
    const failed = await pg.query<{ n: number }>("SELECT COUNT(*)::int AS n FROM audit_log WHERE action = 'auth.login_failed'", [], db);
    expect(failed.rows[0]!.n).toBe(5);
    const areas = await pg.query<{ n: number }>("SELECT COUNT(*)::int AS n FROM audit_log WHERE action = 'area.create'", [], db);
    expect(areas.rows[0]!.n).toBe(60);
    const keyed = await pg.query<{ n: number }>("SELECT COUNT(*)::int AS n FROM audit_log WHERE action = 'audit.chain_keyed'", [], db);
    expect(keyed.rows[0]!.n).toBe(1);
    const r = verify();
    expect(r.status, r.out).toBe(0);
    // Each node anchored at start and at stop: six anchors, all of this one chain.
    expect(r.out).toMatch(/OK: 66 audit entries, chain intact \(last seq 66, keyed since seq 1, 6 anchors checked\)/);
    await pg.query("UPDATE audit_log SET ip = '10.9.9.9' WHERE seq = 20", [], db);
    const broken = verify();
    expect(broken.status).toBe(1);
    expect(broken.out).toMatch(/KENG_ERR_AUDIT_CHAIN_BROKEN.*20/);
  }, 300_000);
});

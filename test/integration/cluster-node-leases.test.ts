/**
 * Node leases (src/cluster/node-leases.ts) against a real PostgreSQL 15, with a
 * short lease: several "nodes" (NodeLeases, some with real PgSessionClaims, on
 * their own pools, one database); the broker replaced by a recorder of closed
 * connections. The two-process test is cluster-lease-kill.test.ts.
 */
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeLeases, PgSessionClaims, SESSION_MIGRATIONS, type ExpiredDevice, type NodeLeaseTuning } from '../../src/cluster/index.js';
import { createLogger, systemClock } from '../../src/core/index.js';
import { PG_STATE_SCOPES } from '../../src/migrations.js';
import { migrate, openPgDb, type Db } from '../../src/storage/sql/index.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';

const LEASE_MS = 800;
/** Timers out of the way: the test renews and sweeps by hand, so nothing happens between its steps. */
const MANUAL: Partial<NodeLeaseTuning> = { leaseMs: LEASE_MS, renewMs: 3_600_000, sweepMs: 3_600_000, queryTimeoutMs: 3_000 };

let pg: PostgresServer;
let seq = 0;
const dbs: Db[] = [];
const running: Array<{ stop(): Promise<void> }> = [];

beforeAll(async () => { pg = await startPostgres(); }, 120_000);
afterAll(async () => {
  for (const r of running) await r.stop().catch(() => undefined);
  for (const d of dbs) await d.close();
  await pg?.destroy();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Node {
  leases: NodeLeases;
  registry: Registry;
  expired: ExpiredDevice[];
  lostCalls: number;
  /** With sessions: */
  claims?: PgSessionClaims;
  conns: Map<string, number>;
  closed: Array<[string, number]>;
}

function open(url: string): Db {
  const db = openPgDb(url, { connectTimeoutMs: 1_000 });
  dbs.push(db);
  return db;
}

function node(url: string, nodeId: string, o: { sessions?: boolean; db?: Db; tuning?: Partial<NodeLeaseTuning> } = {}): Node {
  const db = o.db ?? open(url);
  const registry = new Registry();
  const n: Node = { registry, expired: [], lostCalls: 0, conns: new Map(), closed: [], leases: null as unknown as NodeLeases };
  if (o.sessions) {
    n.claims = new PgSessionClaims({
      db, nodeId, logger: createLogger('silent'), clock: systemClock, metrics: { registry }, tuning: { reconcileMs: 3_600_000 },
      close: (d, e) => {
        if (n.conns.get(d) !== e) return false;
        n.conns.delete(d);
        n.closed.push([d, e]);
        return true;
      },
      announce: () => undefined,
    });
    running.push(n.claims);
  }
  n.leases = new NodeLeases({
    db, nodeId, logger: createLogger('silent'), metrics: { registry }, tuning: { ...MANUAL, ...o.tuning },
    expired: (devices) => n.expired.push(...devices),
    lost: async () => { n.lostCalls++; return n.claims ? n.claims.dropUnclaimed() : 0; },
  });
  running.push(n.leases);
  return n;
}

async function connect(n: Node, device: string): Promise<number> {
  const e = await n.claims!.claim(device);
  n.conns.set(device, e);
  return e;
}

async function metric(n: Node, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await n.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? []).filter((v) => Object.entries(labels).every(([k, val]) => (v.labels as Record<string, string>)[k] === val))
    .reduce((a, v) => a + Number(v.value), 0);
}

/** A fresh database with every scope migrated, area p1 and `devices` (all online, last_seen 1000 + i, attributes kept). */
async function fresh(devices: string[]): Promise<{ url: string; name: string }> {
  const name = `leases${++seq}`;
  const url = await pg.createDatabase(name);
  const db = openPgDb(url);
  try {
    for (const { scope, migrations } of PG_STATE_SCOPES) await migrate(db, scope, migrations);
    await migrate(db, 'sessions', SESSION_MIGRATIONS);
  } finally {
    await db.close();
  }
  await pg.query("INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p1', 'P1', 'province', NULL, 0)", [], name);
  for (const [i, id] of devices.entries()) {
    await pg.query(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at)
      VALUES ($1, 'sensor', $1, 'p1', 'x', $1, 'x', 0)`, [id], name);
    await pg.query('INSERT INTO device_state (device_id, online, last_seen, attributes_json) VALUES ($1, 1, $2, $3)', [id, 1000 + i, `{"fw":"${id}"}`], name);
  }
  return { url, name };
}

/** A session row as a claim makes it (for nodes without PgSessionClaims). */
async function claimRow(db: string, device: string, nodeId: string): Promise<void> {
  await pg.query(`INSERT INTO device_sessions (device_id, node_id, epoch, connected_at) VALUES ($1, $2, nextval('device_session_epochs'), 0)
    ON CONFLICT (device_id) DO UPDATE SET node_id = EXCLUDED.node_id, epoch = nextval('device_session_epochs')`, [device, nodeId], db);
}

async function state(db: string): Promise<Record<string, { online: number; last_seen: number; attributes_json: string }>> {
  const r = await pg.query<{ device_id: string; online: number; last_seen: number; attributes_json: string }>(
    'SELECT device_id, online, last_seen::int AS last_seen, attributes_json FROM device_state ORDER BY device_id', [], db);
  return Object.fromEntries(r.rows.map((x) => [x.device_id, { online: x.online, last_seen: x.last_seen, attributes_json: x.attributes_json }]));
}

async function sessions(db: string): Promise<Record<string, string>> {
  const r = await pg.query<{ device_id: string; node_id: string }>('SELECT device_id, node_id FROM device_sessions ORDER BY device_id', [], db);
  return Object.fromEntries(r.rows.map((x) => [x.device_id, x.node_id]));
}

describe('node leases on PostgreSQL', () => {
  it('a node that stops renewing: another node\'s sweep writes exactly its devices offline and removes its rows; a device re-claimed elsewhere is untouched', async () => {
    const { url, name } = await fresh(['a1', 'a2', 'a3', 'b1', 'gw', 'sub1', 'sub2']);
    const a = node(url, 'A');
    const b = node(url, 'B');
    await Promise.all([a.leases.start(), b.leases.start()]);
    for (const d of ['a1', 'a2', 'a3', 'gw']) await claimRow(name, d, 'A');
    await claimRow(name, 'b1', 'B');
    // Behind gateway gw (held by A): sub1; sub2 has its own connection on B.
    await pg.query("INSERT INTO gateway_sub_devices (device_id, gateway_id, name, created_at) VALUES ('sub1', 'gw', 'sub1', 0), ('sub2', 'gw', 'sub2', 0)", [], name);
    await claimRow(name, 'sub2', 'B');
    expect(await b.leases.liveNodeIds()).toEqual(['A', 'B']);
    expect(await b.leases.sweepNow()).toEqual([]); // nobody dead: nothing happens

    // A "dies" (no more renewals); a3 reconnects to B meanwhile (a newer claim).
    await claimRow(name, 'a3', 'B');
    await sleep(LEASE_MS + 300);
    await b.leases.renewNow();
    expect(await b.leases.liveNodeIds()).toEqual(['B']);
    const before = await state(name);
    const swept = await b.leases.sweepNow();
    expect(swept.map((d) => d.deviceId).sort()).toEqual(['a1', 'a2', 'gw', 'sub1']);
    expect(swept.every((d) => d.nodeId === 'A' && d.wasOnline)).toBe(true);
    expect(b.expired.map((d) => d.deviceId).sort()).toEqual(['a1', 'a2', 'gw', 'sub1']);
    const after = await state(name);
    for (const id of ['a1', 'a2', 'gw', 'sub1']) expect(after[id]).toEqual({ ...before[id], online: 0 }); // last_seen, attributes kept
    for (const id of ['a3', 'b1', 'sub2']) expect(after[id]).toEqual(before[id]);
    expect(await sessions(name)).toEqual({ a3: 'B', b1: 'B', sub2: 'B' });
    const nodes = await b.leases.list();
    expect(nodes.map((n) => [n.nodeId, n.state, n.self, n.devices, n.sweptAt !== null])).toEqual([['A', 'expired', false, 0, true], ['B', 'alive', true, 3, false]]);
    expect(await metric(b, 'keng_cluster_devices_expired_total')).toBe(4);
    expect(await metric(b, 'keng_cluster_nodes_expired_total')).toBe(1);
    expect(await metric(b, 'keng_cluster_nodes_alive')).toBe(1);
    // Again: nothing more to do.
    expect(await b.leases.sweepNow()).toEqual([]);
    expect(await metric(b, 'keng_cluster_devices_expired_total')).toBe(4);
  }, 60_000);

  it('several sweepers at once remove each dead node\'s sessions once', async () => {
    const ids = Array.from({ length: 60 }, (_, i) => `d${i}`);
    const { url, name } = await fresh(ids);
    const dead = [node(url, 'X'), node(url, 'Y')];
    const sweepers = ['S1', 'S2', 'S3', 'S4'].map((id) => node(url, id));
    await Promise.all([...dead, ...sweepers].map((n) => n.leases.start()));
    for (const [i, id] of ids.entries()) await claimRow(name, id, i % 2 ? 'X' : 'Y');
    await sleep(LEASE_MS + 300);
    await Promise.all(sweepers.map((s) => s.leases.renewNow()));
    // Four sweeps at once (separate pools, so really concurrent), then four more.
    const results = await Promise.all(sweepers.map((s) => s.leases.sweepNow()));
    results.push(...await Promise.all(sweepers.map((s) => s.leases.sweepNow())));
    const all = results.flat().map((d) => d.deviceId).sort();
    expect(all).toEqual([...ids].sort()); // each device once, whichever sweeper took it
    let counted = 0;
    for (const s of sweepers) counted += await metric(s, 'keng_cluster_devices_expired_total');
    expect(counted).toBe(60);
    expect(Object.values(await state(name)).every((s) => s.online === 0)).toBe(true);
    expect(await sessions(name)).toEqual({});
    console.log(`sweepers at once: devices per sweeper ${sweepers.map((s) => s.expired.length).join('/')}`);
  }, 60_000);

  it('a node that lost its lease and was swept closes the connections whose rows are gone; one claimed after the sweep stays', async () => {
    const { url, name } = await fresh(['p1', 'p2', 'p3', 'p4']);
    const a = node(url, 'A', { sessions: true });
    const b = node(url, 'B');
    await a.leases.start();
    await a.claims!.start();
    await b.leases.start();
    const e1 = await connect(a, 'p1');
    const e2 = await connect(a, 'p2');
    // A pauses longer than its lease, but is not swept: renewing late loses nothing.
    await sleep(LEASE_MS + 300);
    await a.leases.renewNow();
    expect(a.lostCalls).toBe(0);
    expect(await sessions(name)).toEqual({ p1: 'A', p2: 'A' });
    // Paused again, and this time B sweeps it.
    await sleep(LEASE_MS + 300);
    await b.leases.renewNow();
    expect((await b.leases.sweepNow()).map((d) => d.deviceId).sort()).toEqual(['p1', 'p2']);
    await connect(a, 'p3'); // a connection accepted after the sweep: its row is there
    await a.leases.renewNow();
    expect(a.lostCalls).toBe(1);
    expect(a.closed.sort()).toEqual([['p1', e1], ['p2', e2]]);
    expect([...a.conns.keys()]).toEqual(['p3']);
    expect(await metric(a, 'keng_cluster_lease_lost_total')).toBe(1);
    expect(await metric(a, 'keng_cluster_sessions_taken_over_total', { path: 'lease' })).toBe(2);
    expect(await sessions(name)).toEqual({ p3: 'A' });
    // The closed connections end: their releases delete nothing; the devices reconnect and are claimed again.
    a.claims!.release('p1', e1);
    await connect(a, 'p1');
    await sleep(200);
    expect(await sessions(name)).toEqual({ p1: 'A', p3: 'A' });
    await a.leases.renewNow();
    expect(a.lostCalls).toBe(1);
    expect((await b.leases.list()).find((n) => n.nodeId === 'A')).toMatchObject({ state: 'alive', sweptAt: null });
  }, 60_000);

  it('a restarted node clears its dead predecessor\'s rows (at once, or after the old lease runs out unrenewed), never its own', async () => {
    const { url, name } = await fresh(['r1', 'r2', 'r3']);
    const old = node(url, 'R', { sessions: true });
    await old.leases.start();
    await old.claims!.start();
    await connect(old, 'r1');
    await connect(old, 'r2');
    // SIGKILL: nothing stops. A new process of R starts while the old lease still runs.
    const next = node(url, 'R', { sessions: true });
    await next.leases.start();
    await next.claims!.start();
    await connect(next, 'r3');
    expect(next.expired).toEqual([]);
    expect(await sessions(name)).toEqual({ r1: 'R', r2: 'R', r3: 'R' });
    await sleep(LEASE_MS + 300);
    await next.leases.renewNow();
    expect(next.expired.map((d) => d.deviceId).sort()).toEqual(['r1', 'r2']);
    expect(await sessions(name)).toEqual({ r3: 'R' });
    expect((await state(name)).r3!.online).toBe(1);
    expect(next.lostCalls).toBe(0);

    // A clean stop ends the lease at once; the next process clears what is left at its start.
    await claimRow(name, 'r1', 'R'); // a row a failed release left behind
    await next.leases.stop();
    const listed = await node(url, 'W').leases.list();
    expect(listed.find((n) => n.nodeId === 'R')).toMatchObject({ state: 'stopped' });
    const third = node(url, 'R');
    await third.leases.start();
    expect(third.expired.map((d) => d.deviceId).sort()).toEqual(['r1', 'r3']);
    expect(await sessions(name)).toEqual({});
  }, 60_000);

  it('two processes with one node id: each notices, counts and reports it; neither clears the other\'s rows', async () => {
    const { url, name } = await fresh(['c1']);
    const one = node(url, 'C');
    await one.leases.start();
    await claimRow(name, 'c1', 'C');
    const two = node(url, 'C');
    await two.leases.start();
    await one.leases.renewNow();
    await two.leases.renewNow();
    await sleep(LEASE_MS + 300);
    await one.leases.renewNow();
    await two.leases.renewNow();
    expect(await metric(one, 'keng_cluster_lease_conflicts_total')).toBeGreaterThanOrEqual(1);
    expect(await metric(two, 'keng_cluster_lease_conflicts_total')).toBeGreaterThanOrEqual(1);
    expect(two.leases.report().detail).toMatchObject({ degraded: true });
    expect(two.leases.report().detail.conflict).toContain('KENG_NODE_ID');
    expect(two.expired).toEqual([]);
    expect(await sessions(name)).toEqual({ c1: 'C' });
  }, 60_000);

  it('renewals failing (database cut): counted, reported without failing readiness, no crash; renewed again afterwards', async () => {
    const { url } = await fresh([]);
    const db = open(url);
    let cut = false;
    const flaky: Db = {
      dialect: db.dialect, kysely: db.kysely, ping: (ms) => db.ping(ms), close: async () => undefined,
      write: (fn) => (cut ? Promise.reject(new Error('connection terminated')) : db.write(fn)), snapshot: (fn) => db.snapshot(fn),
    };
    const n = node(url, 'F', { db: flaky, tuning: { renewMs: 50, sweepMs: 50 } });
    await n.leases.start();
    cut = true;
    await sleep(400);
    const r = n.leases.report();
    expect(r.ok).toBe(true);
    expect(r.detail).toMatchObject({ degraded: true, lastError: 'connection terminated' });
    expect(r.detail.consecutiveFailures as number).toBeGreaterThanOrEqual(2);
    expect(await metric(n, 'keng_cluster_lease_renewals_total', { result: 'failed' })).toBeGreaterThanOrEqual(2);
    expect(await metric(n, 'keng_cluster_lease_sweep_errors_total')).toBeGreaterThanOrEqual(2);
    cut = false;
    await sleep(300);
    expect(n.leases.report().detail).toMatchObject({ consecutiveFailures: 0 });
    expect(n.leases.report().detail.degraded).toBeUndefined();
    expect(await n.leases.liveNodeIds()).toEqual(['F']);
  }, 60_000);
});

/**
 * The self-fence of a cluster node (src/cluster/lease-fence.ts, docs/cluster.md "Node leases") on a real
 * PostgreSQL 15: nodes made of the real cluster parts (NodeLeases with its fence, PgSessionClaims, RpcService with
 * ownership, a state window), each on its own pool, wired as src/app.ts wires them; the broker is a recorder of
 * connections and publishes. Node A reaches PostgreSQL through a blackhole proxy (tools/blackhole.ts), so a
 * partition is real: its queries hang, nothing is refused.
 *
 * Short leases (3 s, 1 s margin) keep the test quick; the margins asserted are generous for a loaded 2-core machine.
 */
import { performance } from 'node:perf_hooks';
import { sql } from 'kysely';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NodeLeases, PgSessionClaims, SESSION_MIGRATIONS, type NodeLeaseTuning } from '../../src/cluster/index.js';
import { EventBus, createLogger, systemClock } from '../../src/core/index.js';
import { RpcService } from '../../src/rpc/index.js';
import { migrate, openPgDb, type Db } from '../../src/storage/sql/index.js';
import { StateWindow } from '../../src/storage/state/index.js';
import { startBlackhole, type Blackhole } from '../../tools/blackhole.js';
import { untilTrue } from '../helpers/rpc-window.js';
import { freshStateDatabase, stopStatePostgres } from '../helpers/state-dialects.js';

afterAll(stopStatePostgres);

const logger = createLogger(process.env.KENG_TEST_LOG_LEVEL ?? 'silent');
const TUNING: Partial<NodeLeaseTuning> = { leaseMs: 3_000, fenceMarginMs: 1_000, renewMs: 200, sweepMs: 200, queryTimeoutMs: 600 };

interface Node {
  id: string; db: Db<unknown>; window: StateWindow; bus: EventBus; registry: Registry;
  leases: NodeLeases; claims: PgSessionClaims; rpc: RpcService;
  /** Device → claim epoch of its connection here. */
  conns: Map<string, number>;
  published: Array<{ deviceId: string; requestId: string; at: number }>;
  fenceEvents: Array<{ fenced: boolean; wall: number }>;
  /** Devices this node's sweeps wrote offline, with when. */
  swept: Array<{ deviceId: string; wall: number }>;
  stops: Array<() => Promise<void>>;
}

let url: string;
let admin: Db<unknown>;
let nodes: Node[] = [];
let holes: Blackhole[] = [];

beforeEach(async () => {
  url = await freshStateDatabase();
  admin = openPgDb(url);
  await migrate(admin, 'sessions', SESSION_MIGRATIONS);
});
afterEach(async () => {
  for (const h of holes) h.heal();
  for (const n of nodes) for (const s of n.stops.reverse()) await s().catch(() => undefined);
  for (const h of holes) await h.close();
  nodes = [];
  holes = [];
  await admin.close();
});

/** The database URL through a blackhole proxy. */
async function holeTo(dbUrl: string): Promise<{ hole: Blackhole; url: string }> {
  const u = new URL(dbUrl);
  const hole = await startBlackhole({ host: u.hostname, port: Number(u.port) });
  holes.push(hole);
  u.hostname = hole.host;
  u.port = String(hole.port);
  return { hole, url: u.toString() };
}

async function startNode(id: string, dbUrl: string,
  o: { readyDelayMs?: number; tuning?: Partial<NodeLeaseTuning>; monotonic?: () => number; rpcUrl?: string } = {}): Promise<Node> {
  const db = openPgDb(dbUrl, { connectTimeoutMs: 1_000 });
  // The commands' state window on a pool of its own: its connection, open before a cut, stays open across it (a commit
  // started during the cut hangs until the heal, as on a real network), rather than waiting behind hung lease queries.
  const rpcDb = openPgDb(o.rpcUrl ?? dbUrl, { connectTimeoutMs: 1_000 });
  const registry = new Registry();
  const bus = new EventBus();
  const window = new StateWindow({ db: rpcDb, logger });
  const n: Node = {
    id, db, window, bus, registry, conns: new Map(), published: [], fenceEvents: [], swept: [], stops: [],
    leases: undefined as unknown as NodeLeases, claims: undefined as unknown as PgSessionClaims, rpc: undefined as unknown as RpcService,
  };
  n.stops.push(() => db.close(), () => rpcDb.close());
  // The broker's side: closing a claimed connection ends it (its release, then `status` offline), as device-hooks.ts does.
  const close = (deviceId: string, epoch: number): boolean => {
    if (n.conns.get(deviceId) !== epoch) return false;
    n.conns.delete(deviceId);
    n.claims.release(deviceId, epoch);
    bus.emit('status', { deviceId, area: 'p', online: false, at: Date.now() });
    return true;
  };
  n.claims = new PgSessionClaims({
    db, nodeId: id, logger, clock: systemClock, metrics: { registry }, close, announce: () => undefined,
    tuning: { reconcileMs: 3_600_000, queryTimeoutMs: 600, claimTimeoutMs: 600 },
    fence: { valid: () => n.leases.fence.valid() },
  });
  n.leases = new NodeLeases({
    db, nodeId: id, logger, metrics: { registry }, tuning: { ...TUNING, ...o.tuning }, ...(o.monotonic ? { monotonic: o.monotonic } : {}),
    expired: (devices) => { for (const d of devices) n.swept.push({ deviceId: d.deviceId, wall: Date.now() }); },
    lost: () => n.claims.dropUnclaimed(),
  });
  n.rpc = new RpcService({
    db: rpcDb, window, bus, logger, readyDelayMs: o.readyDelayMs ?? 50, answerGraceMs: 1_000, sweepIntervalMs: 100,
    broker: {
      isConnected: (d) => n.conns.has(d),
      publish: async (topic) => {
        const [, , deviceId, , , requestId] = topic.split('/');
        n.published.push({ deviceId: deviceId!, requestId: requestId!, at: Date.now() });
      },
    },
    ownership: { nodeId: id, pickupMs: 200, adoptMs: 300, canPublish: () => n.leases.fence.valid() },
  });
  // As src/app.ts: fenced, the node closes every device connection it holds.
  const off = n.leases.fence.onChange((fenced) => {
    n.fenceEvents.push({ fenced, wall: Date.now() });
    if (fenced) n.claims.dropAll();
  });
  await window.start();
  n.stops.push(() => window.stop());
  await n.leases.start();
  n.stops.push(() => n.leases.stop());
  await n.claims.start();
  n.stops.push(() => n.claims.stop());
  await n.rpc.start();
  n.stops.push(async () => { off(); await n.rpc.stop(); });
  nodes.push(n);
  return n;
}

/** The device's CONNECT on node `n`: its session claim (throws when refused), then `status` online. */
async function connect(n: Node, deviceId: string): Promise<void> {
  const epoch = await n.claims.claim(deviceId);
  n.conns.set(deviceId, epoch);
  n.bus.emit('status', { deviceId, area: 'p', online: true, at: Date.now() });
}

async function row(id: string): Promise<{ state: string; owner_node: string }> {
  return (await sql<{ state: string; owner_node: string }>`SELECT state, owner_node FROM rpc_requests WHERE id = ${id}`.execute(admin.kysely)).rows[0]!;
}

async function leaseUntil(nodeId: string): Promise<number> {
  return Number((await sql<{ l: string }>`SELECT lease_until AS l FROM cluster_nodes WHERE node_id = ${nodeId}`.execute(admin.kysely)).rows[0]!.l);
}

async function metric(n: Node, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await n.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? []).filter((v) => Object.entries(labels).every(([k, val]) => (v.labels as Record<string, string>)[k] === val))
    .reduce((a, v) => a + Number(v.value), 0);
}

const held = (n: Node, id: string): boolean => (n.rpc as unknown as { open: { get(id: string): unknown } }).open.get(id) !== undefined;
const count = (n: Node, requestId: string): number => n.published.filter((p) => p.requestId === requestId).length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const until = (what: string, f: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> => untilTrue(what, f, ms);
const soon = (): number => Date.now() + 120_000;

describe('self-fence of a node whose lease was not renewed in time (PostgreSQL)', () => {
  it('cut from PostgreSQL: fenced before its lease runs out for the others, closes and refuses devices, publishes nothing; the node that takes the device over delivers each command once; ready again after the heal', async () => {
    // Two proxies, so the test chooses which connections heal first (the lease's, then the commands').
    const via = await holeTo(url);
    const viaRpc = await holeTo(url);
    // Warm-ups end only when the test sends a device message (readyDelayMs far away): each publish is the test's move.
    const a = await startNode('a', via.url, { readyDelayMs: 60_000, rpcUrl: viaRpc.url });
    const b = await startNode('b', url, { readyDelayMs: 60_000 });
    await connect(a, 'd1');
    const r1 = await b.rpc.send('d1', 'speaker.setVolume', { volume: 10 }, { expiresAt: soon() });
    await until('A picks up the command made on B for its device', () => held(a, r1.requestId));
    expect(await row(r1.requestId)).toEqual({ state: 'queued', owner_node: 'a' });
    expect(a.leases.report().ok).toBe(true);

    const cutAt = performance.now();
    via.hole.pause();
    viaRpc.hole.pause();
    // Just after the cut d1 is ready on A: A moves r1 to `sent` in its state window, whose commit now hangs.
    a.bus.emit('device.event', { deviceId: 'd1', payload: {}, at: Date.now() });
    await until('A fences itself', () => a.fenceEvents.some((e) => e.fenced));
    const fencedAfterMs = performance.now() - cutAt;
    const fenceWall = a.fenceEvents[0]!.wall;
    // Closed its device connection at once, refuses new ones without asking the database, and is not ready.
    expect(a.conns.size).toBe(0);
    expect(a.claims.refusing()).toBe(true);
    await expect(connect(a, 'd2')).rejects.toThrow(/fenced/);
    const report = a.leases.report();
    expect(report.ok).toBe(false);
    expect(String(report.detail.fenced)).toMatch(/not renewed in time/);
    expect(await metric(a, 'keng_cluster_lease_fences_total')).toBe(1);
    expect(await metric(a, 'keng_cluster_lease_fenced')).toBe(1);
    expect(await metric(a, 'keng_cluster_sessions_taken_over_total', { path: 'fence' })).toBe(1);

    // A command made on B now, while PostgreSQL still has A's session row for d1 (or not, if already swept).
    const r2 = await b.rpc.send('d1', 'speaker.setVolume', { volume: 20 }, { expiresAt: soon() });
    // B sweeps A once A's lease ran out on PostgreSQL's clock: after A fenced itself.
    await until('B sweeps A\'s sessions', () => b.swept.some((s) => s.deviceId === 'd1'));
    const aLeaseUntil = await leaseUntil('a');
    expect(fenceWall).toBeLessThan(aLeaseUntil); // one host: PostgreSQL's clock and Date.now() are one clock
    expect(fenceWall).toBeLessThan(b.swept[0]!.wall);
    console.log(`fenced ${Math.round(fencedAfterMs)} ms after the cut, ${aLeaseUntil - fenceWall} ms before its lease ran out; swept ${b.swept[0]!.wall - fenceWall} ms after the fence`);

    // The device reconnects (through the balancer) to B: B takes its open commands (still queued there).
    await connect(b, 'd1');
    await until('B owns both commands', async () => (await row(r1.requestId)).owner_node === 'b' && (await row(r2.requestId)).owner_node === 'b');

    // The partition ends, for A's lease first: A renews and unfences (ready again). Then A's hung move of r1 to `sent`
    // reaches PostgreSQL, from an unfenced node: r1 is B's now, so the move misses and A does not publish it (it would
    // have, had the move only compared states), and B's own move still applies.
    via.hole.heal();
    await until('A unfences', () => a.fenceEvents.some((e) => !e.fenced));
    expect(a.leases.report().ok).toBe(true);
    expect(a.claims.refusing()).toBe(false);
    viaRpc.hole.heal();
    await a.rpc.settled().catch(() => undefined);
    expect(await row(r1.requestId)).toEqual({ state: 'queued', owner_node: 'b' });
    await until('A forgets the command B took', () => !held(a, r1.requestId) && !held(a, r2.requestId));
    b.bus.emit('device.event', { deviceId: 'd1', payload: {}, at: Date.now() }); // d1 is ready on B
    await until('B publishes both commands', () => count(b, r1.requestId) === 1 && count(b, r2.requestId) === 1);
    await connect(a, 'd3'); // devices are accepted again
    await sleep(1_500); // pickups, adoptions and checks run a few rounds on both
    expect(a.published).toEqual([]);
    expect(b.published.map((p) => p.requestId).sort()).toEqual([r1.requestId, r2.requestId].sort());
    expect(await row(r1.requestId)).toEqual({ state: 'sent', owner_node: 'b' });
    expect(await row(r2.requestId)).toEqual({ state: 'sent', owner_node: 'b' });
    expect(a.fenceEvents.map((e) => e.fenced)).toEqual([true, false]);
  }, 90_000);

  it('paused past its deadline with PostgreSQL reachable: the first check fences it; a command committed then is not published, stays queued, and nothing is adopted until it renews', async () => {
    let skew = 0;
    // Timers far apart: only the test renews A, so it stays fenced until then.
    const a = await startNode('a', url, { tuning: { renewMs: 3_600_000, sweepMs: 3_600_000 }, monotonic: () => performance.now() + skew });
    await connect(a, 'p1');
    await until('p1 ready on A', () => a.rpc.isReady('p1'));
    skew = 60_000; // the process "resumes" a minute later: nothing has run yet
    const sending = a.rpc.send('p1', 'speaker.setVolume', { volume: 30 }, { expiresAt: soon() }); // p1 looks ready: stored as sent
    // An orphan, made once A is past its deadline: a dead node's open command for p1 (whose session A holds), which A
    // would adopt and send.
    await sql`INSERT INTO cluster_nodes (node_id, instance, started_at, renewed_at, lease_until) VALUES ('z', 'iz', 1, 0, 1)`.execute(admin.kysely);
    await sql`INSERT INTO rpc_requests (id, device_id, method, params_json, expires_at, state, created_at, owner_node, owner_inc, handed)
      VALUES ('r_orphan', 'p1', 'speaker.setVolume', '{}', ${soon()}, 'queued', ${Date.now()}, 'z', 1, true)`.execute(admin.kysely);
    const r = await sending;
    expect(r.state).toBe('sent');
    await a.rpc.settled();
    await until('the withheld publish is queued again', async () => (await row(r.requestId)).state === 'queued');
    expect(a.fenceEvents.map((e) => e.fenced)).toEqual([true]);
    expect(a.conns.size).toBe(0); // p1 closed by the fence
    await sleep(1_000); // three adoption rounds
    expect(await row('r_orphan')).toEqual({ state: 'queued', owner_node: 'z' });
    expect(a.published).toEqual([]);

    await a.leases.renewNow();
    expect(a.fenceEvents.map((e) => e.fenced)).toEqual([true, false]);
    await connect(a, 'p1');
    await until('A sends both once p1 is back', () => count(a, r.requestId) === 1 && count(a, 'r_orphan') === 1);
    await sleep(500);
    expect(a.published.map((p) => p.requestId).sort()).toEqual([r.requestId, 'r_orphan'].sort());
  }, 60_000);
});

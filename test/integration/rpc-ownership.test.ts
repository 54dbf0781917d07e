/**
 * RPC command ownership across cluster nodes (src/rpc/ownership.ts, docs/cluster.md "RPC commands across nodes"):
 * two or three RpcService instances as nodes on ONE real PostgreSQL 15 database (each its own pool, state window,
 * event bus and recording broker), with the cluster's `device_sessions` and `cluster_nodes` rows written here as the
 * session claims and node leases would. A command is published only by the node holding its device's session, each
 * transition happens once whatever node tries, and a dead node's commands are adopted once.
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RpcEvents } from '../../src/rpc/index.js';
import type { Db } from '../../src/storage/sql/index.js';
import { PgNodesRig, connectOn, disconnectFrom, stopRpcNode, type RpcNode, type RpcNodeOptions } from '../helpers/pg-nodes.js';
import { untilTrue } from '../helpers/rpc-window.js';
import { stopStatePostgres } from '../helpers/state-dialects.js';

afterAll(stopStatePostgres);

interface Node extends RpcNode {
  events: { response: Array<RpcEvents['response']>; expired: Array<RpcEvents['expired']> };
}

let rig: PgNodesRig;
let admin: Db<unknown>;

beforeEach(async () => {
  rig = new PgNodesRig();
  await rig.open();
  admin = rig.admin;
});
afterEach(() => rig.close());

/** A live lease for `id` (10 s on PostgreSQL's clock); `started` is the process's lease start. */
const lease = (id: string, started = 1): Promise<void> => rig.lease(id, { started, ms: 10_000 });
const expire = (id: string): Promise<void> => rig.expire(id);
const session = (deviceId: string, node: string): Promise<void> => rig.session(deviceId, node);
const sessions = (rows: Array<[string, string]>): Promise<void> => rig.sessions(rows);
const stopNode = (n: Node): Promise<void> => stopRpcNode(n);
const connect = connectOn;
const disconnect = disconnectFrom;

function startNode(id: string, connected: readonly string[] = [], o: Omit<RpcNodeOptions, 'connected' | 'paramsHooks' | 'readyDelayMs'> = {}): Promise<Node> {
  return rig.startRpcNode<Node>(id, { ...o, connected }, (base) => {
    const events: Node['events'] = { response: [], expired: [] };
    base.rpc.on('response', (e) => events.response.push(e));
    base.rpc.on('expired', (e) => events.expired.push(e));
    return { node: Object.assign(base, { events }), start: async () => undefined, stop: async () => undefined };
  });
}

const until = (what: string, f: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> => untilTrue(what, f, ms);

async function tbIds(deviceId: string): Promise<Array<{ id: string; tb_id: number | null }>> {
  return (await sql<{ id: string; tb_id: number | null }>`SELECT id, tb_id FROM rpc_requests WHERE device_id = ${deviceId} ORDER BY seq`.execute(admin.kysely)).rows;
}

async function row(id: string): Promise<{ state: string; owner_node: string; handed: boolean }> {
  return (await sql<{ state: string; owner_node: string; handed: boolean }>`SELECT state, owner_node, handed FROM rpc_requests WHERE id = ${id}`
    .execute(admin.kysely)).rows[0]!;
}

const held = (n: Node, id: string): boolean => (n.rpc as unknown as { open: { get(id: string): unknown } }).open.get(id) !== undefined;
const publishedTo = (n: Node, requestId: string): number => n.published.filter((p) => p.requestId === requestId).length;
const soon = (): number => Date.now() + 60_000;

describe('RPC commands across nodes (PostgreSQL)', () => {
  it('(a) a command created on A for a device held by B is published by B, never by A; B\'s answer makes it answered once', async () => {
    await lease('a'); await lease('b');
    await session('loa-1', 'b');
    const a = await startNode('a');
    const b = await startNode('b', ['loa-1']);
    const r = await a.rpc.send('loa-1', 'speaker.setVolume', { volume: 40 }, { expiresAt: soon() });
    expect(r.state).toBe('queued');
    expect(await row(r.requestId)).toMatchObject({ state: 'queued', owner_node: 'b', handed: false });
    expect(held(a, r.requestId)).toBe(false); // A keeps only what it owns
    const t0 = Date.now();
    await until('B publishes it', () => publishedTo(b, r.requestId) === 1);
    const pickupMs = Date.now() - t0;
    expect(pickupMs).toBeLessThan(5_000);
    await until('sent in the database', async () => (await row(r.requestId)).state === 'sent');
    expect(await row(r.requestId)).toMatchObject({ owner_node: 'b', handed: true });
    // B answers (its device did); a duplicate of the answer arrives at A later (e.g. after a reconnect there).
    b.bus.emit('rpc.response', { deviceId: 'loa-1', requestId: r.requestId, payload: { status: 'ok' }, at: Date.now() });
    await b.rpc.settled();
    expect(await row(r.requestId)).toMatchObject({ state: 'answered' });
    a.bus.emit('rpc.response', { deviceId: 'loa-1', requestId: r.requestId, payload: { status: 'ok' }, at: Date.now() });
    await until('A matched it by a read', () => a.events.response.length === 1);
    await a.rpc.settled();
    expect(b.events.response.map((e) => e.duplicate)).toEqual([false]);
    expect(a.events.response.map((e) => e.duplicate)).toEqual([true]);
    await new Promise((res) => setTimeout(res, 700)); // a few pickup and adoption rounds
    expect(publishedTo(a, r.requestId)).toBe(0);
    expect(publishedTo(b, r.requestId)).toBe(1);
    console.log(`(a) created on A, published by B ${pickupMs} ms later`);
  });

  it('(a4) a device deleted through another node: its commands leave the database, as the embedded store\'s cascade removes them', async () => {
    await lease('a'); await lease('b');
    await session('loa-1', 'b');
    const a = await startNode('a');
    const b = await startNode('b'); // connected there but warming up: the command stays queued, held by B
    const r = await a.rpc.send('loa-1', 'speaker.setVolume', { volume: 40 }, { expiresAt: soon() });
    await until('B holds it', () => held(b, r.requestId));
    a.bus.emit('device.changed', { deviceId: 'loa-1', change: 'deleted' });
    await until('its rows deleted', async () => (await sql<{ n: number }>`SELECT COUNT(*)::int AS n FROM rpc_requests WHERE device_id = 'loa-1'`
      .execute(admin.kysely)).rows[0]!.n === 0);
  });

  it('(a2) an answer reaching a node that does not hold the command (a handoff race) is recorded once, by a read and a CAS', async () => {
    await lease('a'); await lease('b');
    await session('loa-1', 'b');
    const a = await startNode('a');
    const b = await startNode('b', ['loa-1']);
    const r = await b.rpc.send('loa-1', 'x', {}, { expiresAt: soon() });
    expect(r.state).toBe('sent');
    a.bus.emit('rpc.response', { deviceId: 'loa-1', requestId: r.requestId, payload: { status: 'ok' }, at: Date.now() });
    await until('A recorded it', () => a.events.response.length === 1);
    await a.rpc.settled();
    expect(await row(r.requestId)).toMatchObject({ state: 'answered' });
    expect(a.events.response[0]!.duplicate).toBe(false);
    // B still holds it as sent; the device reconnects to B: B's claim finds it answered and does not re-send it.
    expect(held(b, r.requestId)).toBe(true);
    disconnect(b, 'loa-1');
    await session('loa-1', 'b');
    connect(b, 'loa-1');
    await until('B forgets it', () => !held(b, r.requestId));
    await new Promise((res) => setTimeout(res, 300)); // past the warm-up
    expect(publishedTo(b, r.requestId)).toBe(1);
    expect(await row(r.requestId)).toMatchObject({ state: 'answered' });
  });

  it('(a3) a gateway\'s sub-device belongs to the node holding its gateway\'s session', async () => {
    await lease('a'); await lease('b');
    await session('gw-1', 'b');
    await sql`INSERT INTO gateway_sub_devices (device_id, gateway_id, name, created_at) VALUES ('sub-1', 'gw-1', 'Sub 1', 0)`.execute(admin.kysely);
    const a = await startNode('a');
    const b = await startNode('b', ['sub-1']); // reached through its gateway's connection on B
    const r = await a.rpc.send('sub-1', 'x', {}, { expiresAt: soon() });
    expect(await row(r.requestId)).toMatchObject({ owner_node: 'b', handed: false });
    await until('B publishes it', () => publishedTo(b, r.requestId) === 1);
    expect(publishedTo(a, r.requestId)).toBe(0);
  });

  it('(b) the device reconnects to A: A claims and re-sends its open command, B forgets it', async () => {
    await lease('a'); await lease('b');
    await session('loa-1', 'b');
    const a = await startNode('a');
    const b = await startNode('b', ['loa-1']);
    const r = await a.rpc.send('loa-1', 'broadcast.play', { broadcastId: 'b1' }, { expiresAt: soon() });
    await until('B publishes it', () => publishedTo(b, r.requestId) === 1);
    await until('B holds it', () => held(b, r.requestId));
    // The device's connection to B dies; it connects to A, whose session claim wins.
    disconnect(b, 'loa-1');
    await session('loa-1', 'a');
    const t0 = Date.now();
    connect(a, 'loa-1');
    await until('A re-sends it', () => publishedTo(a, r.requestId) === 1);
    const resendMs = Date.now() - t0;
    expect(await row(r.requestId)).toMatchObject({ state: 'sent', owner_node: 'a', handed: true });
    await until('B forgets it', () => !held(b, r.requestId));
    expect(held(a, r.requestId)).toBe(true);
    expect(publishedTo(b, r.requestId)).toBe(1);
    // A new command created on B now goes to A.
    const r2 = await b.rpc.send('loa-1', 'x', {}, { expiresAt: soon() });
    await until('A publishes the new one', () => publishedTo(a, r2.requestId) === 1);
    expect(publishedTo(b, r2.requestId)).toBe(0);
    a.bus.emit('rpc.response', { deviceId: 'loa-1', requestId: r.requestId, payload: { status: 'accepted' }, at: Date.now() });
    await a.rpc.settled();
    expect(await row(r.requestId)).toMatchObject({ state: 'answered', owner_node: 'a' });
    expect([...a.events.response, ...b.events.response]).toHaveLength(1);
    console.log(`(b) reconnect to A: re-sent by A ${resendMs} ms after its status online (readyDelayMs 50)`);
  });

  it('(c) node B dies: A and C adopt its open commands once (re-sent to the devices connected to them, due ones expired once)', async () => {
    await lease('a'); await lease('b'); await lease('c');
    await sessions([['loa-1', 'b'], ['loa-2', 'b'], ['loa-3', 'b'], ['loa-4', 'b']]);
    // B's own expiry sweep is off: on a loaded machine it could expire c2 before B dies.
    const b = await startNode('b', ['loa-1', 'loa-2', 'loa-3', 'loa-4'], { answerGraceMs: 300, sweepMs: 600_000 });
    const c1 = await b.rpc.send('loa-1', 'x', { n: 1 }, { expiresAt: soon() });
    const c3 = await b.rpc.send('loa-3', 'x', { n: 3 }, { expiresAt: Date.now() + 1_500 }); // sent, due after expiry + grace
    const c4 = await b.rpc.send('loa-4', 'x', { n: 4 }, { expiresAt: soon() });
    b.connected.delete('loa-2');
    const c2 = await b.rpc.send('loa-2', 'x', { n: 2 }, { expiresAt: Date.now() + 1_500 }); // queued, due at expiry
    expect([c1.state, c2.state, c3.state, c4.state]).toEqual(['sent', 'queued', 'sent', 'sent']);
    // And 300 queued for devices that are offline everywhere, due in a second: adopted by A and C at once.
    const offline = Array.from({ length: 300 }, (_, i) => `off-${i}`);
    const due = Date.now() + 2_000;
    const bulk = (await b.rpc.sendMany(offline, 'x', {}, { expiresAt: due })).map((r) => r.requestId);
    // B dies: nothing of it runs any more, its lease runs out; its devices lose their connections.
    await stopNode(b);
    await expire('b');
    await sql`DELETE FROM device_sessions WHERE node_id = 'b'`.execute(admin.kysely); // the lease sweep
    const a = await startNode('a', [], { answerGraceMs: 300 });
    const c = await startNode('c', [], { answerGraceMs: 300 });
    // loa-1 reconnects to A (claim on connect); loa-4 is on A already without a connect event (only adoption finds it).
    await session('loa-1', 'a');
    connect(a, 'loa-1');
    await session('loa-4', 'a');
    a.connected.add('loa-4');
    await until('A re-sends c1 and c4', () => publishedTo(a, c1.requestId) === 1 && publishedTo(a, c4.requestId) === 1);
    await until('c2 and c3 expired', async () => (await row(c2.requestId)).state === 'expired' && (await row(c3.requestId)).state === 'expired');
    // Both adopt at the same moment once the 300 are due (besides their timers): SKIP LOCKED splits them.
    await until('due', () => Date.now() > due + 50);
    const own = (n: Node) => (n.rpc as unknown as { own: { adopt(): Promise<void> } }).own;
    await Promise.all([own(a).adopt(), own(c).adopt(), own(a).adopt(), own(c).adopt()]);
    await until('the 300 expired', async () => (await sql<{ n: number }>`SELECT COUNT(*)::int AS n FROM rpc_requests
      WHERE id = ANY(${bulk}::text[]) AND state = 'expired'`.execute(admin.kysely)).rows[0]!.n === 300);
    await new Promise((res) => setTimeout(res, 900)); // more adoption rounds on both
    const expired = [...a.events.expired, ...c.events.expired].map((e) => e.request.id).sort();
    expect(expired).toEqual([c2.requestId, c3.requestId, ...bulk].sort()); // each once, by one node
    for (const id of [c1.requestId, c4.requestId]) {
      expect(publishedTo(a, id)).toBe(1);
      expect(publishedTo(c, id)).toBe(0);
      expect(await row(id)).toMatchObject({ state: 'sent', owner_node: 'a' });
    }
    expect(c.published.length + a.published.filter((p) => p.requestId === c2.requestId || p.requestId === c3.requestId).length).toBe(0);
    console.log(`(c) expired by A: ${a.events.expired.length}, by C: ${c.events.expired.length}`);
  });

  it('(d) concurrent sendMany from both nodes to 200 devices held half by each: each command published once, by its owner', async () => {
    await lease('a'); await lease('b');
    const devs = Array.from({ length: 200 }, (_, i) => `loa-${String(i).padStart(3, '0')}`);
    const onA = devs.filter((_, i) => i % 2 === 0);
    const onB = devs.filter((_, i) => i % 2 === 1);
    await sessions([...onA.map((d): [string, string] => [d, 'a']), ...onB.map((d): [string, string] => [d, 'b'])]);
    const a = await startNode('a', onA);
    const b = await startNode('b', onB);
    const t0 = Date.now();
    const [ra, rb] = await Promise.all([
      a.rpc.sendMany(devs, 'broadcast.play', { broadcastId: 'from-a' }, { expiresAt: soon() }),
      b.rpc.sendMany(devs, 'broadcast.play', { broadcastId: 'from-b' }, { expiresAt: soon() }),
    ]);
    const all = [...ra, ...rb].map((r) => r.requestId);
    expect(all).toHaveLength(400);
    // Each creator kept only the commands it owns (those of its own half).
    expect(ra.filter((r) => held(a, r.requestId)).length).toBe(100);
    expect(ra.every((r, i) => held(a, r.requestId) === onA.includes(devs[i]!))).toBe(true);
    expect(rb.every((r, i) => held(b, r.requestId) === onB.includes(devs[i]!))).toBe(true);
    const total = (): number => a.published.length + b.published.length;
    await until('all 400 published', () => total() >= 400, 15_000);
    const allMs = Date.now() - t0;
    await new Promise((res) => setTimeout(res, 700));
    expect(total()).toBe(400);
    const seen = new Set([...a.published, ...b.published].map((p) => p.requestId));
    expect(seen.size).toBe(400);
    expect(a.published.every((p) => onA.includes(p.deviceId))).toBe(true);
    expect(b.published.every((p) => onB.includes(p.deviceId))).toBe(true);
    const owners = (await sql<{ owner_node: string; state: string; device_id: string; n: number }>`SELECT owner_node, state, device_id, COUNT(*)::int AS n
      FROM rpc_requests GROUP BY owner_node, state, device_id`.execute(admin.kysely)).rows;
    expect(owners.every((o) => o.state === 'sent' && o.n === 2 && o.owner_node === (onA.includes(o.device_id) ? 'a' : 'b'))).toBe(true);
    console.log(`(d) 400 commands created on both nodes, all published by their owners within ${allMs} ms`);
  });

  it('(e) ThingsBoard integer ids: a new session holder starts above the last recorded id; the old holder allocating late reuses none, no window fails', async () => {
    await lease('a'); await lease('b');
    await session('loa-1', 'b');
    const a = await startNode('a', [], { token: true });
    const b = await startNode('b', ['loa-1'], { token: true });
    const first = [];
    for (let i = 0; i < 3; i++) first.push((await b.rpc.send('loa-1', 'x', { i }, { expiresAt: soon() })).requestId);
    expect(b.published.map((p) => p.requestId)).toEqual(['1', '2', '3']);
    // The device moves to A; B has not noticed yet (its connection is still there).
    await session('loa-1', 'a');
    connect(a, 'loa-1');
    await until('A re-sends the three', () => a.published.length === 3);
    expect(a.published.map((p) => p.requestId)).toEqual(['1', '2', '3']); // their ids travel with them
    const onA = await a.rpc.send('loa-1', 'x', { on: 'a' }, { expiresAt: soon() });
    const late = await b.rpc.send('loa-1', 'x', { on: 'b' }, { expiresAt: soon() }); // B allocates after A's claim
    await until('A picks up B\'s late command', () => a.published.some((p) => p.requestId === '4'));
    const ids = await tbIds('loa-1');
    const byId = new Map(ids.map((r) => [r.id, r.tb_id]));
    expect(byId.get(onA.requestId)).toBe(1004);
    expect(byId.get(late.requestId)).toBe(4);
    expect(new Set(ids.map((r) => r.tb_id)).size).toBe(ids.length); // no id given twice
    const last = (await sql<{ last_id: number }>`SELECT last_id FROM rpc_tb_ids WHERE device_id = 'loa-1'`.execute(admin.kysely)).rows[0]!.last_id;
    expect(last).toBe(1004); // B's late window did not move it back
    expect(a.window.stats.failed + b.window.stats.failed).toBe(0);
    // The device answers "1004" on A: A's command.
    a.bus.emit('rpc.response', { deviceId: 'loa-1', requestId: '1004', payload: { status: 'ok' }, at: Date.now() });
    await a.rpc.settled();
    expect(await row(onA.requestId)).toMatchObject({ state: 'answered' });
  });

  it('(f) owner_inc: a live owner keeps its due commands; a restarted process takes its node\'s at start; a later process\'s leftovers are orphans', async () => {
    await lease('a', 1); await lease('c');
    const a = await startNode('a', [], { sweepMs: 600_000 }); // A's own expiry is off: only adoption would expire
    const c = await startNode('c');
    const due = await a.rpc.send('off-1', 'x', {}, { expiresAt: Date.now() + 300 });
    const later = await a.rpc.send('off-2', 'x', {}, { expiresAt: soon() });
    const inc = async (id: string) => Number((await sql<{ owner_inc: number }>`SELECT owner_inc FROM rpc_requests WHERE id = ${id}`.execute(admin.kysely)).rows[0]!.owner_inc);
    expect(await inc(due.requestId)).toBe(1);
    await new Promise((res) => setTimeout(res, 1_200)); // due, and several adoption rounds of C
    expect(await row(due.requestId)).toMatchObject({ state: 'queued', owner_node: 'a' }); // A is alive: not C's
    // A restarts (a new process of node id a: a new lease start); it takes its node's open commands at start.
    await stopNode(a);
    await sql`UPDATE cluster_nodes SET started_at = 2 WHERE node_id = 'a'`.execute(admin.kysely);
    const a2 = await startNode('a', [], { sweepMs: 600_000 });
    expect(held(a2, later.requestId)).toBe(true);
    expect(await inc(later.requestId)).toBe(2);
    // The due one: expired once, by the new process at start or by C (a leftover of process 1 while a restarted).
    await until('the due one expired', async () => (await row(due.requestId)).state === 'expired');
    expect([...a2.events.expired, ...c.events.expired].map((e) => e.request.id)).toEqual([due.requestId]);
    c.events.expired.length = 0;
    // Had a later process of a not taken them (started_at 3 now), C adopts a due one and expires it, once.
    const due2 = await a2.rpc.send('off-3', 'x', {}, { expiresAt: Date.now() + 300 });
    await stopNode(a2);
    await sql`UPDATE cluster_nodes SET started_at = 3 WHERE node_id = 'a'`.execute(admin.kysely);
    await until('C expires it', async () => (await row(due2.requestId)).state === 'expired');
    expect(c.events.expired.map((e) => e.request.id)).toEqual([due2.requestId]);
    expect(await row(later.requestId)).toMatchObject({ state: 'queued', owner_node: 'a' }); // not due, device nowhere: left
  });

  it('(g) a nudge (the cluster bus\'s hint) makes the owner pick a command up at once, not at its next round', async () => {
    await lease('a'); await lease('b');
    await session('loa-1', 'b');
    const byId = new Map<string, Node>();
    const a = await startNode('a', [], { nudge: (owner) => byId.get(owner)?.rpc.nudge() });
    const b = await startNode('b', ['loa-1'], { pickupMs: 600_000 }); // its own pickup round never comes in this test
    byId.set('a', a).set('b', b);
    const t0 = Date.now();
    const r = await a.rpc.send('loa-1', 'x', {}, { expiresAt: soon() });
    const [m] = await a.rpc.sendMany(['loa-1'], 'y', {}, { expiresAt: soon() });
    await until('B publishes both', () => publishedTo(b, r.requestId) === 1 && publishedTo(b, m!.requestId) === 1, 5_000);
    console.log(`(g) nudged: published by B ${Date.now() - t0} ms after the send on A`);
    expect(b.published.map((p) => p.requestId)).toEqual([r.requestId, m!.requestId]);
  });
});

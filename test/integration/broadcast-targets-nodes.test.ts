/**
 * Broadcast targets across cluster nodes (docs/cluster.md "Broadcasts across nodes"): two nodes, each an RpcService
 * with command ownership and a BroadcastExecutor over its own pool, state window and event bus, on ONE real
 * PostgreSQL 15 database, with recording brokers. `device_sessions` and `cluster_nodes` rows are written here as the
 * session claims and node leases would.
 *  (a) a stop from node B of a broadcast started on node A withdraws its play commands still queued on either node
 *      (decided in the database), so no play goes out after the stop; a play already sent gets a broadcast.stop;
 *  (b) node A dies while its targets are `accepted`: node B makes them `unconfirmed` after the deadline, once;
 *      a stream A was relaying gets its planned broadcast.stop from B.
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BroadcastExecutor, playHooks } from '../../src/broadcast/execution/index.js';
import { PgNodesRig, connectOn, silentLogger, stopRpcNode, type RpcNode, type RpcNodeOptions } from '../helpers/pg-nodes.js';
import { untilTrue } from '../helpers/rpc-window.js';
import { stopStatePostgres } from '../helpers/state-dialects.js';

afterAll(stopStatePostgres);

const SHA = 'a'.repeat(64);
const SPEAKERS = ['s-01', 's-02', 's-03', 's-04', 's-05', 's-06', 's-07', 's-08'];

interface Node extends RpcNode { exec: BroadcastExecutor }

let rig: PgNodesRig;
let nodes: Node[] = [];

beforeEach(async () => {
  rig = new PgNodesRig();
  await rig.open();
});
afterEach(async () => {
  nodes = [];
  await rig.close();
});

const q = <T>(s: ReturnType<typeof sql<T>>): Promise<T[]> => rig.rows(s);
const lease = (id: string): Promise<void> => rig.lease(id);
const expireLease = (id: string): Promise<void> => rig.expire(id);
const sessions = (rows: Array<[string, string]>): Promise<void> => rig.sessions(rows);
const stopNode = (n: Node): Promise<void> => stopRpcNode(n);
const connect = connectOn;

/** Every node's connections: what the registry's presence says (a speaker connected to any node). */
const onlineAnywhere = (d: string): boolean => nodes.some((n) => !n.stopped && n.connected.has(d));

function registry() {
  const dev = (id: string) => ({ id, kind: 'speaker' as const, name: id, area: 'p', location: null, model: null, enabled: true, createdAt: 0, historyFrom: null });
  return {
    getArea: (c: string) => (c === 'p' ? { code: 'p', name: 'P', level: 'province' as const, parent: null, createdAt: 0 } : undefined),
    getDevice: (id: string) => (SPEAKERS.includes(id) ? dev(id) : undefined),
    isOnlineAnywhere: onlineAnywhere,
    subtree: (c: string) => [c],
    listDevices: () => SPEAKERS.map(dev),
    attributes: (): Record<string, unknown> => ({ capabilities: ['broadcast.play', 'broadcast.stop', 'media.prefetch'] }),
  };
}

async function startNode(id: string, o: { readyDelayMs?: number; nudge?: boolean; reportGraceMs?: number } = {}): Promise<Node> {
  let exec: BroadcastExecutor | undefined;
  const opts: RpcNodeOptions = {
    ...(o.readyDelayMs !== undefined ? { readyDelayMs: o.readyDelayMs } : {}),
    paramsHooks: playHooks(() => exec!),
    // The live bus: the hint reaches the other node at once.
    ...(o.nudge === false ? {} : { nudge: (to: string) => { nodes.find((x) => x.id === to && !x.stopped)?.rpc.nudge(); } }),
  };
  const n = await rig.startRpcNode<Node>(id, opts, (base) => {
    exec = new BroadcastExecutor({
      db: base.db, window: base.window, rpc: base.rpc, bus: base.bus, registry: registry(), logger: silentLogger, mediaUrl: (m) => `https://keng.test/media/${m}`,
      reportGraceMs: o.reportGraceMs ?? 60_000, targetSweepMs: 250,
    });
    return { node: Object.assign(base, { exec }), start: () => exec!.start(), stop: () => exec!.stop() };
  });
  nodes.push(n);
  return n;
}

const until = (what: string, f: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> => untilTrue(what, f, ms);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const held = (n: Node, id: string): boolean => (n.rpc as unknown as { open: { get(id: string): unknown } }).open.get(id) !== undefined;
const plays = (n: Node, d?: string) => n.published.filter((p) => p.method === 'broadcast.play' && (d === undefined || p.deviceId === d));
const stops = (n: Node, d?: string) => n.published.filter((p) => p.method === 'broadcast.stop' && (d === undefined || p.deviceId === d));
const targets = (b: string) => q(sql<{ device_id: string; state: string; play_request_id: string | null }>`SELECT device_id, state, play_request_id
  FROM broadcast_targets WHERE broadcast_id = ${b} ORDER BY device_id`);
const logCount = (b: string, state: string) => q(sql<{ device_id: string; n: string }>`SELECT device_id, count(*) AS n FROM broadcast_log
  WHERE broadcast_id = ${b} AND state = ${state} GROUP BY device_id ORDER BY device_id`);

describe('broadcast targets across nodes (PostgreSQL)', () => {
  it('(a) a stop from B of a broadcast started on A withdraws the play commands queued on either node: no play goes out after it', async () => {
    await lease('a'); await lease('b');
    // s-01..s-03 held by A, s-04..s-06 by B (connected there, warming up: their plays stay queued), s-07 ready on A
    // (its play goes out at once), s-08 offline (no session: A creates and owns its command).
    await sessions([['s-01', 'a'], ['s-02', 'a'], ['s-03', 'a'], ['s-04', 'b'], ['s-05', 'b'], ['s-06', 'b'], ['s-07', 'a']]);
    // B sends no hints: A's memory is NOT told of the withdrawal, the miss of its own move to `sent` must hold.
    const a = await startNode('a', { readyDelayMs: 3_000 });
    const b = await startNode('b', { readyDelayMs: 3_000, nudge: false });
    a.connected.add('s-07'); // connected and ready (no warm-up in progress)
    for (const d of ['s-01', 's-02', 's-03']) connect(a, d);
    for (const d of ['s-04', 's-05', 's-06']) connect(b, d);
    const started = await a.exec.start({
      id: 'bc-1', priority: 'normal', volume: 70, targets: SPEAKERS,
      media: { mediaId: 'm1', sha256: SHA, durationSec: 30, mime: 'audio/mpeg' }, notAfter: Date.now() + 120_000,
    });
    const st = new Map(started.targets.map((t) => [t.deviceId, t.state]));
    expect(st.get('s-07')).toBe('sent');
    expect(st.get('s-08')).toBe('offline');
    expect(st.get('s-04')).toBe('pending');
    const ids = new Map((await targets('bc-1')).map((t) => [t.device_id, t.play_request_id!]));
    await until('B picked up its plays', () => ['s-04', 's-05', 's-06'].every((d) => held(b, ids.get(d)!)));
    expect(['s-01', 's-02', 's-03', 's-08'].every((d) => held(a, ids.get(d)!))).toBe(true);
    expect(plays(a)).toHaveLength(1); // s-07 only
    expect(plays(b)).toHaveLength(0);

    // The stop, on B (which never held the broadcast).
    const stoppedAt = Date.now();
    const out = await b.exec.stop('bc-1');
    const byDev = new Map(out.targets.map((t) => [t.deviceId, t.state]));
    for (const d of ['s-01', 's-02', 's-03', 's-04', 's-05', 's-06', 's-08']) expect(byDev.get(d)).toBe('stopped');

    const rows = new Map((await q(sql<{ id: string; state: string }>`SELECT id, state FROM rpc_requests WHERE method = 'broadcast.play'`)).map((r) => [r.id, r.state]));
    for (const d of ['s-01', 's-02', 's-03', 's-04', 's-05', 's-06', 's-08']) expect(rows.get(ids.get(d)!)).toBe('cancelled');
    expect(rows.get(ids.get('s-07')!)).toBe('sent');
    // B's own queued plays are forgotten at once; the play it held is not published when the speakers are ready.
    for (const d of ['s-04', 's-05', 's-06']) expect(held(b, ids.get(d)!)).toBe(false);

    // The warm-ups end (3 s): A still holds its (cancelled) plays in memory and tries; its move to `sent` misses.
    await until('s-07 got its stop (from A, its owner)', () => stops(a, 's-07').length === 1);
    await sleep(3_500);
    expect(plays(a).map((p) => p.deviceId)).toEqual(['s-07']);
    expect(plays(b)).toHaveLength(0);
    expect(stops(b)).toHaveLength(0);
    expect(stops(a).map((p) => p.deviceId)).toEqual(['s-07']);
    expect(plays(a).every((p) => p.at < stoppedAt)).toBe(true);
    for (const d of ['s-01', 's-02', 's-03']) expect(held(a, ids.get(d)!)).toBe(false);
    // s-08 (offline, never connected to A): A forgets it at its check of what it holds for devices not connected to it,
    // and its memory of the broadcast with it (stale: read again on next use).
    await until('A forgot the withdrawn play of s-08', () => !held(a, ids.get('s-08')!));
    // A's stale copy of the broadcast is gone: not held, or read again since (then as the rows are).
    const mine = a.exec.current('bc-1');
    if (mine) expect(new Map(mine.targets.map((t) => [t.deviceId, t.state])).get('s-08')).toBe('stopped');

    const finalT = new Map((await targets('bc-1')).map((t) => [t.device_id, t.state]));
    for (const d of ['s-01', 's-02', 's-03', 's-04', 's-05', 's-06', 's-08']) expect(finalT.get(d)).toBe('stopped');
    expect(finalT.get('s-07')).toBe('sent'); // until the speaker confirms the stop
    const lines = await logCount('bc-1', 'stopped');
    expect(lines.map((l) => [l.device_id, Number(l.n)])).toEqual(['s-01', 's-02', 's-03', 's-04', 's-05', 's-06', 's-08'].map((d) => [d, 1]));
    expect((await q(sql<{ stop_requested_at: string | null }>`SELECT stop_requested_at FROM broadcasts WHERE id = 'bc-1'`))[0]!.stop_requested_at).not.toBeNull();

    // A second stop, from A this time: nothing is withdrawn twice, no line twice, stop_requested_at kept.
    const first = (await q(sql<{ stop_requested_at: string }>`SELECT stop_requested_at FROM broadcasts WHERE id = 'bc-1'`))[0]!.stop_requested_at;
    await a.exec.stop('bc-1');
    await sleep(500);
    expect((await logCount('bc-1', 'stopped')).every((l) => Number(l.n) === 1)).toBe(true);
    expect((await q(sql<{ stop_requested_at: string }>`SELECT stop_requested_at FROM broadcasts WHERE id = 'bc-1'`))[0]!.stop_requested_at).toBe(first);
    expect(plays(a)).toHaveLength(1);
  }, 60_000);

  it('(a2) with the live bus\'s hint, the owner forgets a play withdrawn elsewhere at once (its speaker still warming up)', async () => {
    await lease('a'); await lease('b');
    await sessions([['s-01', 'a'], ['s-02', 'a']]);
    const a = await startNode('a', { readyDelayMs: 4_000 });
    const b = await startNode('b');
    for (const d of ['s-01', 's-02']) connect(a, d);
    await a.exec.start({
      id: 'bc-h', priority: 'normal', volume: 70, targets: ['s-01', 's-02'],
      media: { mediaId: 'm1', sha256: SHA, durationSec: 30, mime: 'audio/mpeg' }, notAfter: Date.now() + 120_000,
    });
    const ids = (await targets('bc-h')).map((t) => t.play_request_id!);
    expect(ids.every((id) => held(a, id))).toBe(true);
    const t0 = Date.now();
    await b.exec.stop('bc-h');
    await until('A forgot both withdrawn plays', () => ids.every((id) => !held(a, id)), 3_000);
    expect(Date.now() - t0).toBeLessThan(3_000); // before the warm-up ends: the hint did it
    expect(a.exec.current('bc-h')).toBeUndefined();
    await sleep(4_500);
    expect(plays(a)).toHaveLength(0);
    expect((await targets('bc-h')).map((t) => t.state)).toEqual(['stopped', 'stopped']);
  }, 60_000);

  it('(a3) prefetches asked on A for speakers held by A and B are withdrawn from B (an alert turned down there): none goes out', async () => {
    await lease('a'); await lease('b');
    await sessions([['s-01', 'a'], ['s-02', 'a'], ['s-03', 'b'], ['s-04', 'b']]);
    const a = await startNode('a', { readyDelayMs: 3_000 });
    const b = await startNode('b', { readyDelayMs: 3_000, nudge: false });
    for (const d of ['s-01', 's-02']) connect(a, d);
    for (const d of ['s-03', 's-04']) connect(b, d);
    const media = { mediaId: 'm-alert', sha256: SHA, durationSec: 30, mime: 'audio/mpeg' };
    expect(await a.exec.prefetch(['s-01', 's-02', 's-03', 's-04'], media, Date.now() + 120_000)).toBe(4);
    const pf = () => q(sql<{ device_id: string; state: string }>`SELECT device_id, state FROM rpc_requests WHERE method = 'media.prefetch' ORDER BY device_id`);
    const ids = (await q(sql<{ id: string; device_id: string }>`SELECT id, device_id FROM rpc_requests WHERE method = 'media.prefetch'`));
    await until('B picked up its prefetches', () => ids.filter((r) => r.device_id >= 's-03').every((r) => held(b, r.id)));
    expect(await b.exec.withdrawPrefetch('m-alert')).toBe(4);
    expect((await pf()).map((r) => r.state)).toEqual(['cancelled', 'cancelled', 'cancelled', 'cancelled']);
    await sleep(3_500); // the warm-ups end: A's moves to `sent` miss
    expect(a.published.concat(b.published).filter((p) => p.method === 'media.prefetch')).toEqual([]);
    expect(ids.every((r) => !held(a, r.id) && !held(b, r.id))).toBe(true);
  }, 60_000);

  it('(b) node A dies while its targets are accepted: B makes them unconfirmed after the deadline, once; B sends the planned stop of A\'s stream', async () => {
    await lease('a'); await lease('b');
    await sessions([['s-01', 'a'], ['s-02', 'a'], ['s-03', 'a'], ['s-04', 'a']]);
    const a = await startNode('a', { reportGraceMs: 500 });
    const b = await startNode('b', { reportGraceMs: 500 });
    for (const d of ['s-01', 's-02', 's-03', 's-04']) a.connected.add(d);
    const notAfter = Date.now() + 1_500;
    await a.exec.start({
      id: 'bc-m', priority: 'normal', volume: 70, targets: ['s-01', 's-02', 's-03'],
      media: { mediaId: 'm1', sha256: SHA, durationSec: 1, mime: 'audio/mpeg' }, notAfter,
    });
    await a.exec.start({ id: 'bc-s', priority: 'normal', volume: 70, targets: ['s-04'], stream: { url: 'https://radio.test/live' }, durationSec: 2, notAfter: Date.now() + 60_000 });
    const ids = new Map((await targets('bc-m')).map((t) => [t.device_id, t.play_request_id!]));
    const sid = (await targets('bc-s'))[0]!.play_request_id!;
    // The speakers accept on A; s-04 reports the stream playing.
    for (const d of ['s-01', 's-02', 's-03']) a.bus.emit('rpc.response', { deviceId: d, requestId: ids.get(d)!, payload: { status: 'accepted' }, at: Date.now() });
    a.bus.emit('rpc.response', { deviceId: 's-04', requestId: sid, payload: { status: 'accepted' }, at: Date.now() });
    await a.rpc.settled(); await a.exec.settled();
    a.bus.emit('device.event', { deviceId: 's-04', payload: { type: 'playback', broadcastId: 'bc-s', state: 'started', at: Date.now() }, at: Date.now() });
    await a.exec.settled();
    await until('targets accepted / playing', async () => (await targets('bc-m')).every((t) => t.state === 'accepted')
      && (await targets('bc-s'))[0]!.state === 'playing');

    // A dies: its timers go with it (stopped without any cleanup of the rows), then its lease runs out; its speakers
    // reconnect to B.
    await stopNode(a);
    await expireLease('a');
    await sessions([['s-01', 'b'], ['s-02', 'b'], ['s-03', 'b'], ['s-04', 'b']]);
    for (const d of ['s-01', 's-02', 's-03', 's-04']) connect(b, d);

    // Deadline: notAfter + 1 s of media + 0.5 s grace. B's sweep (every 250 ms) finishes them.
    await until('B made A\'s accepted targets unconfirmed', async () => (await targets('bc-m')).every((t) => t.state === 'unconfirmed'), 15_000);
    expect(Date.now()).toBeGreaterThanOrEqual(notAfter + 1_500);
    await until('B sent the planned stop of A\'s stream', () => stops(b, 's-04').length >= 1, 15_000);
    await sleep(1_000);
    expect((await logCount('bc-m', 'unconfirmed')).map((l) => [l.device_id, Number(l.n)])).toEqual([['s-01', 1], ['s-02', 1], ['s-03', 1]]);
    expect(stops(b, 's-04')).toHaveLength(1);
    const tr = (await q(sql<{ stop_request_id: string | null; state: string }>`SELECT stop_request_id, state FROM broadcast_targets WHERE broadcast_id = 'bc-s'`))[0]!;
    expect(tr.state).toBe('playing');
    expect(tr.stop_request_id).toBe(stops(b, 's-04')[0]!.requestId);
  }, 60_000);

  it('(c) node A dies with plays queued for offline speakers: B adopts them when due and expires their targets once (B never held the broadcast)', async () => {
    await lease('a'); await lease('b');
    const a = await startNode('a');
    const b = await startNode('b');
    await a.exec.start({
      id: 'bc-o', priority: 'normal', volume: 70, targets: ['s-01', 's-02', 's-03'],
      media: { mediaId: 'm1', sha256: SHA, durationSec: 1, mime: 'audio/mpeg' }, notAfter: Date.now() + 1_500,
    });
    expect((await targets('bc-o')).map((t) => t.state)).toEqual(['offline', 'offline', 'offline']);
    await stopNode(a);
    await expireLease('a');
    await until('B expired A\'s offline targets', async () => (await targets('bc-o')).every((t) => t.state === 'expired'), 15_000);
    await sleep(1_000);
    expect((await logCount('bc-o', 'expired')).map((l) => [l.device_id, Number(l.n)])).toEqual([['s-01', 1], ['s-02', 1], ['s-03', 1]]);
    const rows = await q(sql<{ state: string; owner_node: string }>`SELECT state, owner_node FROM rpc_requests WHERE method = 'broadcast.play'`);
    expect(rows.every((r) => r.state === 'expired' && r.owner_node === 'b')).toBe(true);
    expect(plays(b)).toHaveLength(0);
  }, 60_000);
});

/**
 * BroadcastExecutor without MQTT: a fake broker, bus-injected RPC responses
 * and playback events, an in-memory state store and a fake clock.
 */
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EventBus, Metrics, createLogger, type KengEvents } from '../../src/core/index.js';
import { MIGRATIONS } from '../../src/storage/state/migrations.js';
import { RPC_MIGRATION, RPC_TB_IDS_MIGRATION, RpcService } from '../../src/rpc/index.js';
import { BROADCAST_MIGRATION, BROADCAST_UNCONFIRMED_MIGRATION, BroadcastExecutor, checkTransition, playHooks, type BroadcastExecutorOptions, type BroadcastInput } from '../../src/broadcast/execution/index.js';
import { broadcastRegistry, testDevice } from '../helpers/broadcast-registry.js';
import { rpcStateOn } from '../helpers/rpc-window.js';

const SHA = 'a'.repeat(64);

function fakeRegistry() {
  const devices = [testDevice('loa-1', 'v1'), testDevice('loa-2', 'v2'), testDevice('loa-3', 'v1'), testDevice('soil-1', 'v1', 'sensor')];
  // loa-1 and loa-3 support media.prefetch (§12.7); loa-2 is older firmware.
  return broadcastRegistry(devices, (id) => (id === 'loa-2'
    ? { capabilities: ['broadcast.play', 'broadcast.stop'] }
    : { capabilities: ['broadcast.play', 'broadcast.stop', 'media.prefetch'] }));
}

interface Fx {
  st: ReturnType<typeof rpcStateOn>;
  db: Database.Database; bus: EventBus; rpc: RpcService; exec: BroadcastExecutor; metrics: Metrics;
  clock: { t: number; now(): number }; connected: Set<string>; published: Array<{ topic: string; body: any }>; urls: string[];
}
let fx: Fx | undefined;
afterEach(async () => { await fx?.exec.stop(); await fx?.rpc.stop(); fx?.db.close(); fx = undefined; });

/** `gate.fail`: the state window's transactions run every statement, then fail (rolled back). */
async function setup(over: Partial<BroadcastExecutorOptions> = {}, gate?: { fail: boolean }): Promise<Fx> {
  const db = new Database(':memory:');
  db.exec(MIGRATIONS[0]!.up);
  db.exec(`INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p', 'P', 'province', NULL, 0)`);
  for (const id of ['loa-1', 'loa-2', 'loa-3']) {
    db.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at) VALUES (?, 'speaker', ?, 'p', 'x', ?, 'x', 0)`).run(id, id, id);
  }
  db.exec(RPC_MIGRATION.up);
  db.exec(RPC_TB_IDS_MIGRATION.up);
  db.exec(BROADCAST_MIGRATION.up);
  db.exec(BROADCAST_UNCONFIRMED_MIGRATION.up);
  const bus = new EventBus();
  const metrics = new Metrics({ defaultMetrics: false });
  const clock = { t: 1_764_460_800_000, now() { return this.t; } };
  const connected = new Set<string>();
  const published: Fx['published'] = [];
  const urls: string[] = [];
  const logger = createLogger('silent');
  // The hook reaches whichever executor the test holds (one test replaces it to simulate a restart).
  const st = rpcStateOn(db, 0, gate && ((fn, next) => next(async (trx) => {
    const r = await fn(trx);
    if (gate.fail) throw new Error('injected commit failure');
    return r;
  })));
  const rpc = new RpcService({ ...st, bus, logger, metrics, clock, answerGraceMs: 0, paramsHooks: playHooks(() => fx!.exec),
    broker: { isConnected: (d) => connected.has(d), publish: async (topic, p) => { published.push({ topic, body: JSON.parse(String(p)) }); } } });
  let n = 0;
  const exec = new BroadcastExecutor({ ...st, rpc, bus, registry: fakeRegistry(), logger, metrics, clock,
    mediaUrl: (id) => { const u = `https://keng.test/media/${id}/file?sig=${++n}`; urls.push(u); return u; }, ...over });
  await rpc.start();
  await exec.start();
  fx = { st, db, bus, rpc, exec, metrics, clock, connected, published, urls };
  return fx;
}

const input = (f: Fx, targets: string[], over: Partial<BroadcastInput> = {}): BroadcastInput => ({
  priority: 'normal', volume: 80, media: { mediaId: 'm_1', sha256: SHA, durationSec: 30, mime: 'audio/mpeg' },
  targets, notAfter: f.clock.t + 60_000, ...over,
});
const tick = () => new Promise((r) => setImmediate(r));
/** The device's last command of `method` as committed (the RPC service writes through the state window). */
const commands = (f: Fx, deviceId: string) => (f.db.prepare('SELECT * FROM rpc_requests WHERE device_id = ? ORDER BY rowid').all(deviceId) as Array<Record<string, unknown>>)
  .map((r) => ({ id: r.id as string, method: r.method as string, state: r.state as string, params: JSON.parse(r.params_json as string) as Record<string, unknown> }));
const committed = async (f: Fx, deviceId: string) => { await f.rpc.settled(); return commands(f, deviceId); };
const reqId = (f: Fx, deviceId: string, method = 'broadcast.play') => commands(f, deviceId).filter((r) => r.method === method).at(-1)!.id;
/** Answers the device's last `method` command once the commands sent so far are committed. */
const respond = async (f: Fx, deviceId: string, method: string, payload: Record<string, unknown>) => {
  await f.rpc.settled();
  f.bus.emit('rpc.response', { deviceId, requestId: reqId(f, deviceId, method), payload, at: f.clock.t });
};
const playback = (f: Fx, deviceId: string, broadcastId: string, state: string, detail?: string) =>
  f.bus.emit('device.event', { deviceId, payload: { type: 'playback', broadcastId, state, at: f.clock.t - 5, ...(detail ? { detail } : {}) }, at: f.clock.t });
/** The executor once everything decided so far is committed (its queries read committed rows). */
const q = async (f: Fx) => { await f.rpc.settled(); await f.exec.settled(); return f.exec; };
const stateOf = async (f: Fx, id: string, deviceId: string) => (await (await q(f)).getStored(id))!.targets.find((t) => t.deviceId === deviceId)!.state;

const rows = (f: Fx) => ['broadcasts', 'broadcast_targets', 'broadcast_log', 'rpc_requests']
  .map((t) => f.db.prepare(`SELECT COUNT(*) FROM ${t}`).pluck().get() as number);

describe('BroadcastExecutor', () => {
  it('one transaction: a failed window holding a broadcast leaves neither its targets nor its commands, nothing is published, the caller gets the error', async () => {
    const gate = { fail: false };
    const f = await setup({}, gate);
    f.connected.add('loa-1');
    const events: string[] = [];
    f.bus.on('broadcast.state', (e) => events.push(e.state));
    gate.fail = true;
    await expect(f.exec.start(input(f, ['loa-1', 'loa-3'], { id: 'bc-x' }))).rejects.toThrow(/injected/);
    gate.fail = false;
    expect(rows(f)).toEqual([0, 0, 0, 0]);
    await tick();
    expect(f.published).toEqual([]);
    expect(events).toEqual([]);
    // Memory forgot it (evicted with the window): the same broadcast starts cleanly.
    const b = await f.exec.start(input(f, ['loa-1', 'loa-3'], { id: 'bc-x' }));
    expect(b.targets.map((t) => t.state)).toEqual(['sent', 'offline']);
    expect(rows(f)).toEqual([1, 2, 4, 2]);
    await tick();
    expect(f.published.map((p) => p.topic.split('/')[2])).toEqual(['loa-1']);
  });

  it('one transaction: the RPC row of an answer and its target move commit together or not at all; the resent answer then moves both once', async () => {
    const gate = { fail: false };
    const f = await setup({}, gate);
    f.connected.add('loa-1');
    const b = await f.exec.start(input(f, ['loa-1']));
    const id = reqId(f, 'loa-1');
    const answer = () => f.bus.emit('rpc.response', { deviceId: 'loa-1', requestId: id, payload: { status: 'accepted' }, at: f.clock.t });
    gate.fail = true;
    answer();
    await expect(f.exec.settled()).rejects.toThrow(/injected/);
    gate.fail = false;
    const target = () => f.db.prepare('SELECT state FROM broadcast_targets WHERE broadcast_id = ?').pluck().get(b.id);
    expect([commands(f, 'loa-1')[0]!.state, target()]).toEqual(['sent', 'sent']);
    await new Promise((r) => setTimeout(r, 20)); // the evicted command is read back
    answer(); // the device resends (no PUBACK)
    await f.exec.settled();
    expect([commands(f, 'loa-1')[0]!.state, target()]).toEqual(['answered', 'accepted']);
    expect((await (await q(f)).log({ broadcastId: b.id })).map((e) => e.state)).toEqual(['pending', 'sent', 'accepted']);
  });

  it('a target accepted (or playing media) with no end reported becomes unconfirmed after notAfter + length + grace; a late end report replaces it', async () => {
    const f = await setup({ reportGraceMs: 100 });
    for (const d of ['loa-1', 'loa-2', 'loa-3']) f.connected.add(d);
    // notAfter 100 ms ahead, media of 0.1 s, grace 100 ms: due ~300 ms (real timers) and at clock + 300.
    const b = await f.exec.start(input(f, ['loa-1', 'loa-2', 'loa-3'], { notAfter: f.clock.t + 100, media: { mediaId: 'm_1', sha256: SHA, durationSec: 0.1, mime: 'audio/mpeg' } }));
    await tick();
    await respond(f, 'loa-1', 'broadcast.play', { status: 'ok', result: true }); // ThingsBoard firmware: no status, no events
    await respond(f, 'loa-2', 'broadcast.play', { status: 'accepted' });
    playback(f, 'loa-2', b.id, 'started');
    await respond(f, 'loa-3', 'broadcast.play', { status: 'accepted' });
    playback(f, 'loa-3', b.id, 'completed');
    expect([await stateOf(f, b.id, 'loa-1'), await stateOf(f, b.id, 'loa-2'), await stateOf(f, b.id, 'loa-3')]).toEqual(['accepted', 'playing', 'completed']);
    f.clock.t += 300;
    await new Promise((r) => setTimeout(r, 800));
    expect([await stateOf(f, b.id, 'loa-1'), await stateOf(f, b.id, 'loa-2'), await stateOf(f, b.id, 'loa-3')]).toEqual(['unconfirmed', 'unconfirmed', 'completed']);
    expect((await (await q(f)).totals()).total).toMatchObject({ planned: 3, played: 1, unconfirmed: 2, inProgress: 0 });
    const line = (await (await q(f)).log({ broadcastId: b.id })).find((e) => e.deviceId === 'loa-1' && e.state === 'unconfirmed');
    expect(line).toMatchObject({ prevState: 'accepted', source: 'controller' });
    expect((await (await q(f)).csv({ broadcastId: b.id }))).toContain('unconfirmed');
    // The speaker's own late report of the end wins over the inference; nothing else does.
    playback(f, 'loa-2', b.id, 'completed');
    expect(await stateOf(f, b.id, 'loa-2')).toBe('completed');
    expect(checkTransition('unconfirmed', 'accepted')).toBe('from_terminal');
    expect(checkTransition('unconfirmed', 'playing')).toBe('from_terminal');
  });

  it('sends broadcast.play with a fresh signed URL (no mediaId on the wire) and expiresAt = notAfter', async () => {
    const f = await setup();
    f.connected.add('loa-1');
    const b = await f.exec.start(input(f, ['loa-1']));
    await tick();
    expect(f.published).toHaveLength(1);
    const msg = f.published[0]!.body;
    expect(msg).toEqual({
      method: 'broadcast.play', expiresAt: b.notAfter,
      params: { broadcastId: b.id, priority: 'normal', volume: 80, notAfter: b.notAfter,
        media: { url: f.urls[0], sha256: SHA, durationSec: 30, mime: 'audio/mpeg' } },
    });
    expect(b.id).toMatch(/^bc_/);
  });

  it('prefetch: media.prefetch with a fresh signed URL to the speakers that list it, held for an offline one, none for older firmware', async () => {
    const f = await setup();
    f.connected.add('loa-1');
    f.connected.add('loa-2');
    const media = { mediaId: 'm_1', sha256: SHA, durationSec: 30, mime: 'audio/mpeg' };
    const until = f.clock.t + 3600_000;
    expect(await f.exec.prefetch(['loa-1', 'loa-2', 'loa-3', 'soil-1'], media, until)).toBe(2);
    await tick();
    expect(f.published).toEqual([{
      topic: expect.stringMatching(/^v1\/devices\/loa-1\/rpc\/request\/r_/) as unknown,
      body: { method: 'media.prefetch', expiresAt: until, params: { media: { url: f.urls[0], sha256: SHA, durationSec: 30, mime: 'audio/mpeg' } } },
    }]);
    expect((await committed(f, 'loa-2'))).toEqual([]);
    // loa-3 is offline: its prefetch waits for it, with a URL made when it is sent.
    expect((await committed(f, 'loa-3')).map((r) => [r.method, r.state, r.params])).toEqual([['media.prefetch', 'queued', { media }]]);
    // Not a broadcast: nothing in the broadcast tables.
    expect((await (await q(f)).list())).toEqual([]);
  });

  it('withdrawPrefetch: the prefetches of one media held for offline speakers are cancelled; sent ones and other media stay', async () => {
    const f = await setup();
    f.connected.add('loa-1');
    const until = f.clock.t + 3600_000;
    await f.exec.prefetch(['loa-1', 'loa-3'], { mediaId: 'm_1', sha256: SHA, durationSec: 30, mime: 'audio/mpeg' }, until);
    await f.exec.prefetch(['loa-3'], { mediaId: 'm_2', sha256: SHA, durationSec: 30, mime: 'audio/mpeg' }, until);
    await tick();
    expect(await f.exec.withdrawPrefetch('m_1')).toBe(1);
    expect((await committed(f, 'loa-3')).map((r) => [(r.params.media as { mediaId: string }).mediaId, r.state])).toEqual([['m_1', 'cancelled'], ['m_2', 'queued']]);
    expect((await committed(f, 'loa-1')).map((r) => r.state)).toEqual(['sent']);
    expect(await f.exec.withdrawPrefetch('m_1')).toBe(0);
  });

  it('tracks a speaker through accepted → playing → completed, logs device time, emits broadcast.state; a late accepted is ignored', async () => {
    const f = await setup();
    f.connected.add('loa-1');
    const events: Array<KengEvents['broadcast.state']> = [];
    f.bus.on('broadcast.state', (e) => events.push(e));
    const b = await f.exec.start(input(f, ['loa-1'], { scheduleId: 'sch-1' }));
    playback(f, 'loa-1', b.id, 'started');
    f.clock.t += 30_000;
    playback(f, 'loa-1', b.id, 'completed');
    await respond(f, 'loa-1', 'broadcast.play', { status: 'accepted' }); // response overtaken by the events
    expect(await stateOf(f, b.id, 'loa-1')).toBe('completed');
    expect(events.map((e) => e.state)).toEqual(['pending', 'sent', 'playing', 'completed']);
    expect(events[0]).toMatchObject({ broadcastId: b.id, deviceId: 'loa-1', area: 'v1' });
    const log = (await (await q(f)).log({ broadcastId: b.id }));
    expect(log.map((e) => [e.prevState ?? null, e.state, e.source])).toEqual([
      [null, 'pending', 'controller'], ['pending', 'sent', 'rpc'], ['sent', 'playing', 'event'], ['playing', 'completed', 'event']]);
    expect(log[3]).toMatchObject({ deviceAt: f.clock.t - 5, scheduleId: 'sch-1' });
    const m = (await f.metrics.registry.getMetricsAsJSON()).find((x) => x.name === 'keng_broadcast_transitions_ignored_total');
    expect(m?.values).toEqual([expect.objectContaining({ value: 1, labels: { reason: 'from_terminal' } })]);
  });

  it('a relayed stream is stopped durationSec after it started playing, also across a restart of the executor', async () => {
    const f = await setup();
    f.connected.add('loa-1');
    f.connected.add('loa-2');
    const stream = { media: undefined, stream: { url: 'http://radio.vn/vov1' }, durationSec: 60 } as unknown as Partial<BroadcastInput>;
    const b = await f.exec.start(input(f, ['loa-1', 'loa-2'], { ...stream, notAfter: f.clock.t + 600_000 }));
    playback(f, 'loa-1', b.id, 'started');
    f.clock.t += 20_000;
    playback(f, 'loa-2', b.id, 'started'); // 20 s later
    const stops = () => f.published.filter((p) => p.body.method === 'broadcast.stop').map((p) => p.topic.split('/')[2]);
    // Keng goes down 50 s after loa-1 started and comes back 15 s later: loa-1's stop is overdue, loa-2's is 15 s away.
    f.clock.t += 30_000;
    await f.exec.stop();
    f.clock.t += 15_000;
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const again = new BroadcastExecutor({ ...f.st, rpc: f.rpc, bus: f.bus, registry: fakeRegistry(), logger: createLogger('silent'),
        metrics: new Metrics({ defaultMetrics: false }), clock: f.clock, mediaUrl: (id) => `https://keng.test/media/${id}` });
      f.exec = again;
      await again.start();
      vi.advanceTimersByTime(0);
      await tick();
      expect(stops()).toEqual(['loa-1']);
      f.clock.t += 14_000;
      vi.advanceTimersByTime(14_000);
      await tick();
      expect(stops()).toEqual(['loa-1']);
      f.clock.t += 1_000;
      vi.advanceTimersByTime(1_000);
      await tick();
      expect(stops()).toEqual(['loa-1', 'loa-2']);
      // a second restart does not stop them twice (the stop requests are recorded)
      await again.stop();
      await again.start();
      vi.advanceTimersByTime(60_000);
      await tick();
      expect(stops()).toEqual(['loa-1', 'loa-2']);
    } finally {
      vi.useRealTimers();
    }
  });

  it('rejected and error answers; offline targets expire at notAfter; totals follow the documented definitions', async () => {
    const f = await setup();
    f.connected.add('loa-1');
    f.connected.add('loa-2');
    const b = await f.exec.start(input(f, ['loa-1', 'loa-2', 'loa-3'], { notAfter: f.clock.t + 1000 }));
    expect(b.targets.map((t) => t.state)).toEqual(['sent', 'sent', 'offline']);
    await respond(f, 'loa-1', 'broadcast.play', { status: 'rejected', detail: 'busy' });
    await respond(f, 'loa-2', 'broadcast.play', { status: 'error', detail: 'storage full' });
    expect((await (await q(f)).getStored(b.id))!.targets.map((t) => [t.state, t.detail])).toEqual([['rejected', 'busy'], ['failed', 'storage full'], ['offline', expect.any(String)]]);
    expect((await (await q(f)).totals()).total).toMatchObject({ planned: 3, failed: 2, inProgress: 1 });
    f.clock.t += 1001;
    expect((await (await q(f)).totals()).total).toMatchObject({ planned: 3, failed: 3, inProgress: 0 }); // offline past notAfter counts as failed
    f.rpc.sweep();
    expect(await stateOf(f, b.id, 'loa-3')).toBe('expired');
    await f.exec.recordMissed('sch-9', f.clock.t - 3_600_000, ['loa-1', 'loa-2']);
    expect(await f.exec.recordMissed('sch-9', f.clock.t - 3_600_000, ['loa-1'])).toBe(0); // idempotent
    const t = (await (await q(f)).totals({ area: 'v1' }));
    expect(t.areas).toEqual([{ area: 'v1', areaName: 'Thôn Đông', planned: 3, played: 0, failed: 2, missed: 1, stopped: 0, preempted: 0, unconfirmed: 0, inProgress: 0 }]);
    expect((await (await q(f)).log({ area: 'v2' })).map((e) => e.state)).toEqual(['missed', 'pending', 'sent', 'failed']);
  });

  it('stop: broadcast.stop to sent targets (stopped on ok), never-sent targets stopped at once and their command withdrawn', async () => {
    const f = await setup();
    f.connected.add('loa-1');
    const b = await f.exec.start(input(f, ['loa-1', 'loa-3']));
    await respond(f, 'loa-1', 'broadcast.play', { status: 'accepted' });
    const s = await f.exec.stop(b.id);
    expect(s.targets.map((t) => t.state)).toEqual(['accepted', 'stopped']);
    expect((await committed(f, 'loa-3'))[0]!.state).toBe('cancelled');
    await tick();
    expect(f.published.at(-1)!.body).toMatchObject({ method: 'broadcast.stop', params: { broadcastId: b.id } });
    await respond(f, 'loa-1', 'broadcast.stop', { status: 'ok' });
    expect(await stateOf(f, b.id, 'loa-1')).toBe('stopped');
    playback(f, 'loa-1', b.id, 'stopped'); // the speaker's event after its ok: same state, nothing more
    expect((await (await q(f)).log({ broadcastId: b.id, deviceId: 'loa-1' })).map((e) => e.state)).toEqual(['pending', 'sent', 'accepted', 'stopped']);
    await expect(f.exec.stop('bc_nope')).rejects.toThrow(/not found/);
  });

  it('refuses playback events for broadcasts the speaker never got', async () => {
    const f = await setup();
    const b = await f.exec.start(input(f, ['loa-3'])); // offline: never sent
    playback(f, 'loa-3', b.id, 'started');
    playback(f, 'loa-2', b.id, 'started');
    playback(f, 'loa-2', 'bc_unknown', 'completed');
    expect(await stateOf(f, b.id, 'loa-3')).toBe('offline');
    const m = (await f.metrics.registry.getMetricsAsJSON()).find((x) => x.name === 'keng_broadcast_events_refused_total');
    expect((m?.values ?? []).map((v) => [v.labels.reason, v.value]).sort()).toEqual([['never_sent', 1], ['not_target', 1], ['unknown_broadcast', 1]]);
  });

  it('start: each target stored in its first state with its play request and both log lines (pending lines first); the reply is the stored broadcast', async () => {
    const f = await setup();
    f.connected.add('loa-1');
    f.connected.add('loa-3');
    f.bus.emit('status', { deviceId: 'loa-3', area: 'v1', online: true, at: f.clock.t }); // connecting: not yet known to be subscribed
    const events: Array<KengEvents['broadcast.state']> = [];
    f.bus.on('broadcast.state', (e) => events.push(e));
    const b = await f.exec.start(input(f, ['loa-3', 'loa-2', 'loa-1'], { scheduleId: 'sch-2' }));
    expect(b).toEqual((await (await q(f)).getStored(b.id)));
    expect(b.targets.map((t) => [t.deviceId, t.state])).toEqual([['loa-1', 'sent'], ['loa-2', 'offline'], ['loa-3', 'pending']]);
    expect(events.map((e) => [e.deviceId, e.state])).toEqual([
      ['loa-3', 'pending'], ['loa-2', 'pending'], ['loa-1', 'pending'], ['loa-2', 'offline'], ['loa-1', 'sent']]);
    expect((await (await q(f)).log({ broadcastId: b.id })).map((e) => [e.deviceId, e.prevState ?? null, e.state, e.source, e.scheduleId])).toEqual([
      ['loa-3', null, 'pending', 'controller', 'sch-2'], ['loa-2', null, 'pending', 'controller', 'sch-2'], ['loa-1', null, 'pending', 'controller', 'sch-2'],
      ['loa-2', 'pending', 'offline', 'controller', 'sch-2'], ['loa-1', 'pending', 'sent', 'rpc', 'sch-2']]);
    const playIds = f.db.prepare('SELECT device_id, play_request_id FROM broadcast_targets WHERE broadcast_id = ? ORDER BY device_id').all(b.id) as Array<{ device_id: string; play_request_id: string }>;
    await f.rpc.settled();
    expect(playIds.map((r) => [r.device_id, r.play_request_id])).toEqual(['loa-1', 'loa-2', 'loa-3'].map((d) => [d, reqId(f, d)]));
    expect(['loa-1', 'loa-2', 'loa-3'].map((d) => commands(f, d)[0]!.state)).toEqual(['sent', 'queued', 'queued']);
    // loa-3 shows it is subscribed: its command goes out, the target follows.
    f.bus.emit('telemetry', { deviceId: 'loa-3', area: 'v1', values: {}, at: f.clock.t } as never);
    expect(await stateOf(f, b.id, 'loa-3')).toBe('sent');
    await tick();
    expect(f.published.map((p) => p.topic.split('/')[2])).toEqual(['loa-1', 'loa-3']);
  });

  it('validates input; the log is append-only', async () => {
    const f = await setup();
    expect(() => f.exec.start(input(f, ['nope']))).toThrow(/not found/);
    expect(() => f.exec.start(input(f, ['soil-1']))).toThrow(/not a speaker/);
    expect(() => f.exec.start(input(f, ['loa-1'], { notAfter: f.clock.t - 1 }))).toThrow(/notAfter/);
    expect(() => f.exec.start(input(f, ['loa-1'], { stream: { url: 'http://radio.vn/vov1' } }))).toThrow(/exactly one/);
    expect(() => f.exec.start(input(f, ['loa-1'], { volume: 101 }))).toThrow(/volume/);
    await f.exec.start(input(f, ['loa-1']));
    expect(() => f.db.exec(`UPDATE broadcast_log SET state = 'completed'`)).toThrow(/append-only/);
    expect(() => f.db.exec('DELETE FROM broadcast_log')).toThrow(/append-only/);
  });
});

/**
 * RpcService (firmware-protocols/device-protocol.md §11): persistence, publish
 * when connected, held commands replayed in order after a reconnect (once the
 * device is known to be subscribed), expiry, and refusal of responses to
 * requests the device never got.
 */
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus, Metrics, createLogger } from '../../src/core/index.js';
import { MIGRATIONS } from '../../src/storage/state/migrations.js';
import { RPC_MIGRATION, RPC_TB_IDS_MIGRATION, RpcService, type RpcEvents, type RpcServiceOptions } from '../../src/rpc/index.js';
import { rpcStateOn } from '../helpers/rpc-window.js';

interface Fixture {
  rpc: RpcService; bus: EventBus; metrics: Metrics; clock: { t: number; now(): number };
  connected: Set<string>; published: Array<{ topic: string; body: any }>; db: Database.Database;
  /** Window flushes to fail (a disk error at COMMIT), counted down. */
  fail: { n: number };
}

let fx: Fixture | undefined;
afterEach(async () => { await fx?.rpc.stop(); fx?.db.close(); fx = undefined; });

async function setup(paramsHooks: RpcServiceOptions['paramsHooks'] = {}): Promise<Fixture> {
  const db = new Database(':memory:');
  db.exec(MIGRATIONS[0]!.up);
  db.exec(RPC_MIGRATION.up);
  db.exec(RPC_TB_IDS_MIGRATION.up);
  for (const id of ['loa-01', 'loa-02']) {
    db.prepare(`INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p', 'P', 'province', NULL, 0) ON CONFLICT DO NOTHING`).run();
    db.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at) VALUES (?, 'speaker', ?, 'p', 'x', ?, 'x', 0)`).run(id, id, `t-${id}`);
  }
  const bus = new EventBus();
  const metrics = new Metrics({ defaultMetrics: false });
  const clock = { t: 1_000_000, now() { return this.t; } };
  const connected = new Set<string>();
  const published: Fixture['published'] = [];
  const broker = {
    isConnected: (d: string) => connected.has(d),
    publish: async (topic: string, payload: string | Buffer) => { published.push({ topic, body: JSON.parse(String(payload)) }); },
  };
  const fail = { n: 0 };
  const state = rpcStateOn(db, 0, (fn, write) => (fail.n-- > 0 ? Promise.reject(Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' })) : write(fn)));
  const rpc = new RpcService({ ...state, broker, bus, logger: createLogger('silent'), metrics, clock, readyDelayMs: 60_000, answerGraceMs: 1000, paramsHooks });
  await rpc.start();
  fx = { rpc, bus, metrics, clock, connected, published, db, fail };
  return fx;
}

const flushMicrotasks = () => new Promise((r) => setImmediate(r));

function connect(f: Fixture, deviceId: string): void {
  f.connected.add(deviceId);
  f.bus.emit('status', { deviceId, area: 'p', online: true, at: f.clock.now() });
}

async function metric(f: Fixture, name: string): Promise<number> {
  const m = (await f.metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values as Array<{ value: number; labels: Record<string, string> }> | undefined)?.reduce((a, v) => a + v.value, 0) ?? 0;
}

describe('RpcService', () => {
  it('publishes at once to a connected, subscribed device: QoS 1 topic and {method, params, expiresAt}', async () => {
    const f = await setup();
    f.connected.add('loa-01'); // connected before the service saw it: no warm-up
    const r = await f.rpc.send('loa-01', 'speaker.setVolume', { volume: 65 }, { expiresAt: f.clock.t + 60_000 });
    expect(r.state).toBe('sent');
    await flushMicrotasks();
    expect(f.published).toEqual([{ topic: `v1/devices/loa-01/rpc/request/${r.requestId}`, body: { method: 'speaker.setVolume', params: { volume: 65 }, expiresAt: f.clock.t + 60_000 } }]);
    expect((await f.rpc.get(r.requestId))).toMatchObject({ state: 'sent', sentAt: f.clock.t, deviceId: 'loa-01' });
  });

  it('holds commands for an offline device and replays them in order after it reconnects and subscribes; expired ones are not sent', async () => {
    const f = await setup();
    const exp = f.clock.t + 10_000;
    const a = await f.rpc.send('loa-01', 'broadcast.play', { broadcastId: 'a' }, { expiresAt: exp });
    const b = await f.rpc.send('loa-01', 'broadcast.stop', { broadcastId: 'a' }, { expiresAt: f.clock.t + 1000 });
    const c = await f.rpc.send('loa-01', 'speaker.setVolume', { volume: 10 }, { expiresAt: exp });
    expect([a.state, b.state, c.state]).toEqual(['queued', 'queued', 'queued']);
    const expired: Array<RpcEvents['expired']> = [];
    f.rpc.on('expired', (e) => expired.push(e));
    f.clock.t += 2000;
    f.rpc.sweep();
    expect(expired.map((e) => e.request.id)).toEqual([b.requestId]);
    // Connected but not yet known to be subscribed: a new command waits too.
    connect(f, 'loa-01');
    const d = await f.rpc.send('loa-01', 'speaker.setVolume', { volume: 20 }, { expiresAt: exp });
    expect(d.state).toBe('queued');
    expect(f.rpc.isReady('loa-01')).toBe(false);
    await flushMicrotasks();
    expect(f.published).toEqual([]);
    // Its first message (status with extras → attributes) shows the subscription exists.
    f.bus.emit('attributes', { deviceId: 'loa-01', attributes: { status: { firmware: '1' } } });
    await flushMicrotasks();
    expect(f.published.map((p) => p.topic.split('/').pop())).toEqual([a.requestId, c.requestId, d.requestId]);
    expect((await f.rpc.list('loa-01')).map((r) => r.state)).toEqual(['sent', 'expired', 'sent', 'sent']);
  });

  it('after the ready delay without any message, held commands are sent anyway', async () => {
    const f = await setup();
    await f.rpc.stop();
    const rpc = new RpcService({ ...rpcStateOn(f.db), broker: { isConnected: (d) => f.connected.has(d), publish: async (t) => { f.published.push({ topic: t, body: {} }); } },
      bus: f.bus, logger: createLogger('silent'), readyDelayMs: 30 });
    f.rpc = rpc;
    await rpc.start();
    await rpc.send('loa-02', 'x', {}, { expiresAt: Date.now() + 60_000 });
    connect(f, 'loa-02');
    await new Promise((r) => setTimeout(r, 80));
    expect(f.published).toHaveLength(1);
  });

  it('re-sends a sent but unanswered command after a reconnect (it may have been lost); never an answered one', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    const a = await f.rpc.send('loa-01', 'broadcast.play', { broadcastId: 'a' }, { expiresAt: f.clock.t + 60_000 });
    const b = await f.rpc.send('loa-01', 'broadcast.play', { broadcastId: 'b' }, { expiresAt: f.clock.t + 60_000 });
    f.bus.emit('rpc.response', { deviceId: 'loa-01', requestId: b.requestId, payload: { status: 'accepted' }, at: f.clock.t });
    f.connected.delete('loa-01');
    f.bus.emit('status', { deviceId: 'loa-01', area: 'p', online: false, at: f.clock.t });
    await flushMicrotasks();
    f.published.length = 0;
    const sent: Array<RpcEvents['sent']> = [];
    f.rpc.on('sent', (e) => sent.push(e));
    connect(f, 'loa-01');
    f.bus.emit('telemetry', { deviceId: 'loa-01', area: 'p', kind: 'speaker', ts: 0, values: {} });
    await flushMicrotasks();
    expect(f.published.map((p) => p.topic.split('/').pop())).toEqual([a.requestId]);
    expect(sent[0]).toMatchObject({ resend: true });
  });

  it('applies the params hook at every send (fresh signed URLs) but stores the template', async () => {
    let n = 0;
    const f = await setup({ 'broadcast.play': (p) => ({ ...p, url: `u${++n}` }) });
    f.connected.add('loa-01');
    const r = await f.rpc.send('loa-01', 'broadcast.play', { broadcastId: 'a' }, { expiresAt: f.clock.t + 60_000 });
    f.connected.delete('loa-01');
    f.bus.emit('status', { deviceId: 'loa-01', area: 'p', online: false, at: f.clock.t });
    connect(f, 'loa-01');
    f.bus.emit('attributes', { deviceId: 'loa-01', attributes: {} });
    await flushMicrotasks();
    expect(f.published.map((p) => p.body.params.url)).toEqual(['u1', 'u2']);
    expect((await f.rpc.get(r.requestId))!.params).toEqual({ broadcastId: 'a' });
  });

  it('matches responses to the request and device; refuses unknown ids, other devices\' requests and never-sent requests', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    const sent = await f.rpc.send('loa-01', 'broadcast.play', { broadcastId: 'a' }, { expiresAt: f.clock.t + 60_000 });
    const held = await f.rpc.send('loa-02', 'broadcast.play', { broadcastId: 'a' }, { expiresAt: f.clock.t + 60_000 });
    const responses: Array<RpcEvents['response']> = [];
    const refused: Array<RpcEvents['refused']> = [];
    f.rpc.onResponse((e) => responses.push(e));
    f.rpc.on('refused', (e) => refused.push(e));
    const respond = (deviceId: string, requestId: string, payload: Record<string, unknown>) =>
      f.bus.emit('rpc.response', { deviceId, requestId, payload, at: f.clock.t });
    respond('loa-02', 'r_nonexistent', { status: 'accepted' });
    respond('loa-02', sent.requestId, { status: 'rejected' });
    respond('loa-02', held.requestId, { status: 'accepted' });
    // Held commands are refused from memory at once; an unknown id costs a database read first.
    expect(refused.map((r) => r.reason)).toEqual(['wrong_device', 'never_sent']);
    await f.rpc.settled();
    expect(refused.map((r) => r.reason)).toEqual(['wrong_device', 'never_sent', 'unknown_request']);
    expect(responses).toEqual([]);
    expect(await metric(f, 'keng_rpc_responses_refused_total')).toBe(3);
    expect((await f.rpc.get(sent.requestId))!.state).toBe('sent');
    respond('loa-01', sent.requestId, { status: 'accepted', detail: 'queued' });
    respond('loa-01', sent.requestId, { status: 'accepted' });
    expect(responses.map((r) => [r.status, r.duplicate])).toEqual([['accepted', false], ['accepted', true]]);
    expect(responses[0]!.detail).toBe('queued');
    expect((await f.rpc.get(sent.requestId))).toMatchObject({ state: 'answered', response: { status: 'accepted', detail: 'queued' } });
  });

  it('expires a sent but unanswered command after expiresAt + grace; cancel works only while queued', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    const s = await f.rpc.send('loa-01', 'broadcast.play', {}, { expiresAt: f.clock.t + 1000 });
    const q = await f.rpc.send('loa-02', 'broadcast.play', {}, { expiresAt: f.clock.t + 60_000 });
    expect((await f.rpc.cancel(s.requestId))).toBe(false);
    expect((await f.rpc.cancel(q.requestId))).toBe(true);
    expect((await f.rpc.get(q.requestId))!.state).toBe('cancelled');
    f.clock.t += 1500;
    f.rpc.sweep();
    expect((await f.rpc.get(s.requestId))!.state).toBe('sent');
    f.clock.t += 1000;
    f.rpc.sweep();
    expect((await f.rpc.get(s.requestId))!.state).toBe('expired');
    expect(() => f.rpc.send('loa-01', 'x', {}, { expiresAt: f.clock.t - 1 })).toThrow(/expiresAt/);
  });

  it('a device\'s answer is settled (acknowledged) only once its window commits; a duplicate before that commit is told from memory', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    const a = await f.rpc.send('loa-01', 'broadcast.play', { broadcastId: 'a' }, { expiresAt: f.clock.t + 60_000 });
    const responses: Array<RpcEvents['response']> = [];
    f.rpc.onResponse((e) => responses.push(e));
    f.bus.emit('rpc.response', { deviceId: 'loa-01', requestId: a.requestId, payload: { status: 'accepted' }, at: f.clock.t });
    const settled = f.rpc.settled();
    const row = () => f.db.prepare('SELECT state FROM rpc_requests WHERE id = ?').get(a.requestId) as { state: string };
    expect(row().state).toBe('sent'); // decided and reported, not committed yet
    f.bus.emit('rpc.response', { deviceId: 'loa-01', requestId: a.requestId, payload: { status: 'accepted' }, at: f.clock.t });
    expect(responses.map((r) => r.duplicate)).toEqual([false, true]);
    await settled;
    expect(row().state).toBe('answered');
  });

  it('a failed window: settled() rejects (no PUBACK), nothing of it is published, and the commands it touched are reloaded from the database', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    const a = await f.rpc.send('loa-01', 'broadcast.play', { broadcastId: 'a' }, { expiresAt: f.clock.t + 60_000 });
    await flushMicrotasks();
    f.published.length = 0;
    f.fail.n = 1;
    const b = f.rpc.send('loa-01', 'broadcast.play', { broadcastId: 'b' }, { expiresAt: f.clock.t + 60_000 });
    f.bus.emit('rpc.response', { deviceId: 'loa-01', requestId: a.requestId, payload: { status: 'accepted' }, at: f.clock.t });
    await expect(f.rpc.settled()).rejects.toThrow(/disk I\/O/);
    await expect(b).rejects.toThrow(/disk I\/O/);
    await flushMicrotasks();
    expect(f.published).toEqual([]);
    expect(f.db.prepare('SELECT id, state FROM rpc_requests ORDER BY rowid').all()).toEqual([{ id: a.requestId, state: 'sent' }]);
    // Reloaded as the database holds it: the device's resent answer is recorded this time.
    expect((await f.rpc.get(a.requestId))!.state).toBe('sent');
    f.bus.emit('rpc.response', { deviceId: 'loa-01', requestId: a.requestId, payload: { status: 'accepted' }, at: f.clock.t });
    await f.rpc.settled();
    expect(f.db.prepare('SELECT state FROM rpc_requests WHERE id = ?').get(a.requestId)).toEqual({ state: 'answered' });
  });
});

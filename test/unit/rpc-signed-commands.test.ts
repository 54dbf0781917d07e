/**
 * RpcService signs broadcast.play and broadcast.stop (firmware-protocols/device-protocol.md §11.6):
 * at every publish (first send, re-send after a reconnect, each device of a sendMany batch), over
 * exactly the params published after the params hook, with the device id and the topic's request
 * id inside; other methods go unsigned; a signer that fails keeps the command queued. With a
 * signer that signs on the thread pool, a batch's signatures after the first are made there, and
 * each device still gets its commands in order.
 */
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus, Metrics, createLogger } from '../../src/core/index.js';
import { MIGRATIONS } from '../../src/storage/state/migrations.js';
import { RPC_DEVICE_INDEX_MIGRATION, RPC_MIGRATION, RPC_TB_IDS_MIGRATION, RpcService, type CommandSigner } from '../../src/rpc/index.js';
import { keyFromSeed, signCommand, signCommandAsync, verifySigned } from '../../src/rpc/command-keys/index.js';
import { rpcStateOn } from '../helpers/rpc-window.js';

const key = keyFromSeed(Buffer.alloc(32, 9).toString('base64url'));
const next = keyFromSeed(Buffer.alloc(32, 10).toString('base64url'));

interface Fixture {
  rpc: RpcService; bus: EventBus; clock: { t: number; now(): number }; connected: Set<string>;
  published: Array<{ topic: string; body: any }>; db: Database.Database;
  signer: { active: typeof key; fail: boolean; failAsync: boolean; sync: number; async: number };
}
let fx: Fixture | undefined;
afterEach(async () => { await fx?.rpc.stop(); fx?.db.close(); fx = undefined; });

async function setup(o: { pooled?: boolean } = {}): Promise<Fixture> {
  const db = new Database(':memory:');
  db.exec(MIGRATIONS[0]!.up);
  db.exec(RPC_MIGRATION.up);
  db.exec(RPC_TB_IDS_MIGRATION.up);
  db.exec(RPC_DEVICE_INDEX_MIGRATION.up);
  db.exec(`INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p', 'P', 'province', NULL, 0)`);
  for (const id of ['loa-01', 'loa-02', 'loa-03']) {
    db.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at) VALUES (?, 'speaker', ?, 'p', 'x', ?, 'x', 0)`).run(id, id, `t-${id}`);
  }
  const bus = new EventBus();
  const clock = { t: 1_000_000, now() { return this.t; } };
  const connected = new Set<string>();
  const published: Fixture['published'] = [];
  const state = { active: key, fail: false, failAsync: false, sync: 0, async: 0 };
  const signer: CommandSigner = { sign: (c) => { state.sync++; if (state.fail) throw new Error('no key'); return signCommand(state.active, c); } };
  if (o.pooled) {
    signer.signAsync = async (c) => { state.async++; if (state.failAsync) throw new Error('pool failed'); return signCommandAsync(state.active, c); };
  }
  let n = 0;
  const rpc = new RpcService({
    ...rpcStateOn(db), bus, logger: createLogger('silent'), metrics: new Metrics({ defaultMetrics: false }), clock, readyDelayMs: 60_000, signer,
    broker: { isConnected: (d) => connected.has(d), publish: async (topic, p) => { published.push({ topic, body: JSON.parse(String(p)) }); } },
    paramsHooks: { 'broadcast.play': (params) => ({ ...params, url: `https://keng.test/m?sig=${++n}` }) },
  });
  await rpc.start();
  fx = { rpc, bus, clock, connected, published, db, signer: state };
  return fx;
}

const tick = () => new Promise((r) => setImmediate(r));

/** Checks one published request: signature valid with `k`, `signed` = the published command on that topic. */
function expectSigned(p: { topic: string; body: any }, k = key): Record<string, unknown> {
  const [, , deviceId, , , requestId] = p.topic.split('/');
  expect(p.body.kid).toBe(k.kid);
  expect(verifySigned(k.publicKey, p.body.signed, p.body.sig)).toBe(true);
  const inner = JSON.parse(p.body.signed) as Record<string, unknown>;
  expect(inner).toEqual({ deviceId, requestId, method: p.body.method, params: p.body.params, expiresAt: p.body.expiresAt });
  expect(Object.keys(inner)).toEqual(['deviceId', 'requestId', 'method', 'params', 'expiresAt']);
  return inner;
}

function reconnect(f: Fixture, deviceId: string): void {
  f.connected.delete(deviceId);
  f.bus.emit('status', { deviceId, area: 'p', online: false, at: f.clock.t });
  f.connected.add(deviceId);
  f.bus.emit('status', { deviceId, area: 'p', online: true, at: f.clock.t });
  f.bus.emit('attributes', { deviceId, attributes: {} });
}

describe('RpcService with a command signer', () => {
  it('signs broadcast.play (over the params after the hook) and broadcast.stop; speaker.setVolume goes unsigned', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    const exp = f.clock.t + 60_000;
    await f.rpc.send('loa-01', 'broadcast.play', { broadcastId: 'b1' }, { expiresAt: exp });
    await f.rpc.send('loa-01', 'broadcast.stop', { broadcastId: 'b1' }, { expiresAt: exp });
    await f.rpc.send('loa-01', 'speaker.setVolume', { volume: 40 }, { expiresAt: exp });
    await tick();
    expect(f.published).toHaveLength(3);
    const play = expectSigned(f.published[0]!);
    expect(play.params).toEqual({ broadcastId: 'b1', url: 'https://keng.test/m?sig=1' });
    expect(Object.keys(f.published[0]!.body)).toEqual(['method', 'params', 'expiresAt', 'signed', 'sig', 'kid']);
    expectSigned(f.published[1]!);
    expect(f.published[2]!.body).toEqual({ method: 'speaker.setVolume', params: { volume: 40 }, expiresAt: exp });
  });

  it('signs again at the re-send after a reconnect: same request id, fresh params, the key active at that moment', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    const r = await f.rpc.send('loa-01', 'broadcast.play', { broadcastId: 'b1' }, { expiresAt: f.clock.t + 60_000 });
    await tick();
    f.signer.active = next; // rotated while the command was out
    reconnect(f, 'loa-01');
    await tick();
    expect(f.published).toHaveLength(2);
    const first = expectSigned(f.published[0]!, key);
    const again = expectSigned(f.published[1]!, next);
    expect([first.requestId, again.requestId]).toEqual([r.requestId, r.requestId]);
    expect(again.params).toEqual({ broadcastId: 'b1', url: 'https://keng.test/m?sig=2' });
  });

  it('sendMany: one signature per device, each naming its device and request id, over the batch\'s params', async () => {
    const f = await setup();
    for (const d of ['loa-01', 'loa-02', 'loa-03']) f.connected.add(d);
    const res = await f.rpc.sendMany(['loa-01', 'loa-02', 'loa-03'], 'broadcast.play', { broadcastId: 'b2' }, { expiresAt: f.clock.t + 60_000 });
    await tick();
    expect(res.map((x) => x.state)).toEqual(['sent', 'sent', 'sent']);
    const inner = f.published.map((p) => expectSigned(p));
    expect(inner.map((i) => [i.deviceId, i.requestId])).toEqual(res.map((x, i) => [`loa-0${i + 1}`, x.requestId]));
    expect(new Set(inner.map((i) => JSON.stringify(i.params))).size).toBe(1); // the hook ran once
    expect(new Set(f.published.map((p) => p.body.sig)).size).toBe(3);
  });

  it('a signer that fails keeps the commands queued (never published unsigned); they go out signed once it works', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    f.connected.add('loa-02');
    f.signer.fail = true;
    const one = await f.rpc.send('loa-01', 'broadcast.stop', {}, { expiresAt: f.clock.t + 60_000 });
    const many = await f.rpc.sendMany(['loa-01', 'loa-02'], 'broadcast.play', { broadcastId: 'b3' }, { expiresAt: f.clock.t + 60_000 });
    await tick();
    expect(one.state).toBe('queued');
    expect(many.map((x) => x.state)).toEqual(['queued', 'queued']);
    expect(f.published).toEqual([]);
    f.signer.fail = false;
    reconnect(f, 'loa-01');
    await tick();
    expect(f.published.map((p) => p.topic.split('/').pop())).toEqual([one.requestId, many[0]!.requestId]);
    for (const p of f.published) expectSigned(p);
  });

  it('sendMany with a signer that signs on the thread pool: the first signed at once, the rest there; each device\'s commands in order; a failure there requeues', async () => {
    const f = await setup({ pooled: true });
    const ids = ['loa-01', 'loa-02', 'loa-03'];
    for (const d of ids) f.connected.add(d);
    const exp = f.clock.t + 60_000;
    const res = await f.rpc.sendMany(ids, 'broadcast.play', { broadcastId: 'b4' }, { expiresAt: exp });
    const stop = await f.rpc.send('loa-03', 'broadcast.stop', { broadcastId: 'b4' }, { expiresAt: exp });
    expect(res.map((x) => x.state)).toEqual(['sent', 'sent', 'sent']);
    expect([f.signer.sync, f.signer.async]).toEqual([2, 2]); // the batch's first and the stop; two on the pool
    await until(() => f.published.length === 4);
    const inner = f.published.map((p) => expectSigned(p));
    const order = inner.map((i) => i.requestId);
    expect(new Set(order)).toEqual(new Set([...res.map((x) => x.requestId), stop.requestId]));
    expect(order.indexOf(stop.requestId)).toBeGreaterThan(order.indexOf(res[2]!.requestId)); // sent after the play, published after it

    f.published.length = 0;
    f.signer.failAsync = true;
    const again = await f.rpc.sendMany(ids, 'broadcast.play', { broadcastId: 'b5' }, { expiresAt: exp });
    const state = f.db.prepare('SELECT state FROM rpc_requests WHERE id = ?');
    await until(() => (state.get(again[2]!.requestId) as { state: string }).state === 'queued');
    expect((state.get(again[1]!.requestId) as { state: string }).state).toBe('queued');
    expect(f.published.map((p) => p.topic.split('/').pop())).toEqual([again[0]!.requestId]); // nothing unsigned went out
    f.signer.failAsync = false;
    reconnect(f, 'loa-02');
    const topicIds = () => f.published.map((p) => p.topic.split('/').pop());
    await until(() => topicIds().includes(again[1]!.requestId)); // with b4's unanswered play, re-sent too
    for (const p of f.published) expectSigned(p);
  });
});

/** Thread-pool signatures take real time: polls until `ok` (at most 5 s). */
async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(ok()).toBe(true);
}

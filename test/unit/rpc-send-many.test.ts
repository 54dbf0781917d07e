/**
 * RpcService.sendMany (a broadcast's commands in one batch) and the one-statement answer path:
 * rows stored directly as sent/queued, one payload for the batch, the caller's rows in the same
 * transaction before anything is published, a sent-but-never-published command replayed on
 * reconnect (crash between commit and publish), and answers (first, duplicate, wrong device,
 * late after expiry) handled as before.
 */
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus, Metrics, createLogger } from '../../src/core/index.js';
import { UrgentOutbound } from '../../src/core/urgent.js';
import { MIGRATIONS } from '../../src/storage/state/migrations.js';
import { RPC_DEVICE_INDEX_MIGRATION, RPC_MIGRATION, RPC_TB_IDS_MIGRATION, RpcService, type RpcEvents } from '../../src/rpc/index.js';
import { rpcStateOn } from '../helpers/rpc-window.js';

interface Fixture {
  rpc: RpcService; bus: EventBus; clock: { t: number; now(): number }; connected: Set<string>;
  published: Array<{ topic: string; body: any }>; db: Database.Database; hookCalls: number;
}
let fx: Fixture | undefined;
afterEach(async () => { await fx?.rpc.stop(); fx?.db.close(); fx = undefined; });

async function setup(db = new Database(':memory:'), migrate = true, urgent?: UrgentOutbound): Promise<Fixture> {
  if (migrate) {
    db.exec(MIGRATIONS[0]!.up);
    db.exec(RPC_MIGRATION.up);
    db.exec(RPC_TB_IDS_MIGRATION.up);
    db.exec(RPC_DEVICE_INDEX_MIGRATION.up);
    db.exec(`INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p', 'P', 'province', NULL, 0)`);
    for (const id of ['loa-01', 'loa-02', 'loa-03']) {
      db.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at) VALUES (?, 'speaker', ?, 'p', 'x', ?, 'x', 0)`).run(id, id, `t-${id}`);
    }
    db.exec('CREATE TABLE caller_rows (request_id TEXT NOT NULL)');
  }
  const bus = new EventBus();
  const clock = { t: 1_000_000, now() { return this.t; } };
  const connected = new Set<string>();
  const published: Fixture['published'] = [];
  const rpc = new RpcService({
    ...rpcStateOn(db), bus, logger: createLogger('silent'), metrics: new Metrics({ defaultMetrics: false }), clock, readyDelayMs: 60_000,
    broker: { isConnected: (d) => connected.has(d), publish: async (topic, p) => { published.push({ topic, body: JSON.parse(String(p)) }); } },
    paramsHooks: { 'broadcast.play': (params) => { f.hookCalls++; return { ...params, url: `https://keng.test/x?sig=${f.hookCalls}` }; } },
    ...(urgent ? { urgent } : {}),
  });
  const f: Fixture = { rpc, bus, clock, connected, published, db, hookCalls: 0 };
  await rpc.start();
  fx = f;
  return f;
}

const tick = () => new Promise((r) => setImmediate(r));
const rows = (f: Fixture) => f.db.prepare('SELECT id, device_id, state, sent_at FROM rpc_requests ORDER BY rowid').all() as Array<{ id: string; device_id: string; state: string; sent_at: number | null }>;

describe('RpcService.sendMany', () => {
  it('stores each command directly as sent (ready device) or queued, runs the hook once, publishes one payload per ready device, no sent events', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    f.connected.add('loa-03');
    const sent: Array<RpcEvents['sent']> = [];
    f.rpc.on('sent', (e) => sent.push(e));
    const exp = f.clock.t + 60_000;
    let seen: readonly unknown[] = [];
    const res = await f.rpc.sendMany(['loa-01', 'loa-02', 'loa-03'], 'broadcast.play', { broadcastId: 'b1' }, { expiresAt: exp }, (r) => {
      seen = r.map((x) => ({ ...x }));
      // Called with the results before anything is stored or published.
      expect(rows(f)).toHaveLength(0);
      expect(f.published).toHaveLength(0);
    });
    expect(seen).toEqual(res);
    expect(res.map((r) => r.state)).toEqual(['sent', 'queued', 'sent']);
    expect(rows(f).map((r) => [r.device_id, r.state, r.sent_at])).toEqual([['loa-01', 'sent', f.clock.t], ['loa-02', 'queued', null], ['loa-03', 'sent', f.clock.t]]);
    expect(f.hookCalls).toBe(1);
    await tick();
    expect(f.published.map((p) => p.topic)).toEqual([`v1/devices/loa-01/rpc/request/${res[0]!.requestId}`, `v1/devices/loa-03/rpc/request/${res[2]!.requestId}`]);
    expect(f.published[0]!.body).toEqual({ method: 'broadcast.play', params: { broadcastId: 'b1', url: 'https://keng.test/x?sig=1' }, expiresAt: exp });
    expect(f.published[1]!.body).toEqual(f.published[0]!.body);
    expect(sent).toEqual([]);
    // The queued one goes out (with its own fresh params) when its device is back, as a 'sent' event.
    f.connected.add('loa-02');
    f.bus.emit('status', { deviceId: 'loa-02', area: 'p', online: true, at: f.clock.t });
    f.bus.emit('telemetry', { deviceId: 'loa-02', area: 'p', values: {}, at: f.clock.t } as never);
    await tick();
    expect(sent.map((e) => [e.request.id, e.resend])).toEqual([[res[1]!.requestId, true]]);
    expect(f.published.at(-1)!.body.params.url).toBe('https://keng.test/x?sig=2');
  });

  it('a throw in persist stores and publishes nothing; bad arguments store nothing', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    expect(() => f.rpc.sendMany(['loa-01'], 'broadcast.play', { broadcastId: 'b1' }, { expiresAt: f.clock.t + 1000 }, () => {
      f.db.prepare('INSERT INTO caller_rows VALUES (?)').run('x');
      throw new Error('caller failed');
    })).toThrow('caller failed');
    expect(() => f.rpc.sendMany(['loa-01'], 'broadcast.play', { broadcastId: 'b1' }, { expiresAt: f.clock.t })).toThrow(/not in the future/);
    await tick();
    expect(rows(f)).toEqual([]);
    // The caller's own writes are its own (the broadcast executor makes them in its transaction).
    expect(f.db.prepare('SELECT COUNT(*) FROM caller_rows').pluck().get()).toBe(1);
    expect(f.published).toEqual([]);
  });

  it('a command stored as sent but never published (crash after the commit) is published again when the device reconnects', async () => {
    const file = new Database(':memory:');
    const f = await setup(file);
    f.connected.add('loa-01');
    const [r] = await f.rpc.sendMany(['loa-01'], 'broadcast.play', { broadcastId: 'b1' }, { expiresAt: f.clock.t + 60_000 });
    await f.rpc.stop(); // "crash": the chained publish never ran
    f.published.length = 0;
    fx = undefined;
    const g = await setup(file, false);
    g.connected.add('loa-01');
    g.bus.emit('status', { deviceId: 'loa-01', area: 'p', online: true, at: g.clock.t });
    g.bus.emit('telemetry', { deviceId: 'loa-01', area: 'p', values: {}, at: g.clock.t } as never);
    await tick();
    expect(g.published.map((p) => p.topic)).toEqual([`v1/devices/loa-01/rpc/request/${r!.requestId}`]);
  });
});

describe('RpcService.sendMany urgent (an emergency alert)', () => {
  it('holds answers until every command of the batch is published; a normal batch holds nothing', async () => {
    const urgent = new UrgentOutbound(10_000);
    const f = await setup(undefined, true, urgent);
    for (const d of ['loa-01', 'loa-02', 'loa-03']) f.connected.add(d);
    await f.rpc.sendMany(['loa-01', 'loa-02'], 'broadcast.play', { broadcastId: 'b0' }, { expiresAt: f.clock.t + 60_000 });
    expect(urgent.waiting).toBeNull();
    await tick();
    f.published.length = 0;
    const done = f.rpc.sendMany(['loa-01', 'loa-02', 'loa-03'], 'broadcast.play', { broadcastId: 'b1' }, { expiresAt: f.clock.t + 60_000, urgent: true });
    const gate = urgent.waiting;
    expect(gate).not.toBeNull(); // held from the send on, before its commit
    expect(f.published).toHaveLength(0); // published after the commit
    await gate;
    await done;
    expect(f.published.map((p) => p.topic.split('/')[2])).toEqual(['loa-01', 'loa-02', 'loa-03']);
    expect(urgent.waiting).toBeNull();
  });
});

describe('RpcService answers', () => {
  it('first answer, duplicate, an answer from another device, and a late answer to an expired request', async () => {
    const f = await setup();
    f.connected.add('loa-01');
    f.connected.add('loa-02');
    const responses: Array<RpcEvents['response']> = [];
    const refused: Array<RpcEvents['refused']> = [];
    f.rpc.on('response', (e) => responses.push(e));
    f.rpc.on('refused', (e) => refused.push(e));
    const [a, b] = await f.rpc.sendMany(['loa-01', 'loa-02'], 'broadcast.play', { broadcastId: 'b1' }, { expiresAt: f.clock.t + 1000 });
    const answer = (deviceId: string, requestId: string, payload: Record<string, unknown>) => f.bus.emit('rpc.response', { deviceId, requestId, payload, at: f.clock.t });
    answer('loa-02', a!.requestId, { status: 'accepted' });
    expect(refused.map((e) => e.reason)).toEqual(['wrong_device']);
    answer('loa-01', a!.requestId, { status: 'accepted', detail: 'queued 1' });
    answer('loa-01', a!.requestId, { status: 'accepted', detail: 'queued 1' });
    expect(responses.map((e) => [e.request.id, e.request.state, e.status, e.detail, e.duplicate])).toEqual([
      [a!.requestId, 'answered', 'accepted', 'queued 1', false], [a!.requestId, 'answered', 'accepted', 'queued 1', true]]);
    expect(responses[0]!.request).toMatchObject({ deviceId: 'loa-01', method: 'broadcast.play', params: { broadcastId: 'b1' }, sentAt: f.clock.t, answeredAt: f.clock.t, response: { status: 'accepted', detail: 'queued 1' } });
    expect((await f.rpc.get(a!.requestId))).toMatchObject({ state: 'answered', response: { status: 'accepted', detail: 'queued 1' } });
    f.clock.t += 1000 + 30_000; // expiresAt + the default answer grace
    f.rpc.sweep();
    expect((await f.rpc.get(b!.requestId))?.state).toBe('expired');
    answer('loa-02', b!.requestId, { status: 'rejected' });
    expect(responses.at(-1)).toMatchObject({ status: 'rejected', duplicate: false, request: { id: b!.requestId, state: 'answered' } });
    expect((await f.rpc.get(b!.requestId))?.state).toBe('answered');
  });
});

/**
 * Integer request ids for access-token sessions (device protocol §13.2): commands to a device on
 * its ThingsBoard token go out as `rpc/request/{n}`, n stored in the command's row, growing per
 * device and kept across a restart, wrapping within int32; an answer on `rpc/response/{n}` maps
 * back to Keng's id (also after a reconnect with a re-send); signed commands carry n as requestId.
 */
import Database from 'better-sqlite3';
import { generateKeyPairSync, sign } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus, Metrics, createLogger } from '../../src/core/index.js';
import { MIGRATIONS } from '../../src/storage/state/migrations.js';
import { RPC_DEVICE_INDEX_MIGRATION, RPC_MIGRATION, RPC_TB_IDS_MIGRATION, RpcService, type CommandSigner, type RpcEvents } from '../../src/rpc/index.js';
import { rpcStateOn } from '../helpers/rpc-window.js';

interface Fx {
  rpc: RpcService; bus: EventBus; db: Database.Database; clock: { t: number; now(): number };
  sessions: Map<string, 'secret' | 'token'>; published: Array<{ topic: string; body: any }>;
}
const open: Fx[] = [];
afterEach(async () => { for (const f of open.splice(0)) await f.rpc.stop(); });

function migrate(): Database.Database {
  const db = new Database(':memory:');
  db.exec(MIGRATIONS[0]!.up);
  db.exec(RPC_MIGRATION.up);
  db.exec(RPC_DEVICE_INDEX_MIGRATION.up);
  db.exec(RPC_TB_IDS_MIGRATION.up);
  db.exec(`INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p', 'P', 'province', NULL, 0)`);
  for (const id of ['loa-01', 'loa-02']) {
    db.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at) VALUES (?, 'speaker', ?, 'p', 'x', ?, 'x', 0)`).run(id, id, `t-${id}`);
  }
  return db;
}

const { privateKey } = generateKeyPairSync('ed25519');
const signer: CommandSigner = {
  sign: (cmd) => {
    const signed = JSON.stringify({ deviceId: cmd.deviceId, requestId: cmd.requestId, method: cmd.method, params: cmd.params, expiresAt: cmd.expiresAt });
    return { signed, sig: sign(null, Buffer.from(signed), privateKey).toString('base64url'), kid: 'k1' };
  },
};

async function setup(db = migrate(), sessions = new Map<string, 'secret' | 'token'>(), withSigner = false): Promise<Fx> {
  const bus = new EventBus();
  const clock = { t: 1_000_000, now() { return this.t; } };
  const published: Fx['published'] = [];
  const rpc = new RpcService({
    ...rpcStateOn(db), bus, logger: createLogger('silent'), metrics: new Metrics({ defaultMetrics: false }), clock, readyDelayMs: 60_000,
    broker: {
      isConnected: (d) => sessions.has(d), credentialOf: (d) => sessions.get(d) ?? null,
      publish: async (topic, p) => { published.push({ topic, body: JSON.parse(String(p)) }); },
    },
    ...(withSigner ? { signer } : {}),
  });
  await rpc.start();
  const f = { rpc, bus, db, clock, sessions, published };
  open.push(f);
  return f;
}

const tick = () => new Promise((r) => setImmediate(r));
const answer = (f: Fx, deviceId: string, requestId: string, payload: Record<string, unknown> = { status: 'ok', result: true }) =>
  f.bus.emit('rpc.response', { deviceId, requestId, payload, at: f.clock.t });

describe('RpcService: integer request ids of access-token sessions', () => {
  it('publishes 1, 2, … per token device (Keng ids for a secret session), stores n, and maps an answer on n back to the command', async () => {
    const f = await setup(undefined, new Map([['loa-01', 'token'], ['loa-02', 'secret']]));
    const responses: Array<RpcEvents['response']> = [];
    const refused: Array<RpcEvents['refused']> = [];
    f.rpc.on('response', (e) => responses.push(e));
    f.rpc.on('refused', (e) => refused.push(e));
    const a = await f.rpc.send('loa-01', 'speaker.setVolume', { volume: 10 }, { expiresAt: f.clock.t + 60_000 });
    const many = await f.rpc.sendMany(['loa-01', 'loa-02'], 'broadcast.play', { broadcastId: 'b1' }, { expiresAt: f.clock.t + 60_000 });
    await tick();
    expect(f.published.map((p) => p.topic).sort()).toEqual([
      'v1/devices/loa-01/rpc/request/1', 'v1/devices/loa-01/rpc/request/2', `v1/devices/loa-02/rpc/request/${many[1]!.requestId}`,
    ]);
    expect((await f.rpc.get(a.requestId))!.tbId).toBe(1);
    expect((await f.rpc.get(many[0]!.requestId))!.tbId).toBe(2);
    expect((await f.rpc.get(many[1]!.requestId))!.tbId).toBeNull();

    answer(f, 'loa-01', '2');
    answer(f, 'loa-02', '1'); // another device's integer id: not this device's command
    expect(responses.map((r) => r.request.id)).toEqual([many[0]!.requestId]);
    expect((await f.rpc.get(many[0]!.requestId))!.state).toBe('answered');
    await f.rpc.settled(); // an id memory does not hold is looked up in the database
    expect(refused).toMatchObject([{ deviceId: 'loa-02', requestId: '1', reason: 'unknown_request' }]);
  });

  it('a command held for an offline device gets its n when re-sent to a token session; ids keep growing after a restart; an answer after the restart maps', async () => {
    const db = migrate();
    const sessions = new Map<string, 'secret' | 'token'>();
    const f = await setup(db, sessions);
    const held = await f.rpc.send('loa-01', 'speaker.setVolume', { volume: 20 }, { expiresAt: f.clock.t + 600_000 });
    expect(held.state).toBe('queued');
    sessions.set('loa-01', 'token');
    f.bus.emit('attributes', { deviceId: 'loa-01', attributes: {}, at: f.clock.t } as never); // first message: subscribed
    f.bus.emit('status', { deviceId: 'loa-01', online: true, at: f.clock.t } as never);
    f.bus.emit('telemetry', { deviceId: 'loa-01' } as never);
    await tick();
    expect(f.published.map((p) => p.topic)).toEqual(['v1/devices/loa-01/rpc/request/1']);
    await f.rpc.stop();

    const g = await setup(db, sessions);
    const next = await g.rpc.send('loa-01', 'speaker.setVolume', { volume: 30 }, { expiresAt: g.clock.t + 600_000 });
    await tick();
    // The unanswered one is sent again (connected at start) with the id it already has, then the new one.
    expect(g.published.map((p) => p.topic)).toEqual(['v1/devices/loa-01/rpc/request/1', 'v1/devices/loa-01/rpc/request/2']);
    const got: string[] = [];
    g.rpc.on('response', (e) => got.push(e.request.id));
    answer(g, 'loa-01', '1');
    answer(g, 'loa-01', '2');
    expect(got).toEqual([held.requestId, next.requestId]);
  });

  it('wraps from 2^31-1 to 1 (atoi in the Arduino SDK), freeing the id from the old command that held it', async () => {
    const f = await setup(undefined, new Map([['loa-01', 'token']]));
    const old = await f.rpc.send('loa-01', 'speaker.setVolume', { volume: 1 }, { expiresAt: f.clock.t + 60_000 });
    expect((await f.rpc.get(old.requestId))!.tbId).toBe(1);
    await f.rpc.stop();
    f.db.prepare('UPDATE rpc_tb_ids SET last_id = ? WHERE device_id = ?').run(2_147_483_646, 'loa-01');
    const g = await setup(f.db, f.sessions);
    const x = await g.rpc.send('loa-01', 'speaker.setVolume', { volume: 2 }, { expiresAt: g.clock.t + 60_000 });
    const y = await g.rpc.send('loa-01', 'speaker.setVolume', { volume: 3 }, { expiresAt: g.clock.t + 60_000 });
    await tick();
    // The unanswered old command is sent again at start (still id 1), then the two new ones.
    expect(g.published.map((p) => p.topic.split('/').at(-1))).toEqual(['1', '2147483647', '1']);
    expect((await g.rpc.get(x.requestId))!.tbId).toBe(2_147_483_647);
    expect((await g.rpc.get(y.requestId))!.tbId).toBe(1);
    expect((await g.rpc.get(old.requestId))!.tbId).toBeNull();
    const got: string[] = [];
    g.rpc.on('response', (e) => got.push(e.request.id));
    answer(g, 'loa-01', '1');
    expect(got).toEqual([y.requestId]);
  });

  it('a signed command to a token session has the integer id, as in its topic, as requestId in signed', async () => {
    const f = await setup(undefined, new Map([['loa-01', 'token'], ['loa-02', 'secret']]), true);
    const r = await f.rpc.sendMany(['loa-01', 'loa-02'], 'broadcast.stop', { broadcastId: 'b1' }, { expiresAt: f.clock.t + 60_000 });
    await tick();
    const [tok, sec] = f.published;
    expect(tok!.topic).toBe('v1/devices/loa-01/rpc/request/1');
    expect(JSON.parse(tok!.body.signed as string)).toMatchObject({ deviceId: 'loa-01', requestId: '1' });
    expect(JSON.parse(sec!.body.signed as string)).toMatchObject({ deviceId: 'loa-02', requestId: r[1]!.requestId });
  });
});

/**
 * Batched live feed (`auth: {token, batch: true}`, src/live/batch.ts) with
 * real socket.io-client clients against the whole app: telemetry arrives as
 * `telemetry.batch` arrays (coalesced per device and field), scoping is the
 * same as for single events, status and broadcast events stay single and
 * never overtake the readings before them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { io as ioc, type Socket } from 'socket.io-client';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { seedCommune } from '../helpers/seed.js';
import { connectDevice, end, parseMetrics, publish, waitFor } from '../helpers/mqtt.js';
import { attachLiveFeedForTest } from '../helpers/live.js';
import type { Authenticator, Principal } from '../../src/auth/types.js';
import { formatTime } from '../../src/core/time.js';

const PRINCIPALS: Record<string, Principal> = {
  'viewer-of-a-token-0123456789': { kind: 'token', id: 'viewer-a', role: 'viewer', areas: ['ca'] },
  'operator-of-a-token-012345678': { kind: 'token', id: 'operator-a', role: 'operator', areas: ['ca'] },
};
const testAuth: Authenticator = { authenticate: (t) => PRINCIPALS[t] ?? null };
const [VIEWER_A, OPERATOR_A] = Object.keys(PRINCIPALS) as [string, string];

let t: TestApp;
let stopFeed: () => Promise<void>;
const secrets: Record<string, string> = {};
const sockets: Socket[] = [];

type Ack = { ok?: boolean; devices?: number; error?: { code: string } };
/** Everything a client received, in order. */
type Got = Array<{ ev: string; body: any }>;

async function client(token: string, batch = true): Promise<{ s: Socket; got: Got }> {
  const s = ioc(t.httpUrl, { transports: ['websocket'], reconnection: false, forceNew: true, auth: batch ? { token, batch: true } : { token } });
  sockets.push(s);
  const got: Got = [];
  s.onAny((ev: string, body: unknown) => got.push({ ev, body }));
  await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('connect_error', reject); });
  return { s, got };
}
const sub = (s: Socket, body: unknown): Promise<Ack> => s.timeout(5000).emitWithAck('subscribe', body);
const unsub = (s: Socket, body: unknown): Promise<Ack> => s.timeout(5000).emitWithAck('unsubscribe', body);
const readings = (got: Got): any[] => got.filter((g) => g.ev === 'telemetry.batch').flatMap((g) => g.body as any[]);
const tel = (deviceId: string, area: string, ts: number, values: Record<string, number | boolean>) =>
  t.app.bus.emit('telemetry.accepted', { deviceId, area, kind: 'sensor', ts, values });
const settle = (ms = 150) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  t = await startTestApp();
  t.app.authenticator.add(testAuth);
  ({ stop: stopFeed } = await attachLiveFeedForTest(t.app));
  Object.assign(secrets, await seedCommune(t, [['sa1', 'va1', 'sensor'], ['sa2', 'ca', 'sensor'], ['sb1', 'cb', 'sensor'], ['spk-a1', 'va1', 'speaker']] as const));
});

afterAll(async () => {
  for (const s of sockets) s.disconnect();
  await stopFeed?.();
  await t?.stop();
});

describe('live feed: batched delivery', () => {
  it('real MQTT telemetry arrives as telemetry.batch with the spec objects; a plain client still gets single events', async () => {
    const b = await client(t.adminToken);
    const plain = await client(t.adminToken, false);
    expect(await sub(b.s, { areas: ['p1'] })).toEqual({ ok: true, devices: 4 });
    expect(await sub(plain.s, { areas: ['p1'] })).toEqual({ ok: true, devices: 4 });
    const dev = await connectDevice(t.mqttUrl, 'sa1', secrets.sa1!);
    const ts = Date.now() - 60_000;
    await publish(dev, 'v1/devices/sa1/telemetry', JSON.stringify({ ts, values: { soil_moisture: 31.5, ok: true } }));
    await waitFor(() => readings(b.got).length > 0 && plain.got.some((g) => g.ev === 'telemetry'));
    expect(readings(b.got)).toEqual([{ deviceId: 'sa1', ts: formatTime(ts, 'Asia/Ho_Chi_Minh'), values: { soil_moisture: 31.5, ok: true } }]);
    expect(b.got.some((g) => g.ev === 'telemetry')).toBe(false);
    expect(plain.got.some((g) => g.ev === 'telemetry.batch')).toBe(false);
    await end(dev);
    // status events stay single events for batched clients too
    await waitFor(() => b.got.some((g) => g.ev === 'status' && g.body.deviceId === 'sa1' && g.body.online === false));
    b.s.disconnect();
    plain.s.disconnect();
  });

  it('shows a reading before its disk write finishes, while the device PUBACK still waits for the disk', async () => {
    const plain = await client(t.adminToken, false);
    expect(await sub(plain.s, { devices: ['sa1'] })).toEqual({ ok: true, devices: 1 });
    const store = t.app.store as unknown as { writeBatch: (...a: unknown[]) => Promise<unknown> };
    const real = store.writeBatch;
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    store.writeBatch = async (...a: unknown[]) => { await gate; return real.apply(store, a); };
    const dev = await connectDevice(t.mqttUrl, 'sa1', secrets.sa1!);
    try {
      const ts = Date.now() - 30_000;
      let acked = false;
      const puback = publish(dev, 'v1/devices/sa1/telemetry', JSON.stringify({ ts, values: { early: 7 } })).then(() => { acked = true; });
      await waitFor(() => plain.got.some((g) => g.ev === 'telemetry' && g.body.values.early === 7));
      await settle(100);
      expect(acked).toBe(false); // the store has not written it yet: no PUBACK
      release();
      await puback;
      expect(acked).toBe(true);
    } finally {
      store.writeBatch = real;
      release();
      await end(dev);
      plain.s.disconnect();
    }
  });

  it('coalesces a burst to the latest value per (device, field), each reading once even when several subscriptions match', async () => {
    const { s, got } = await client(t.adminToken);
    expect(await sub(s, { devices: ['sa2'], areas: ['ca', 'p1'] })).toEqual({ ok: true, devices: 4 });
    const t0 = Date.now();
    for (let i = 0; i < 50; i++) tel('sa2', 'ca', t0 + i, { temp: i, hum: 100 + i });
    tel('sa2', 'ca', t0 + 50, { rain: 1 });
    await waitFor(() => readings(got).length >= 2);
    await settle();
    expect(readings(got)).toEqual([
      { deviceId: 'sa2', ts: formatTime(t0 + 49, 'Asia/Ho_Chi_Minh'), values: { temp: 49, hum: 149 } },
      { deviceId: 'sa2', ts: formatTime(t0 + 50, 'Asia/Ho_Chi_Minh'), values: { rain: 1 } },
    ]);
    const m = parseMetrics(await (await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } })).text());
    expect(m.get('keng_live_coalesced_total')).toBeGreaterThanOrEqual(49);
    expect(m.get('keng_live_events_total{type="telemetry.batch"}')).toBeGreaterThanOrEqual(1);
    s.disconnect();
  });

  it('scopes batches like single events: a viewer of A never gets B', async () => {
    const v = await client(VIEWER_A);
    expect((await sub(v.s, { areas: ['p1'] })).error?.code).toBe('KENG_ERR_FORBIDDEN');
    expect(await sub(v.s, { areas: ['ca'] })).toEqual({ ok: true, devices: 3 });
    const now = Date.now();
    for (let i = 0; i < 5; i++) { tel('sb1', 'cb', now + i, { x: i }); tel('sa1', 'va1', now + i, { x: i }); }
    await waitFor(() => readings(v.got).length >= 1);
    await settle();
    expect(readings(v.got).map((r) => r.deviceId)).toEqual(['sa1']);
    // a viewer may not see broadcast events; an operator of A batched may
    const op = await client(OPERATOR_A);
    expect(await sub(op.s, { areas: ['ca'] })).toEqual({ ok: true, devices: 3 });
    t.app.bus.emit('broadcast.state', { broadcastId: 'bc-9', deviceId: 'spk-a1', area: 'va1', state: 'playing', at: Date.now() });
    await waitFor(() => op.got.some((g) => g.ev === 'broadcast'));
    await settle();
    expect(v.got.some((g) => g.ev === 'broadcast')).toBe(false);
    v.s.disconnect();
    op.s.disconnect();
  });

  it('a status event does not overtake readings that came before it', async () => {
    const { s, got } = await client(t.adminToken);
    await sub(s, { areas: ['ca'] });
    const now = Date.now();
    tel('sa2', 'ca', now, { last: 1 });
    t.app.bus.emit('status', { deviceId: 'sa2', area: 'ca', online: false, at: now + 1 });
    await waitFor(() => got.some((g) => g.ev === 'status'));
    await settle();
    expect(got.map((g) => g.ev)).toEqual(['telemetry.batch', 'status']);
    s.disconnect();
  });

  it('clients sharing a subscription share a group; one leaving or changing does not disturb the other', async () => {
    const a = await client(t.adminToken);
    const b = await client(t.adminToken);
    await sub(a.s, { areas: ['cb'] });
    await sub(b.s, { areas: ['cb'] });
    tel('sb1', 'cb', Date.now(), { n: 1 });
    await waitFor(() => readings(a.got).length === 1 && readings(b.got).length === 1);
    expect(await unsub(a.s, { areas: ['cb'] })).toEqual({ ok: true, devices: 0 });
    expect(await sub(a.s, { areas: ['ca'] })).toEqual({ ok: true, devices: 3 });
    tel('sb1', 'cb', Date.now(), { n: 2 });
    tel('sa2', 'ca', Date.now(), { n: 3 });
    await waitFor(() => readings(a.got).length === 2 && readings(b.got).length === 2);
    await settle();
    expect(readings(a.got).map((r) => r.values.n)).toEqual([1, 3]);
    expect(readings(b.got).map((r) => r.values.n)).toEqual([1, 2]);
    b.s.disconnect();
    await settle(50);
    tel('sa2', 'ca', Date.now(), { n: 4 });
    await waitFor(() => readings(a.got).length === 3);
    a.s.disconnect();
  });
});

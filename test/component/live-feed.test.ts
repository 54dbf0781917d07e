/**
 * Live feed (docs/live-feed.md) with real
 * socket.io-client clients against the whole app: handshake auth, subscribe
 * validation, scoping by role and area, telemetry over real MQTT, status on
 * device connect/disconnect, broadcast events by role.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { io as ioc, type Socket } from 'socket.io-client';
import type { MqttClient } from 'mqtt';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { seedCommune } from '../helpers/seed.js';
import { connectDevice, end, parseMetrics, publish, waitFor } from '../helpers/mqtt.js';
import { attachLiveFeedForTest } from '../helpers/live.js';
import type { Authenticator, Principal } from '../../src/auth/types.js';
import { formatTime } from '../../src/core/time.js';

const PRINCIPALS: Record<string, Principal> = {
  'viewer-of-a-token-0123456789': { kind: 'token', id: 'viewer-a', role: 'viewer', areas: ['ca'] },
  'operator-of-a-token-012345678': { kind: 'token', id: 'operator-a', role: 'operator', areas: ['ca'] },
  'service-of-village-a1-012345': { kind: 'token', id: 'ioc-a1', role: 'service', areas: ['va1'] },
};
const testAuth: Authenticator = { authenticate: (t) => PRINCIPALS[t] ?? null };
const [VIEWER_A, OPERATOR_A, SERVICE_A1] = Object.keys(PRINCIPALS) as [string, string, string];

let t: TestApp;
let stopFeed: () => Promise<void>;
const secrets: Record<string, string> = {};
const clients: Socket[] = [];
const devices: MqttClient[] = [];

type Ack = { ok?: boolean; devices?: number; error?: { code: string; message: string } };
interface Received { telemetry: any[]; status: any[]; broadcast: any[] }

function connect(token: string | undefined, extra: Record<string, unknown> = {}): Socket {
  const s = ioc(t.httpUrl, { transports: ['websocket'], reconnection: false, forceNew: true, ...(token !== undefined ? { auth: { token } } : {}), ...extra });
  clients.push(s);
  return s;
}

async function connected(token: string): Promise<{ s: Socket; got: Received }> {
  const s = connect(token);
  const got: Received = { telemetry: [], status: [], broadcast: [] };
  s.on('telemetry', (m) => got.telemetry.push(m));
  s.on('status', (m) => got.status.push(m));
  s.on('broadcast', (m) => got.broadcast.push(m));
  await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('connect_error', reject); });
  return { s, got };
}

function refused(s: Socket): Promise<Error & { data?: { code?: string } }> {
  return new Promise((resolve, reject) => {
    s.once('connect', () => reject(new Error('connection was accepted')));
    s.once('connect_error', (e) => resolve(e as Error & { data?: { code?: string } }));
  });
}

const request = (s: Socket, ev: 'subscribe' | 'unsubscribe', body: unknown): Promise<Ack> => s.timeout(5000).emitWithAck(ev, body);

async function device(id: string): Promise<MqttClient> {
  const c = await connectDevice(t.mqttUrl, id, secrets[id]);
  devices.push(c);
  return c;
}

beforeAll(async () => {
  t = await startTestApp();
  t.app.authenticator.add(testAuth);
  ({ stop: stopFeed } = await attachLiveFeedForTest(t.app));
  Object.assign(secrets, await seedCommune(t, [['sa1', 'va1', 'sensor'], ['sa2', 'ca', 'sensor'], ['sb1', 'cb', 'sensor'], ['spk-a1', 'va1', 'speaker'], ['spk-b', 'cb', 'speaker']] as const));
});

afterAll(async () => {
  for (const s of clients) s.disconnect();
  await Promise.all(devices.map((d) => end(d)));
  await stopFeed?.();
  await t?.stop();
});

describe('live feed: handshake', () => {
  it('refuses a missing token and a bad token at the handshake, counted', async () => {
    const e1 = await refused(connect(undefined));
    expect(e1.data?.code).toBe('KENG_ERR_UNAUTHENTICATED');
    const e2 = await refused(connect('not-a-valid-token-at-all'));
    expect(e2.data?.code).toBe('KENG_ERR_UNAUTHENTICATED');
    expect(e2.message).toMatch(/token/i);
    const e3 = await refused(connect(''));
    expect(e3.data?.code).toBe('KENG_ERR_UNAUTHENTICATED');
    const m = parseMetrics(await (await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } })).text());
    expect(m.get('keng_live_refused_total{reason="bad_token"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('keng_live_refused_total{reason="missing_token"}')).toBeGreaterThanOrEqual(2);
  });

  it('accepts the token as an Authorization: Bearer header too', async () => {
    const s = connect(undefined, { extraHeaders: { authorization: `Bearer ${t.adminToken}` } });
    await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('connect_error', reject); });
    s.disconnect();
  });

  it('does not disturb the REST API on the same port', async () => {
    expect((await t.api('GET', '/api/v1/areas')).status).toBe(200);
    expect((await fetch(`${t.httpUrl}/healthz`)).status).toBe(200);
  });
});

describe('live feed: subscribe requests', () => {
  it('validates shapes and answers with an error code', async () => {
    const { s } = await connected(t.adminToken);
    for (const bad of [null, 'ca', [], {}, { areas: 'ca' }, { devices: [1] }, { devices: ['BAD ID'] }, { areas: [] }, { zones: ['ca'] },
      { devices: Array.from({ length: 1001 }, (_, i) => `d${i}`) }]) {
      expect((await request(s, 'subscribe', bad)).error?.code, JSON.stringify(bad).slice(0, 60)).toBe('KENG_ERR_VALIDATION');
    }
    expect((await request(s, 'subscribe', { areas: ['nope'] })).error?.code).toBe('KENG_ERR_NOT_FOUND');
    expect((await request(s, 'subscribe', { devices: ['nope'] })).error?.code).toBe('KENG_ERR_NOT_FOUND');
    s.emit('subscribe', { areas: ['ca'] }); // no ack callback: no crash
    expect(await request(s, 'subscribe', { areas: ['p1'] })).toEqual({ ok: true, devices: 5 });
    expect(await request(s, 'unsubscribe', { areas: ['p1', 'ca'] })).toEqual({ ok: true, devices: 0 });
    s.disconnect();
  });
});

describe('live feed: events', () => {
  it('admin: telemetry over real MQTT and status on device connect/disconnect', async () => {
    const { s, got } = await connected(t.adminToken);
    expect(await request(s, 'subscribe', { areas: ['p1'] })).toEqual({ ok: true, devices: 5 });
    const dev = await device('sa1');
    await waitFor(() => got.status.find((m) => m.deviceId === 'sa1' && m.online === true));
    const ts = Date.now() - 60_000;
    await publish(dev, 'v1/devices/sa1/telemetry', JSON.stringify({ ts, values: { soil_moisture: 31.5, ok: true } }));
    const tm = await waitFor(() => got.telemetry.find((m) => m.deviceId === 'sa1'));
    expect(tm).toEqual({ deviceId: 'sa1', ts: formatTime(ts, 'Asia/Ho_Chi_Minh'), values: { soil_moisture: 31.5, ok: true } });
    expect(tm.ts).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+07:00$/);
    const st = got.status.find((m) => m.deviceId === 'sa1')!;
    expect(Object.keys(st).sort()).toEqual(['at', 'deviceId', 'online']);
    expect(st.at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+07:00$/);
    await end(dev);
    devices.splice(devices.indexOf(dev), 1);
    await waitFor(() => got.status.find((m) => m.deviceId === 'sa1' && m.online === false));
    // unsubscribed: nothing more arrives
    expect(await request(s, 'unsubscribe', { areas: ['p1'] })).toEqual({ ok: true, devices: 0 });
    const n = got.telemetry.length;
    const dev2 = await device('sa2');
    await publish(dev2, 'v1/devices/sa2/telemetry', '{"soil_moisture": 20}');
    await new Promise((r) => setTimeout(r, 300));
    expect(got.telemetry.length).toBe(n);
    s.disconnect();
  });

  it('a client subscribed to a device and its area gets each event once', async () => {
    const { s, got } = await connected(t.adminToken);
    expect(await request(s, 'subscribe', { devices: ['sb1'], areas: ['cb', 'p1'] })).toEqual({ ok: true, devices: 5 });
    const dev = await device('sb1');
    await publish(dev, 'v1/devices/sb1/telemetry', '{"rain_mm": 1}');
    await waitFor(() => got.telemetry.length > 0);
    await new Promise((r) => setTimeout(r, 200));
    expect(got.telemetry).toHaveLength(1);
    s.disconnect();
  });
});

describe('live feed: scope', () => {
  it('a viewer of area A cannot subscribe to B, its parent or B\'s devices, and never receives B\'s events', async () => {
    const { s, got } = await connected(VIEWER_A);
    for (const req of [{ areas: ['cb'] }, { areas: ['p1'] }, { devices: ['sb1'] }, { areas: ['ca', 'cb'] }, { areas: ['unknown-area'] }, { devices: ['unknown-dev'] }]) {
      const r = await request(s, 'subscribe', req);
      expect(r.error?.code, JSON.stringify(req)).toBe('KENG_ERR_FORBIDDEN');
    }
    // all or nothing: the refused {areas: [ca, cb]} subscribed nothing
    expect(await request(s, 'unsubscribe', { areas: ['ca'] })).toEqual({ ok: true, devices: 0 });
    expect(await request(s, 'subscribe', { areas: ['ca'] })).toEqual({ ok: true, devices: 3 });
    expect(await request(s, 'subscribe', { devices: ['sa1'] })).toEqual({ ok: true, devices: 3 });

    const { s: admin, got: adminGot } = await connected(t.adminToken);
    await request(admin, 'subscribe', { areas: ['p1'] });
    const a1 = await device('sa1');
    const b1 = devices.find((d) => d.options.username === 'sb1') ?? await device('sb1');
    for (let i = 0; i < 5; i++) {
      await publish(b1, 'v1/devices/sb1/telemetry', JSON.stringify({ rain_mm: i }));
      await publish(a1, 'v1/devices/sa1/telemetry', JSON.stringify({ soil_moisture: i }));
    }
    await waitFor(() => adminGot.telemetry.filter((m) => m.deviceId === 'sb1').length === 5 && got.telemetry.length >= 5);
    await new Promise((r) => setTimeout(r, 200));
    expect(got.telemetry.map((m) => m.deviceId)).toEqual(['sa1', 'sa1', 'sa1', 'sa1', 'sa1']);
    expect(got.status.every((m) => m.deviceId.startsWith('sa') || m.deviceId === 'spk-a1')).toBe(true);

    // broadcast events: not for a viewer (role), for an operator of A only A's speakers
    const op = await connected(OPERATOR_A);
    expect(await request(op.s, 'subscribe', { areas: ['ca'] })).toEqual({ ok: true, devices: 3 });
    expect((await request(op.s, 'subscribe', { devices: ['spk-b'] })).error?.code).toBe('KENG_ERR_FORBIDDEN');
    const at = Date.now();
    t.app.bus.emit('broadcast.state', { broadcastId: 'bc-1', deviceId: 'spk-b', area: 'cb', state: 'playing', at });
    t.app.bus.emit('broadcast.state', { broadcastId: 'bc-2', deviceId: 'spk-a1', area: 'va1', state: 'playing', at });
    await waitFor(() => op.got.broadcast.length >= 1 && adminGot.broadcast.length >= 2);
    await new Promise((r) => setTimeout(r, 150));
    expect(op.got.broadcast).toEqual([{ broadcastId: 'bc-2', deviceId: 'spk-a1', state: 'playing', at: expect.stringMatching(/\+07:00$/) }]);
    expect(got.broadcast).toEqual([]);
    expect(adminGot.broadcast.map((m) => m.deviceId).sort()).toEqual(['spk-a1', 'spk-b']);
    s.disconnect();
    admin.disconnect();
    op.s.disconnect();
  });

  it('a service token scoped to a village sees that village only', async () => {
    const { s, got } = await connected(SERVICE_A1);
    expect((await request(s, 'subscribe', { areas: ['ca'] })).error?.code).toBe('KENG_ERR_FORBIDDEN');
    expect((await request(s, 'subscribe', { devices: ['sa2'] })).error?.code).toBe('KENG_ERR_FORBIDDEN');
    expect(await request(s, 'subscribe', { areas: ['va1'] })).toEqual({ ok: true, devices: 2 });
    t.app.bus.emit('telemetry.accepted', { deviceId: 'sa2', area: 'ca', kind: 'sensor', ts: Date.now(), values: { x: 1 } });
    t.app.bus.emit('telemetry.accepted', { deviceId: 'sa1', area: 'va1', kind: 'sensor', ts: Date.now(), values: { x: 2 } });
    t.app.bus.emit('broadcast.state', { broadcastId: 'bc-3', deviceId: 'spk-a1', area: 'va1', state: 'done', at: Date.now() });
    await waitFor(() => got.telemetry.length >= 1 && got.broadcast.length >= 1);
    await new Promise((r) => setTimeout(r, 150));
    expect(got.telemetry.map((m) => m.values.x)).toEqual([2]);
    s.disconnect();
  });

  it('counts connected clients in keng_live_clients', async () => {
    const a = await connected(t.adminToken);
    const m = parseMetrics(await (await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } })).text());
    expect(m.get('keng_live_clients')).toBeGreaterThanOrEqual(1);
    expect(m.get('keng_live_connects_total')).toBeGreaterThanOrEqual(1);
    a.s.disconnect();
  });
});

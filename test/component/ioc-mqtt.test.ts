/**
 * IOC interface over MQTT (firmware-protocols/ioc-mqtt.md):
 * an API token with role service, created through the REST API, connects to
 * the broker read-only and receives its province's normalised, durable
 * telemetry and status, nothing of other provinces; its publishes and
 * forbidden subscriptions are refused; viewer and revoked tokens cannot
 * connect; an independent client (mosquitto_sub) works too.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, connectRefused, end, parseMetrics, publish, waitFor } from '../helpers/mqtt.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';
import { serviceCredential } from '../../src/broker/service-clients.js';
import { serviceSubscription } from '../../src/broker/topics.js';

let t: TestApp;
const secrets: Record<string, { secret: string; accessToken: string }> = {};
let iocToken = '';
let iocTokenId = '';
let viewerToken = '';
const clients: MqttClient[] = [];

async function createToken(name: string, role: string, areas: string[]): Promise<{ token: string; id: string }> {
  const r = await t.api('POST', '/api/v1/tokens', { name, role, areas });
  expect(r.status).toBe(201);
  expect(r.body.token).toMatch(/^kengt_/);
  return { token: r.body.token, id: r.body.id };
}

async function connectService(username: string, password?: string, extra: mqtt.IClientOptions = {}): Promise<MqttClient> {
  const c = await connectDevice(t.mqttUrl, username, password, extra);
  clients.push(c);
  return c;
}

function subscribe(c: MqttClient, topics: Record<string, { qos: 0 | 1 | 2 }>): Promise<number[]> {
  return new Promise((resolve) => {
    c.once('packetreceive', function onPacket(p) {
      if (p.cmd === 'suback') resolve(p.granted as number[]);
      else c.once('packetreceive', onPacket);
    });
    c.subscribe(topics, () => undefined);
  });
}

function collect(c: MqttClient): Array<{ topic: string; body: any; qos: number; retain: boolean }> {
  const out: Array<{ topic: string; body: any; qos: number; retain: boolean }> = [];
  c.on('message', (topic, payload, packet) => out.push({ topic, body: JSON.parse(payload.toString()), qos: packet.qos, retain: packet.retain }));
  return out;
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } })).text();
  return parseMetrics(text).get(name) ?? 0;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  t = await startTestApp({ mqtt: { abuseDisconnectAfter: 5 } });
  await seedAreas(t, [
    { code: 'p1', name: 'Tỉnh 1', level: 'province' }, { code: 'c1', name: 'Xã 1', level: 'commune', parent: 'p1' },
    { code: 'p2', name: 'Tỉnh 2', level: 'province' }, { code: 'c2', name: 'Xã 2', level: 'commune', parent: 'p2' },
  ]);
  Object.assign(secrets, await seedDevices(t, [
    { id: 'soil-1', kind: 'sensor', name: 'soil-1', area: 'c1' },
    { id: 'soil-2', kind: 'sensor', name: 'soil-2', area: 'c1' },
    { id: 'far-1', kind: 'sensor', name: 'far-1', area: 'c2' },
  ]));
  ({ token: iocToken, id: iocTokenId } = await createToken('IOC tỉnh 1', 'service', ['p1']));
  ({ token: viewerToken } = await createToken('viewer p1', 'viewer', ['p1']));
});

afterAll(async () => {
  for (const c of clients) c.end(true);
  await t?.stop();
});

describe('service credentials', () => {
  it('recognises the two credential forms without taking device logins', () => {
    const tok = `kengt_${'A'.repeat(43)}`;
    expect(serviceCredential(tok, undefined)).toBe(tok);
    expect(serviceCredential('token', Buffer.from(tok))).toBe(tok);
    expect(serviceCredential('token', Buffer.from('device-secret'))).toBeNull(); // a device named "token"
    expect(serviceCredential('kengt_pump-1', Buffer.from('secret'))).toBeNull(); // a valid device id
    expect(serviceCredential('soil-1', Buffer.from(tok))).toBeNull();
  });

  it('allows only the three device topics, wildcard or one device id', () => {
    expect(serviceSubscription('v1/devices/+/telemetry')).toEqual({ kind: 'telemetry' });
    expect(serviceSubscription('v1/devices/soil-1/status')).toEqual({ kind: 'status', deviceId: 'soil-1' });
    expect(serviceSubscription('v1/devices/+/attributes')).toEqual({ kind: 'attributes' });
    for (const f of ['#', '+/#', 'v1/#', 'v1/devices/#', 'v1/devices/+/#', 'v1/devices/+/+', 'v1/devices/+/rpc/request/+',
      'v1/devices/soil-1/events', 'v1/devices/+/telemetry/#', 'v1/devices/+/telemetry/x', '$SYS/#', '$keng/dropped', 'v1/devices/A B/status']) {
      expect(typeof serviceSubscription(f), f).toBe('string');
    }
  });
});

describe('IOC over MQTT (service token from the REST API)', () => {
  it('receives its province\'s normalised telemetry (QoS 1), never another province\'s, and counts the connection', async () => {
    const ioc = await connectService(iocToken);
    expect(await subscribe(ioc, { 'v1/devices/+/telemetry': { qos: 1 } })).toEqual([1]);
    const got = collect(ioc);
    await waitFor(async () => (await metric('keng_mqtt_service_connections')) === 1);
    expect(await metric('keng_mqtt_connections')).toBe(0); // devices only

    const far = await connectDevice(t.mqttUrl, 'far-1', secrets['far-1']!.secret);
    const soil = await connectDevice(t.mqttUrl, 'soil-1', secrets['soil-1']!.secret);
    await publish(far, 'v1/devices/far-1/telemetry', JSON.stringify({ soil_moisture: 99 }));
    await publish(soil, 'v1/devices/soil-1/telemetry', JSON.stringify({ soil_moisture: 31.5, temperature: 24.1 }));
    await publish(soil, 'v1/devices/soil-1/telemetry', JSON.stringify({ 'Bad Field': 1 })); // refused: never delivered
    const ts = Date.now() - 60_000;
    await publish(soil, 'v1/devices/soil-1/telemetry', JSON.stringify([
      { ts, values: { soil_moisture: 30 } }, { ts: new Date(ts + 1000).toISOString(), values: { soil_moisture: 30.5 } },
    ]));
    await waitFor(() => got.length >= 3);
    await sleep(150);
    expect(got.map((m) => m.topic)).toEqual(['v1/devices/soil-1/telemetry', 'v1/devices/soil-1/telemetry', 'v1/devices/soil-1/telemetry']);
    expect(typeof got[0]!.body.ts).toBe('number');
    expect(got[0]!.body.values).toEqual({ soil_moisture: 31.5, temperature: 24.1 });
    expect(got[1]!.body).toEqual({ ts, values: { soil_moisture: 30 } });
    expect(got[2]!.body).toEqual({ ts: ts + 1000, values: { soil_moisture: 30.5 } });
    expect(got.every((m) => m.qos === 1 && !m.retain)).toBe(true);
    // What it received is durable: the history has it.
    const h = await t.api('GET', `/api/v1/devices/soil-1/telemetry?from=${new Date(ts - 1).toISOString()}`, undefined, iocToken);
    expect(h.status).toBe(200);
    await end(far);
    await end(soil);
  });

  it('sees status of its province only (retained on subscribe and live)', async () => {
    const soil = await connectDevice(t.mqttUrl, 'soil-2', secrets['soil-2']!.secret);
    const far = await connectDevice(t.mqttUrl, 'far-1', secrets['far-1']!.secret);
    const ioc = await connectService('token', iocToken); // the username `token` + password form
    const got = collect(ioc);
    expect(await subscribe(ioc, { 'v1/devices/+/status': { qos: 1 } })).toEqual([1]);
    await waitFor(() => got.some((m) => m.topic === 'v1/devices/soil-2/status' && m.body.online === true));
    await end(soil);
    await waitFor(() => got.some((m) => m.topic === 'v1/devices/soil-2/status' && m.body.online === false));
    await sleep(100);
    expect(got.filter((m) => m.topic.includes('far-1'))).toEqual([]);
    await end(far);
  });

  it('is read-only: publishes are acknowledged but dropped and counted; repeated ones disconnect', async () => {
    const ioc = await connectService(iocToken);
    const watcher = await connectService(iocToken);
    expect(await subscribe(watcher, { 'v1/devices/+/telemetry': { qos: 1 }, 'v1/devices/+/status': { qos: 0 } })).toEqual([1, 0]);
    const seen = collect(watcher);
    await sleep(100);
    seen.length = 0;
    const before = await metric('keng_mqtt_refused_total{op="publish",reason="read_only"}');
    await publish(ioc, 'v1/devices/soil-1/telemetry', JSON.stringify({ soil_moisture: 1 }), 1);
    await publish(ioc, 'v1/devices/soil-1/status', JSON.stringify({ online: false }), 1);
    expect(await metric('keng_mqtt_refused_total{op="publish",reason="read_only"}')).toBe(before + 2);
    await sleep(150);
    expect(seen).toEqual([]);
    const latest = await t.api('GET', '/api/v1/telemetry/latest', undefined, iocToken);
    expect(latest.body.devices.find((d: any) => d.id === 'soil-1').latest.soil_moisture.value).not.toBe(1);
    // abuse rule (abuseDisconnectAfter = 5 in this app): more refusals within a minute disconnect
    const closed = new Promise<void>((r) => ioc.once('close', () => r()));
    for (let i = 0; i < 6; i++) ioc.publish('v1/devices/soil-1/telemetry', '{}', { qos: 0 });
    await closed;
    expect(await metric('keng_mqtt_refused_total{op="publish",reason="abuse_disconnect"}')).toBeGreaterThanOrEqual(1);
  });

  it('refuses # , $ topics, rpc topics, other suffixes and devices outside its areas (SUBACK 0x80)', async () => {
    const ioc = await connectService(iocToken);
    const granted = await subscribe(ioc, {
      '#': { qos: 0 }, '$SYS/#': { qos: 0 }, 'v1/devices/soil-1/rpc/request/+': { qos: 1 }, 'v1/devices/+/events': { qos: 1 },
      'v1/devices/far-1/telemetry': { qos: 1 }, 'v1/devices/ghost-9/telemetry': { qos: 1 }, 'v1/devices/soil-1/telemetry': { qos: 2 },
      'v1/devices/+/attributes': { qos: 1 },
    });
    // SUBACK tells the QoS granted (QoS 2 asked, 1 granted: broker/granted-qos.ts); deliveries use it (checked below).
    expect(granted).toEqual([128, 128, 128, 128, 128, 128, 1, 1]);
    expect(ioc.connected).toBe(true);
    expect(await metric('keng_mqtt_refused_total{op="subscribe",reason="out_of_scope"}')).toBe(2);
    // a device receives nothing of the server's telemetry republishing, not even its own
    const dev = await connectDevice(t.mqttUrl, secrets['soil-2']!.accessToken);
    const devMsgs = collect(dev);
    expect(await subscribe(dev, { 'v1/devices/me/attributes': { qos: 1 }, 'v1/devices/me/rpc/request/+': { qos: 1 }, 'v1/devices/soil-1/telemetry': { qos: 1 } })).toEqual([1, 1, 128]);
    const got = collect(ioc);
    const soil = await connectDevice(t.mqttUrl, 'soil-1', secrets['soil-1']!.secret);
    await publish(soil, 'v1/devices/soil-1/telemetry', JSON.stringify({ soil_moisture: 33 }));
    await publish(dev, 'v1/devices/me/telemetry', JSON.stringify({ soil_moisture: 34 }));
    await waitFor(() => got.length >= 1);
    await sleep(150);
    expect(got.map((m) => [m.topic, m.qos])).toEqual([['v1/devices/soil-1/telemetry', 1]]); // own filter only: not soil-2
    expect(devMsgs).toEqual([]);
    await end(soil);
    await end(dev);
  });

  it('persistent sessions get QoS 0 deliveries and no offline queue', async () => {
    const opts = { clean: false, clientId: 'ioc-persistent' };
    const ioc = await connectService(iocToken, undefined, opts);
    expect(await subscribe(ioc, { 'v1/devices/+/status': { qos: 1 } })).toEqual([0]); // SUBACK says what it gets: QoS 0
    const got = collect(ioc);
    const soil = await connectDevice(t.mqttUrl, 'soil-2', secrets['soil-2']!.secret);
    await waitFor(() => got.some((m) => m.topic === 'v1/devices/soil-2/status' && m.body.online === true));
    expect(got.filter((m) => !m.retain).every((m) => m.qos === 0)).toBe(true); // (aedes sends retained ones at their stored QoS)
    await end(ioc);
    await end(soil); // status offline published while the IOC is away
    await sleep(100);
    const again = await connectService(iocToken, undefined, opts);
    const queued = collect(again);
    await sleep(300);
    expect(queued).toEqual([]);
  });

  it('may not take over a device\'s client id or session', async () => {
    const dev = await connectDevice(t.mqttUrl, 'soil-2', secrets['soil-2']!.secret, { clientId: 'shared-client-id' });
    // A device's id as client id: refused (CONNACK 2).
    const c = mqtt.connect(t.mqttUrl, { username: iocToken, clientId: 'soil-2', reconnectPeriod: 0, protocolVersion: 4 });
    const code = await new Promise<number | undefined>((r) => c.once('error', (e: Error & { code?: number }) => { c.end(true); r(e.code); }));
    expect(code).toBe(2);
    // The same self-chosen id: service sessions live in their token's namespace, so both stay connected.
    const svc = await connectService(iocToken, undefined, { clientId: 'shared-client-id' });
    await sleep(50);
    expect(dev.connected).toBe(true);
    expect(svc.connected).toBe(true);
    await end(dev);
  });

  it('refuses viewer tokens (5), unknown and revoked tokens (4), and drops a token revoked while connected', async () => {
    expect(await connectRefused(t.mqttUrl, viewerToken)).toBe(5);
    expect(await connectRefused(t.mqttUrl, `kengt_${'x'.repeat(43)}`)).toBe(4);
    const { token, id } = await createToken('to revoke', 'service', ['p1']);
    const live = await connectService(token);
    expect((await t.api('DELETE', `/api/v1/tokens/${id}`)).status).toBe(204);
    expect(await connectRefused(t.mqttUrl, token)).toBe(4);
    expect(await connectRefused(t.mqttUrl, 'token', token)).toBe(4);
    // the periodic re-check (every 30 s) closes the live connection; run it now
    const closed = new Promise<void>((r) => live.once('close', () => r()));
    await (t.app.broker as any).services.recheck();
    await closed;
    expect(await metric('keng_mqtt_refused_total{op="connect",reason="token_revoked"}')).toBe(1);
    expect(await metric('keng_mqtt_refused_total{op="connect",reason="role_not_allowed"}')).toBe(1);
    expect(iocTokenId).toMatch(/^tok_/);
  });

  it('publishes telemetry only when a service client in scope is subscribed (device hot path untouched otherwise)', async () => {
    for (const c of clients.splice(0)) await end(c);
    await waitFor(async () => (await metric('keng_mqtt_service_connections')) === 0);
    const aedes = (t.app.broker as any).aedes;
    const published: string[] = [];
    const onPublish = (p: { topic: string }): void => { if (p.topic.endsWith('/telemetry')) published.push(p.topic); };
    aedes.on('publish', onPublish);
    try {
      const soil = await connectDevice(t.mqttUrl, 'soil-1', secrets['soil-1']!.secret);
      const far = await connectDevice(t.mqttUrl, 'far-1', secrets['far-1']!.secret);
      await publish(soil, 'v1/devices/soil-1/telemetry', JSON.stringify({ soil_moisture: 40 }));
      expect(published).toEqual([]); // nobody listening: nothing published
      const ioc = await connectService(iocToken);
      expect(await subscribe(ioc, { 'v1/devices/+/telemetry': { qos: 0 } })).toEqual([0]);
      await publish(far, 'v1/devices/far-1/telemetry', JSON.stringify({ soil_moisture: 41 }));
      expect(published).toEqual([]); // outside every subscriber's scope
      await publish(soil, 'v1/devices/soil-1/telemetry', JSON.stringify({ soil_moisture: 42 }));
      await waitFor(() => published.length === 1);
      expect(published).toEqual(['v1/devices/soil-1/telemetry']);
      await end(soil);
      await end(far);
    } finally {
      aedes.off('publish', onPublish);
    }
  });

  it('works with an independent client: mosquitto_sub -u <token>', async () => {
    // stdbuf: line-buffered output, so the SUBACK debug line shows up before exit.
    const sub = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', String(t.mqttPort), '-u', iocToken, '-i', 'ioc-mosquitto',
      '-t', 'v1/devices/+/telemetry', '-q', '1', '-v', '-d', '-C', '1', '-W', '20'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    sub.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    sub.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<number | null>((r) => sub.once('exit', (code) => r(code)));
    try {
      await waitFor(() => /received SUBACK/.test(out), 10_000).catch((e) => { throw new Error(`${(e as Error).message}: ${out}`); });
      const soil = await connectDevice(t.mqttUrl, 'soil-2', secrets['soil-2']!.secret);
      await publish(soil, 'v1/devices/soil-2/telemetry', JSON.stringify({ rain_mm: 2.5 }));
      expect(await exited).toBe(0);
      const line = out.split('\n').find((l) => l.startsWith('v1/devices/soil-2/telemetry '));
      expect(line).toBeDefined();
      const body = JSON.parse(line!.slice('v1/devices/soil-2/telemetry '.length));
      expect(body.values).toEqual({ rain_mm: 2.5 });
      await end(soil);
    } finally {
      sub.kill();
    }
  });
});

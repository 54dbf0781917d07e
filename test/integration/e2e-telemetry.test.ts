/**
 * Whole service, real MQTT over TCP: devices registered through the API,
 * telemetry from mqtt.js, paho-mqtt (Python) and mosquitto_pub, stored and
 * served back through the API. Bad input of every kind is refused, counted,
 * and never disturbs other devices.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, connectRefused, publish, end, waitFor, parseMetrics } from '../helpers/mqtt.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';

const run = promisify(execFile);

let t: TestApp;
const creds: Record<string, { secret: string; accessToken: string }> = {};

async function metrics(): Promise<Map<string, number>> {
  const res = await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } });
  return parseMetrics(await res.text());
}
function rejected(m: Map<string, number>, reason: string): number {
  return m.get(`keng_rejected_total{reason="${reason}"}`) ?? 0;
}

beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, [{ code: 'p01', name: 'Tỉnh Một', level: 'province' }, { code: 'c001', name: 'Xã Một', level: 'commune', parent: 'p01' }]);
  Object.assign(creds, await seedDevices(t, ['soil-1', 'soil-2', 'soil-3', 'flood-1'].map((id) =>
    ({ id, kind: 'sensor', name: `Cảm biến ${id}`, area: 'c001', location: { lat: 21.0, lon: 105.8 } }))));
  for (const c of Object.values(creds)) {
    expect(typeof c.secret).toBe('string');
    expect(typeof c.accessToken).toBe('string');
  }
});
afterAll(async () => { await t?.stop(); });

describe('telemetry over real MQTT', () => {
  it('stores QoS 1 telemetry (flat, ts+values, backlog array) and serves latest and history', async () => {
    const c = await connectDevice(t.mqttUrl, 'soil-1', creds['soil-1']!.secret);
    const now = Date.now();
    await publish(c, 'v1/devices/soil-1/telemetry', JSON.stringify({ soil_moisture: 31.5, temperature: 24.1 }));
    await publish(c, 'v1/devices/soil-1/telemetry', JSON.stringify({ ts: now - 60_000, values: { soil_moisture: 30 } }));
    // backlog out of order: the server orders it
    await publish(c, 'v1/devices/soil-1/telemetry', JSON.stringify([
      { ts: new Date(now - 120_000).toISOString(), values: { soil_moisture: 29, pump_on: true } },
      { ts: now - 180_000, values: { soil_moisture: 28, note: 'khô' } },
    ]));
    // retransmission: stored once
    await publish(c, 'v1/devices/soil-1/telemetry', JSON.stringify({ ts: now - 60_000, values: { soil_moisture: 30 } }));
    await end(c);

    const dev = await t.api('GET', '/api/v1/devices/soil-1');
    expect(dev.status).toBe(200);
    expect(dev.body.latest.soil_moisture.value).toBe(31.5);
    expect(dev.body.latest.temperature.value).toBe(24.1);
    expect(dev.body.latest.pump_on.value).toBe(true);

    const from = new Date(now - 3_600_000).toISOString();
    const hist = await t.api('GET', `/api/v1/devices/soil-1/telemetry?fields=soil_moisture&from=${encodeURIComponent(from)}`);
    expect(hist.status).toBe(200);
    expect(hist.body.deviceId).toBe('soil-1');
    expect(hist.body.points.map((p: any) => p.values.soil_moisture)).toEqual([28, 29, 30, 31.5]);
    const ts = hist.body.points.map((p: any) => Date.parse(p.ts));
    expect([...ts].sort((a, b) => a - b)).toEqual(ts);
  });

  it('accepts an independent client: paho-mqtt with the access token on v1/devices/me/telemetry', async () => {
    const script = `
import json, sys, time
import paho.mqtt.client as mqtt
port, token = int(sys.argv[1]), sys.argv[2]
acked = []
try:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-soil-2")
except AttributeError:
    c = mqtt.Client(client_id="paho-soil-2")
c.username_pw_set(token)
c.on_publish = lambda *a: acked.append(a[1])
c.connect("127.0.0.1", port, 30)
c.loop_start()
infos = [c.publish("v1/devices/me/telemetry", json.dumps({"ts": int(time.time()*1000) - i*1000, "values": {"water_level_cm": 100 + i}}), qos=1) for i in range(5)]
for i in infos: i.wait_for_publish(10)
c.loop_stop(); c.disconnect()
print(json.dumps({"acked": len(acked)}))
`;
    const { stdout } = await run('/usr/bin/python3', ['-c', script, String(t.mqttPort), creds['soil-2']!.accessToken], { timeout: 20_000 });
    expect(JSON.parse(stdout.trim().split('\n').pop()!).acked).toBe(5);
    const hist = await t.api('GET', '/api/v1/devices/soil-2/telemetry?fields=water_level_cm');
    expect(hist.body.points).toHaveLength(5);
    expect(hist.body.points.map((p: any) => p.values.water_level_cm)).toEqual([104, 103, 102, 101, 100]);
  });

  it('accepts mosquitto_pub with id and secret, QoS 1', async () => {
    await run('/usr/bin/mosquitto_pub', ['-h', '127.0.0.1', '-p', String(t.mqttPort), '-V', 'mqttv311', '-i', 'mosq-soil-3',
      '-u', 'soil-3', '-P', creds['soil-3']!.secret, '-q', '1', '-t', 'v1/devices/soil-3/telemetry', '-m', '{"rain_mm": 12.5}'], { timeout: 10_000 });
    const dev = await waitFor(async () => { const d = await t.api('GET', '/api/v1/devices/soil-3'); return d.body.latest?.rain_mm ? d : undefined; });
    expect(dev.body.latest.rain_mm.value).toBe(12.5);
  });
  it('stores camelCase field names as ThingsBoard firmware sends them (case kept)', async () => {
    const c = await connectDevice(t.mqttUrl, creds['flood-1']!.accessToken);
    await publish(c, 'v1/devices/me/telemetry', JSON.stringify({ currentFirmwareVersion: '1.0.3', batteryLevel: 87, BatteryLevel: 1 }));
    await end(c);
    const dev = await t.api('GET', '/api/v1/devices/flood-1');
    expect(dev.body.latest.currentFirmwareVersion.value).toBe('1.0.3');
    expect(dev.body.latest.batteryLevel.value).toBe(87);
    expect(dev.body.latest.BatteryLevel.value).toBe(1);
    const hist = await t.api('GET', '/api/v1/devices/flood-1/telemetry?fields=batteryLevel,currentFirmwareVersion');
    expect(hist.body.points.map((p: any) => p.values)).toEqual([{ batteryLevel: 87, currentFirmwareVersion: '1.0.3' }]);
  });
});

describe('bad input is refused, counted, and harms no one else', () => {
  it('refuses unknown devices and wrong secrets at CONNECT', async () => {
    const before = await metrics();
    expect(await connectRefused(t.mqttUrl, 'ghost-1', 'whatever')).toBeTruthy();
    expect(await connectRefused(t.mqttUrl, 'soil-1', 'wrong-secret')).toBeTruthy();
    const after = await metrics();
    const refused = (m: Map<string, number>) => [...m].filter(([k]) => k.startsWith('keng_mqtt_refused_total{') && k.includes('op="connect"')).reduce((s, [, v]) => s + v, 0);
    expect(refused(after) - refused(before)).toBe(2);
  });

  it('drops every kind of bad payload with a reason, keeps the connection and the service', async () => {
    const c = await connectDevice(t.mqttUrl, 'soil-1', creds['soil-1']!.secret);
    const before = await metrics();
    const deep = '['.repeat(50_000) + ']'.repeat(50_000);
    const bad: Array<[string, string | Buffer]> = [
      ['not_json', 'not json at all'],
      ['bad_value', JSON.stringify({ soil_moisture: 'x'.repeat(300) })],
      ['bad_value', JSON.stringify({ soil_moisture: { nested: 1 } })],
      ['bad_value', '{"soil_moisture": 1e999}'],
      ['bad_field_name', JSON.stringify({ 'Bad Name': 1 })],
      ['future_ts', JSON.stringify({ ts: Date.now() + 3_600_000, values: { a: 1 } })],
      ['too_deep', deep],
    ];
    for (const [, payload] of bad) await publish(c, 'v1/devices/soil-1/telemetry', payload);
    // 1 MB payload: above the size limit
    await publish(c, 'v1/devices/soil-1/telemetry', Buffer.alloc(1_048_576, 0x20));
    // another device's topic
    await publish(c, 'v1/devices/soil-2/telemetry', JSON.stringify({ a: 1 }));
    expect(c.connected).toBe(true);
    // the good message after all that still lands
    await publish(c, 'v1/devices/soil-1/telemetry', JSON.stringify({ after_bad: 1 }));
    await end(c);
    const after = await metrics();
    const grew = (reason: string) => rejected(after, reason) - rejected(before, reason);
    expect(grew('not_json')).toBeGreaterThanOrEqual(1);
    expect(grew('future_ts')).toBe(1);
    expect(grew('bad_field_name')).toBe(1);
    expect(grew('payload_too_large')).toBe(1);
    const total = [...after].filter(([k]) => k.startsWith('keng_rejected_total{')).reduce((s, [k, v]) => s + v - (before.get(k) ?? 0), 0);
    expect(total).toBe(bad.length + 2);
    const dev = await t.api('GET', '/api/v1/devices/soil-1');
    expect(dev.body.latest.after_bad.value).toBe(1);
    expect(dev.body.latest['Bad Name']).toBeUndefined();
    expect((await fetch(`${t.httpUrl}/healthz`)).status).toBe(200);
  });
});

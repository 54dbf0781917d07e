/**
 * An InfluxDB outage seen from the devices, with Keng's DEFAULT limits: while
 * InfluxDB is down, sensors upload their backlog one reading per message as
 * fast as Keng lets them (flow control slows them to 50 messages/s after a
 * burst of 500); every PUBACK means the reading is in the on-disk queue, and
 * when InfluxDB is back every acknowledged reading arrives there, none
 * refused, none twice.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { spawnKeng, type KengProcess } from '../helpers/process.js';
import { startInfluxd, type Influxd } from '../helpers/influxd.js';
import { parseMetrics } from '../helpers/mqtt.js';

const TOKEN = 'outage-test-admin-token-0123456789';
const DEVICES = ['rain-1', 'rain-2', 'rain-3'];
const PER_DEVICE = 800; // 500 at once, 300 at 50/s: ~6 s per device, in parallel

let keng: KengProcess | undefined;
let influx: Influxd | undefined;
let dir: string | undefined;
afterEach(async () => {
  if (keng && keng.proc.exitCode === null) { keng.proc.kill('SIGTERM'); await keng.exited; }
  await influx?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
  keng = undefined; influx = undefined; dir = undefined;
});

async function api(method: string, route: string, body?: unknown): Promise<any> {
  const r = await fetch(keng!.httpUrl + route, { method, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** One QoS 1 message per reading, all handed to mqtt.js at once (its window decides the pace). Resolves with the acknowledged ts. */
async function upload(deviceId: string, secret: string, t0: number): Promise<number[]> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${keng!.mqttPort}`, { username: deviceId, password: secret, clientId: deviceId, reconnectPeriod: 0, protocolVersion: 4 });
  await new Promise<void>((resolve, reject) => { c.once('connect', () => resolve()); c.once('error', reject); });
  let closed = false;
  c.on('close', () => { closed = true; });
  const acked = await Promise.all(Array.from({ length: PER_DEVICE }, (_, i) => new Promise<number>((resolve, reject) => {
    c.publish(`v1/devices/${deviceId}/telemetry`, JSON.stringify({ ts: t0 + i, values: { rain_mm: i / 10 } }), { qos: 1 }, (err) => (err ? reject(err) : resolve(t0 + i)));
  })));
  expect(closed).toBe(false); // never disconnected for going fast
  await c.endAsync();
  return acked;
}

describe('InfluxDB outage with default limits, real MQTT clients', () => {
  it('every reading acknowledged during the outage reaches InfluxDB once it is back', async () => {
    influx = await startInfluxd();
    dir = mkdtempSync(path.join(tmpdir(), 'keng-outage-'));
    keng = await spawnKeng({
      KENG_DATA_DIR: dir, KENG_ADMIN_TOKEN: TOKEN, KENG_TELEMETRY_STORE: 'influxdb', KENG_INFLUX_API: 'v1',
      KENG_INFLUX_URL: influx.url, KENG_INFLUX_DATABASE: 'outage',
    });
    await api('POST', '/api/v1/areas', { code: 'p1', name: 'Tỉnh', level: 'province' });
    const secrets: Record<string, string> = {};
    for (const id of DEVICES) secrets[id] = (await api('POST', '/api/v1/devices', { id, kind: 'sensor', name: id, area: 'p1' })).secret;

    await influx.stop(); // the outage starts
    const t0 = Date.now() - 3_600_000;
    const acked = (await Promise.all(DEVICES.map((id) => upload(id, secrets[id]!, t0)))).flat();
    expect(acked).toHaveLength(DEVICES.length * PER_DEVICE);

    const m = parseMetrics(await (await fetch(`${keng.httpUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text());
    expect(m.get('keng_rejected_total{reason="rate_limited"}') ?? 0).toBe(0);
    expect(m.get('keng_throttled_messages_total')).toBeGreaterThan(0);
    expect(m.get('keng_queue_depth_readings')).toBeGreaterThan(0); // held on disk while InfluxDB is away

    await influx.restart(); // the outage ends; the forwarder's back-off finds it again
    const deadline = Date.now() + 60_000;
    let counts: Record<string, number> = {};
    while (Date.now() < deadline) {
      const r = await influx.query('SELECT count("rain_mm") FROM "telemetry" GROUP BY "device_id"', 'outage');
      counts = Object.fromEntries((r.results?.[0]?.series ?? []).map((s: any) => [s.tags?.device_id, Number(s.values[0][1])]));
      if (DEVICES.every((id) => counts[id] === PER_DEVICE)) break;
      await new Promise((res) => setTimeout(res, 500));
    }
    expect(counts).toEqual(Object.fromEntries(DEVICES.map((id) => [id, PER_DEVICE])));
  }, 120_000);
});

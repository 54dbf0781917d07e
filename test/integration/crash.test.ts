/**
 * Crash: SIGKILL the controller right after PUBACKs, restart it on the same
 * data directory, and count: every acknowledged reading must be there.
 * Also: SIGTERM stops cleanly (exit 0) and flushes.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { spawnKeng, type KengProcess } from '../helpers/process.js';
import { startInfluxd, type Influxd } from '../helpers/influxd.js';

const TOKEN = 'crash-test-admin-token-0123456789';
// The per-device rate limit would (rightly) drop most of a 5,000-message burst; lift it for this test.
const FAST = { KENG_MQTT_RATE_LIMIT_PER_SEC: '1000000', KENG_MQTT_RATE_LIMIT_BURST: '1000000' };
let procs: KengProcess[] = [];
let dirs: string[] = [];
let influx: Influxd | undefined;

afterEach(async () => {
  for (const p of procs) if (p.proc.exitCode === null) p.proc.kill('SIGKILL');
  procs = [];
  await influx?.stop(); influx = undefined;
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

async function api(base: string, method: string, route: string, body?: unknown): Promise<any> {
  const r = await fetch(base + route, { method, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** Publish QoS 1 messages as fast as the window allows; SIGKILL the server as soon as `killAfter` PUBACKs arrived. */
async function publishThenKill(k: KengProcess, deviceId: string, secret: string, total: number, killAfter: number, t0: number): Promise<Set<number>> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${k.mqttPort}`, { username: deviceId, password: secret, reconnectPeriod: 0, protocolVersion: 4 });
  client.on('error', () => { /* the server dies under us */ });
  await new Promise<void>((resolve, reject) => { client.once('connect', () => resolve()); client.once('error', reject); });
  const acked = new Set<number>();
  await new Promise<void>((resolve) => {
    let killed = false;
    for (let i = 0; i < total; i++) {
      const ts = t0 + i;
      client.publish(`v1/devices/${deviceId}/telemetry`, JSON.stringify({ ts, values: { a: i, b: i * 2, c: true, d: 'x' } }), { qos: 1 }, (err) => {
        if (err || killed) return;
        acked.add(ts);
        if (acked.size >= killAfter) { killed = true; k.proc.kill('SIGKILL'); resolve(); }
      });
    }
    k.proc.once('exit', () => resolve());
  });
  await k.exited;
  client.end(true);
  return acked;
}

async function countStored(base: string, deviceId: string, from: number, to: number): Promise<Set<number>> {
  const res = await api(base, 'GET', `/api/v1/devices/${deviceId}/telemetry?fields=a,b,c,d&from=${from}&to=${to}`);
  const seen = new Set<number>();
  for (const p of res.points) if (p.values.a !== undefined && p.values.b !== undefined && p.values.c !== undefined && p.values.d !== undefined) seen.add(Date.parse(p.ts));
  return seen;
}

async function setup(env: Record<string, string>): Promise<{ k: KengProcess; secret: string }> {
  const k = await spawnKeng(env);
  procs.push(k);
  await api(k.httpUrl, 'POST', '/api/v1/areas', { code: 'p1', name: 'P', level: 'province' });
  const dev = await api(k.httpUrl, 'POST', '/api/v1/devices', { id: 'crash-1', kind: 'sensor', name: 'c', area: 'p1' });
  return { k, secret: dev.secret };
}

describe('crash safety', () => {
  it('embedded store: every reading acknowledged before SIGKILL is there after restart', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-crash-')); dirs.push(dataDir);
    const env = { KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: TOKEN, ...FAST };
    const { k, secret } = await setup(env);
    const t0 = Date.now() - 600_000;
    const acked = await publishThenKill(k, 'crash-1', secret, 5000, 2000, t0);
    expect(acked.size).toBeGreaterThanOrEqual(2000);
    const k2 = await spawnKeng(env); procs.push(k2);
    const stored = await countStored(k2.httpUrl, 'crash-1', t0, t0 + 5000);
    const missing = [...acked].filter((ts) => !stored.has(ts));
    expect(missing).toEqual([]);
    k2.proc.kill('SIGTERM');
    expect((await k2.exited).code).toBe(0);
  }, 60_000);

  it('influxdb store (v1, real influxd): acknowledged readings survive SIGKILL via the on-disk queue', async () => {
    influx = await startInfluxd();
    const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-crash-')); dirs.push(dataDir);
    const env = { KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: TOKEN, KENG_TELEMETRY_STORE: 'influxdb', KENG_INFLUX_API: 'v1', KENG_INFLUX_URL: influx.url, KENG_INFLUX_DATABASE: 'crash', ...FAST };
    const { k, secret } = await setup(env);
    const t0 = Date.now() - 600_000;
    const acked = await publishThenKill(k, 'crash-1', secret, 5000, 2000, t0);
    const k2 = await spawnKeng(env); procs.push(k2);
    // the queue drains to InfluxDB after restart; count there directly
    const q = `SELECT count(a) FROM telemetry WHERE device_id='crash-1'`;
    let count = 0;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const r = await fetch(`${influx.url}/query?db=crash&q=${encodeURIComponent(q)}`);
      const j: any = await r.json();
      count = j.results?.[0]?.series?.[0]?.values?.[0]?.[1] ?? 0;
      if (count >= acked.size) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(count).toBeGreaterThanOrEqual(acked.size);
    const stored = await countStored(k2.httpUrl, 'crash-1', t0, t0 + 5000);
    expect([...acked].filter((ts) => !stored.has(ts))).toEqual([]);
    k2.proc.kill('SIGTERM');
    expect((await k2.exited).code).toBe(0);
  }, 90_000);
});

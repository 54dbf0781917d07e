/**
 * Limits never cost acknowledged data, with Keng's DEFAULT limits (50 messages/s,
 * burst 500) and independent clients: a device uploading a 2,000-message backlog
 * one reading per message (as ThingsBoard and most Arduino firmware do) is slowed
 * by flow control, every message is acknowledged and stored, nothing is refused,
 * it is never disconnected, and another device keeps its normal latency. Messages
 * that break the rules (invalid payloads) are still dropped and, repeated,
 * disconnect the device.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, publish, end, parseMetrics } from '../helpers/mqtt.js';
import { seedAreas, seedDevices, type DeviceCredentials } from '../helpers/seed.js';

let t: TestApp;
let creds: Record<string, DeviceCredentials> = {};

beforeAll(async () => {
  t = await startTestApp(); // default mqtt limits on purpose
  expect(t.app.config.mqtt).toMatchObject({ rateLimitPerSec: 50, rateLimitBurst: 500, abuseDisconnectAfter: 20 });
  await seedAreas(t, [{ code: 'p01', name: 'Tỉnh', level: 'province' }, { code: 'c01', name: 'Xã', level: 'commune', parent: 'p01' }]);
  creds = await seedDevices(t, ['backlog-1', 'calm-1', 'junk-1'].map((id) => ({ id, kind: 'sensor' as const, name: id, area: 'c01' })));
});
afterAll(async () => { await t?.stop(); });

async function metric(name: string): Promise<number> {
  return parseMetrics(await (await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } })).text()).get(name) ?? 0;
}

/** Every stored point of one field, following nextFrom pages. */
async function storedTimestamps(deviceId: string, field: string, from: number, to: number): Promise<number[]> {
  const out: number[] = [];
  let next: string | number = from;
  for (;;) {
    const r = await t.api('GET', `/api/v1/devices/${deviceId}/telemetry?fields=${field}&from=${encodeURIComponent(String(next))}&to=${to}`);
    expect(r.status).toBe(200);
    for (const p of r.body.points) if (p.values[field] !== undefined) out.push(Date.parse(p.ts));
    if (!r.body.nextFrom) return out;
    next = r.body.nextFrom;
  }
}

// paho-mqtt 1.6 (Debian): QoS 1, its default 20 messages in flight, as fast as the broker acknowledges.
const PAHO_BACKLOG = `
import json, sys, time
import paho.mqtt.client as mqtt
port, dev, secret, n, t0 = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
acked, disconnects = set(), []
c = mqtt.Client(client_id=dev)
c.username_pw_set(dev, secret)
c.on_publish = lambda cl, ud, mid: acked.add(mid)
c.on_disconnect = lambda cl, ud, rc: disconnects.append(rc)
c.connect("127.0.0.1", port, 60)
c.loop_start()
start = time.time()
infos = [c.publish("v1/devices/%s/telemetry" % dev, json.dumps({"ts": t0 + i, "values": {"soil_moisture": i % 100}}), qos=1) for i in range(n)]
for i in infos: i.wait_for_publish(120)
took = time.time() - start
c.disconnect(); c.loop_stop()
print(json.dumps({"acked": len(acked), "published": sum(1 for i in infos if i.is_published()), "seconds": took, "unexpectedDisconnects": [d for d in disconnects if d != 0]}))
`;


describe('rate limits as flow control (default settings, independent clients)', () => {
  it('a 2,000-message backlog is stored whole, within the time the rate explains; another device keeps its latency', async () => {
    const N = 2_000;
    const t0 = Date.now() - 3_600_000;
    const throttledBefore = await metric('keng_throttled_messages_total');
    const calm = await connectDevice(t.mqttUrl, 'calm-1', creds['calm-1']!.secret);
    const calmLatency: number[] = [];
    let uploading = true;
    const calmLoop = (async () => {
      for (let i = 0; uploading; i++) {
        const s = Date.now();
        await publish(calm, 'v1/devices/calm-1/telemetry', JSON.stringify({ ts: t0 + i, values: { level: i } }));
        calmLatency.push(Date.now() - s);
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    const { stdout: out } = await promisify(execFile)('/usr/bin/python3', ['-c', PAHO_BACKLOG, String(t.mqttPort), 'backlog-1', creds['backlog-1']!.secret, String(N), String(t0)], { timeout: 120_000 });
    uploading = false;
    await calmLoop;
    await end(calm);
    const r = JSON.parse(out.trim().split('\n').pop()!);

    expect(r.acked).toBe(N);
    expect(r.unexpectedDisconnects).toEqual([]);
    // 500 at once, 1,500 at 50/s: 30 s. Flow control, not a faster or a dropping path.
    expect(r.seconds).toBeGreaterThan(27);
    expect(r.seconds).toBeLessThan(60);
    const stored = await storedTimestamps('backlog-1', 'soil_moisture', t0, t0 + N);
    expect(stored).toHaveLength(N);
    expect(new Set(stored).size).toBe(N);
    expect(await metric('keng_rejected_total{reason="rate_limited"}')).toBe(0);
    expect(await metric('keng_mqtt_refused_total{op="publish",reason="abuse_disconnect"}')).toBe(0);
    expect(await metric('keng_throttled_messages_total') - throttledBefore).toBeGreaterThan(1_000);
    // The calm device published ~100 times while the backlog was held back by up to 30 s: none of its
    // messages waited for that (the bounds leave room for a loaded CI machine, not for a throttle wait).
    expect(calmLatency.length).toBeGreaterThan(80);
    const sorted = [...calmLatency].sort((a, b) => a - b);
    expect(sorted[Math.floor(sorted.length / 2)]!).toBeLessThan(150);
    expect(sorted[sorted.length - 1]!).toBeLessThan(1_000);
  }, 150_000);

  it('a flood of invalid payloads is dropped, counted, and disconnects the device; a good device is untouched', async () => {
    const junk = await connectDevice(t.mqttUrl, 'junk-1', creds['junk-1']!.secret);
    const good = await connectDevice(t.mqttUrl, 'calm-1', creds['calm-1']!.secret);
    const before = await metric('keng_rejected_total{reason="not_json"}');
    const closed = new Promise<void>((r) => junk.once('close', () => r()));
    for (let i = 0; i < 30 && junk.connected; i++) junk.publish('v1/devices/junk-1/telemetry', 'not json', { qos: 0 });
    await closed;
    expect(await metric('keng_rejected_total{reason="not_json"}') - before).toBeGreaterThan(20);
    expect(await metric('keng_mqtt_refused_total{op="publish",reason="abuse_disconnect"}')).toBe(1);
    await publish(good, 'v1/devices/calm-1/telemetry', JSON.stringify({ after_junk: 1 }));
    expect(good.connected).toBe(true);
    await end(good);
    const dev = await t.api('GET', '/api/v1/devices/calm-1');
    expect(dev.body.latest.after_junk.value).toBe(1);
  });
});

/**
 * Deleting a device with telemetry.onDeviceDelete = 'purge' in front of a real InfluxDB 1.6.7,
 * readings published over real MQTT:
 *  - readings already in InfluxDB, readings queued on disk during an outage, and a dead letter:
 *    the queue loses the device's lines at once (the outage does not hold that up), the InfluxDB
 *    part waits, survives a restart of Keng, and completes once InfluxDB is back; the queue then
 *    forwards only the other device's readings; the purge is audited with its counts;
 *  - a device registered again under the id before the purge ran keeps its own readings (only
 *    those from before the deletion go: DELETE with a time bound).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { InfluxTelemetryStore } from '../../src/storage/telemetry/index.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { influxdForFile } from '../helpers/influxd.js';
import { connectDevice, end, publish, waitFor } from '../helpers/mqtt.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';

const fx = influxdForFile('keng-purge-influx-');
let t: TestApp | undefined;
const dirs: string[] = [];
afterEach(async () => { await t?.stop(); t = undefined; });
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

const HOUR = 3_600_000;
const AREAS = [{ code: 'p1', name: 'Tỉnh', level: 'province' }];

function start(database: string, dataDir: string): Promise<TestApp> {
  return startTestApp({
    telemetry: { store: 'influxdb', onDeviceDelete: 'purge' },
    influx: { url: fx.influxd.url, api: 'v1', database, retryMinMs: 100, retryMaxMs: 500, timeoutMs: 1000 },
  }, { dataDir });
}

/** Readings per device in InfluxDB (all fields). */
async function influxCounts(database: string): Promise<Record<string, number>> {
  const r = await fx.influxd.queryOrThrow('SELECT COUNT(*) FROM "telemetry" GROUP BY "device_id"', database);
  const out: Record<string, number> = {};
  for (const s of (r.results?.[0]?.series ?? []) as { tags?: Record<string, string>; values?: unknown[][] }[]) {
    out[s.tags!.device_id!] = (s.values![0] as unknown[]).slice(1).reduce<number>((n, v) => n + (typeof v === 'number' ? v : 0), 0);
  }
  return out;
}

/** Queue lines and dead letters of one device in the InfluxDB queue (read-only, as another process). */
function queued(dataDir: string, deviceId: string): { lines: number; dead: number; readings: number } {
  const db = new Database(path.join(dataDir, 'influx-queue.db'), { readonly: true, fileMustExist: true });
  try {
    const re = new RegExp(`,device_id=${deviceId}[, ]`);
    const bodies = db.prepare('SELECT body FROM queue').pluck().all() as string[];
    const lines = bodies.flatMap((b) => b.split('\n')).filter((l) => re.test(l)).length;
    const dead = db.prepare('SELECT COUNT(*) FROM dead_readings WHERE device = ?').pluck().get(deviceId) as number;
    const readings = db.prepare('SELECT COALESCE(SUM(readings), 0) FROM queue').pluck().get() as number;
    return { lines, dead, readings };
  } finally { db.close(); }
}

async function records(c: MqttClient, deviceId: string, t0: number, n: number): Promise<void> {
  const part = Array.from({ length: n }, (_, k) => ({ ts: t0 + k * 1000, values: { rain_mm: k / 10, battery: 3.7 } }));
  await publish(c, `v1/devices/${deviceId}/telemetry`, JSON.stringify(part));
}

async function history(app: TestApp, deviceId: string): Promise<number> {
  const from = encodeURIComponent(new Date(Date.now() - 24 * HOUR).toISOString());
  const r = await app.api('GET', `/api/v1/devices/${deviceId}/telemetry?from=${from}&limit=10000`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.points.length as number;
}

async function purgeAudit(app: TestApp): Promise<any> {
  const r = await app.api('GET', '/api/v1/audit?action=device.purge');
  return r.body.entries[0];
}

describe('deleting a device: purge from InfluxDB 1.6.7 and its queue', { timeout: 180_000 }, () => {
  it('InfluxDB down at the deletion: the queue is purged at once, InfluxDB after it is back (Keng restarted meanwhile)', async () => {
    const db = 'purge_outage';
    const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-purge-influx-'));
    dirs.push(dataDir);
    t = await start(db, dataDir);
    await seedAreas(t, AREAS);
    const creds = await seedDevices(t, ['rain-1', 'rain-2'].map((id) => ({ id, kind: 'sensor', name: id, area: 'p1' })));
    const t0 = Date.now() - 3 * HOUR;

    // In InfluxDB: 300 records of two fields each, and a string field; one dead letter (type conflict).
    const c1 = await connectDevice(t.mqttUrl, 'rain-1', creds['rain-1']!.secret);
    const c2 = await connectDevice(t.mqttUrl, 'rain-2', creds['rain-2']!.secret);
    await records(c1, 'rain-1', t0, 300);
    await records(c2, 'rain-2', t0, 300);
    await publish(c1, 'v1/devices/rain-1/telemetry', JSON.stringify({ ts: t0 - 1000, values: { note: 'mưa' } }));
    await publish(c1, 'v1/devices/rain-1/telemetry', JSON.stringify({ ts: t0 - 2000, values: { note: 7 } }));
    expect(await t.app.store.drain(30_000)).toBe(true);
    expect(await influxCounts(db)).toEqual({ 'rain-1': 601, 'rain-2': 600 });
    expect(queued(dataDir, 'rain-1').dead).toBe(1);

    // The outage: 200 more records each wait in the queue.
    await fx.influxd.stop();
    await records(c1, 'rain-1', t0 + 400_000, 200);
    await records(c2, 'rain-2', t0 + 400_000, 200);
    await end(c1); await end(c2);
    expect(queued(dataDir, 'rain-1').lines).toBe(200);

    expect((await t.api('DELETE', '/api/v1/devices/rain-1')).status).toBe(204);
    // The local stage completes despite the outage; the InfluxDB stage fails and is retried later.
    const job = await waitFor(async () => (await t!.app.purger.pending()).find((j) => j.deviceId === 'rain-1' && j.stage === 'remote' && j.attempts >= 1), 30_000, 100);
    expect(job.removed).toEqual({ queuedReadings: 400, deadReadings: 1 });
    expect(job.lastError).toBeTruthy();
    expect(queued(dataDir, 'rain-1')).toEqual({ lines: 0, dead: 0, readings: 400 }); // rain-2's 400 remain
    expect((t.app.store as InfluxTelemetryStore).queueStats().readings).toBe(400);
    expect(await purgeAudit(t)).toBeUndefined();

    // Keng stops before InfluxDB is back; the purge is on disk and resumes at the next start.
    await t.stop({ keepData: true });
    t = undefined;
    await fx.influxd.restart();
    t = await start(db, dataDir);
    const purged = await waitFor(() => purgeAudit(t!), 60_000, 200);
    expect(purged.after.removed).toEqual({ queuedReadings: 400, deadReadings: 1, influxReadings: 601 });
    expect(purged.after.before).toBeNull();
    expect(purged.after.requestedBy).toBe('admin:admin');
    expect(await t.app.purger.pending()).toEqual([]);

    // The queue forwards the other device's readings only; InfluxDB no longer knows rain-1 at all.
    expect(await t.app.store.drain(30_000)).toBe(true);
    expect(await influxCounts(db)).toEqual({ 'rain-2': 1000 });
    const tags = await fx.influxd.queryOrThrow('SHOW TAG VALUES FROM "telemetry" WITH KEY = "device_id"', db);
    expect((tags.results?.[0]?.series?.[0]?.values ?? []).map((v) => v[1])).toEqual(['rain-2']);

    // The id again: it starts empty.
    await seedDevices(t, [{ id: 'rain-1', kind: 'sensor', name: 'rain-1 mới', area: 'p1' }]);
    expect(await history(t, 'rain-1')).toBe(0);
  });

  it('a device registered again under the id before the purge ran keeps its own readings', async () => {
    const db = 'purge_again';
    const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-purge-influx-'));
    dirs.push(dataDir);
    t = await start(db, dataDir);
    await seedAreas(t, AREAS);
    const creds = await seedDevices(t, [{ id: 'loa-1', kind: 'sensor', name: 'loa-1', area: 'p1' }]);
    const c = await connectDevice(t.mqttUrl, 'loa-1', creds['loa-1']!.secret);
    await records(c, 'loa-1', Date.now() - 2 * HOUR, 50);
    await end(c);
    expect(await t.app.store.drain(30_000)).toBe(true);
    expect(await influxCounts(db)).toEqual({ 'loa-1': 100 });

    expect((await t.api('DELETE', '/api/v1/devices/loa-1')).status).toBe(204);
    const again = await seedDevices(t, [{ id: 'loa-1', kind: 'sensor', name: 'loa-1 mới', area: 'p1' }]);
    const c2 = await connectDevice(t.mqttUrl, 'loa-1', again['loa-1']!.secret);
    await publish(c2, 'v1/devices/loa-1/telemetry', JSON.stringify({ rain_mm: 1.5 }));
    await end(c2);

    const purged = await waitFor(() => purgeAudit(t!), 30_000, 200);
    expect(purged.after.before).toBeGreaterThan(Date.now() - 60_000);
    expect(purged.after.removed).toEqual({ queuedReadings: 0, deadReadings: 0, influxReadings: 100 });
    expect(await t.app.store.drain(30_000)).toBe(true);
    expect(await influxCounts(db)).toEqual({ 'loa-1': 1 });
    expect(await history(t, 'loa-1')).toBe(1);
  });
});

/**
 * Deleting a device with the embedded store, readings published over real MQTT:
 *  - telemetry.onDeviceDelete = 'purge': its readings (compacted and recent, several purge chunks)
 *    and dead letters leave telemetry.db, other devices' stay, the purge is audited with counts, and
 *    a device registered again under the id starts empty;
 *  - 'keep' (default): the readings stay in telemetry.db but never show under the new device; then
 *    `keng devices purge <id>` (the real CLI, while the server runs) removes the old device's
 *    readings and keeps the new one's;
 *  - Keng killed (SIGKILL) right after the deletion: the purge was recorded with it and runs after
 *    the restart.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, publish, waitFor } from '../helpers/mqtt.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';
import { ROOT, spawnKeng, type KengProcess } from '../helpers/process.js';

let t: TestApp | undefined;
afterEach(async () => { await t?.stop(); t = undefined; });

const AREAS = [{ code: 'p1', name: 'Tỉnh', level: 'province' }, { code: 'c1', name: 'Xã', level: 'commune', parent: 'p1' }];
const HOUR = 3_600_000;

/** Readings (fields of points, embedded-db.ts) and other rows of one device in telemetry.db (read-only connection, as a second process would). */
const inPoints = (t: string): string => `SELECT COALESCE(SUM((SELECT COUNT(*) FROM json_each(p))), 0) FROM ${t} WHERE device = ?`;

function stored(dataDir: string, deviceId: string): { readings: number; recent: number; dead: number; series: number; named: boolean } {
  const db = new Database(path.join(dataDir, 'telemetry.db'), { readonly: true, fileMustExist: true });
  try {
    const dev = db.prepare('SELECT id FROM devices WHERE name = ?').pluck().get(deviceId) as number | undefined;
    const n = (sql: string, arg: unknown): number => db.prepare(sql).pluck().get(arg) as number;
    return {
      readings: dev === undefined ? 0 : n(inPoints('points'), dev),
      recent: dev === undefined ? 0 : n(inPoints('recent_points'), dev),
      dead: n('SELECT COUNT(*) FROM dead_readings WHERE device = ?', deviceId),
      series: dev === undefined ? 0 : n('SELECT COUNT(*) FROM series WHERE device = ?', dev),
      named: dev !== undefined, // the id in the store's dictionary of device names
    };
  } finally { db.close(); }
}

/** `count` readings of two fields each, one backlog message per 2,500 records (under the payload limit). */
async function backlog(c: MqttClient, deviceId: string, t0: number, records: number): Promise<void> {
  for (let i = 0; i < records; i += 2500) {
    const part = Array.from({ length: Math.min(2500, records - i) }, (_, k) => ({ ts: t0 + (i + k) * 1000, values: { soil: (i + k) / 10, temp: 20 } }));
    await publish(c, `v1/devices/${deviceId}/telemetry`, JSON.stringify(part));
  }
}

async function history(app: TestApp, deviceId: string): Promise<number> {
  const from = encodeURIComponent(new Date(Date.now() - 24 * HOUR).toISOString());
  const r = await app.api('GET', `/api/v1/devices/${deviceId}/telemetry?from=${from}&limit=10000`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.points.length as number;
}

async function auditEntries(app: TestApp, action: string): Promise<any[]> {
  const r = await app.api('GET', `/api/v1/audit?action=${action}`);
  expect(r.status).toBe(200);
  return r.body.entries as any[];
}

/** Publishes the history of soil-1 (6,000 compacted readings, a recent one, a dead letter) and soil-2's. */
async function seedHistory(app: TestApp, creds: Record<string, { secret: string }>): Promise<void> {
  const t0 = Date.now() - 3 * HOUR;
  const c1 = await connectDevice(app.mqttUrl, 'soil-1', creds['soil-1']!.secret);
  const c2 = await connectDevice(app.mqttUrl, 'soil-2', creds['soil-2']!.secret);
  await backlog(c1, 'soil-1', t0, 3000);
  await backlog(c2, 'soil-2', t0, 100);
  await publish(c1, 'v1/devices/soil-1/telemetry', JSON.stringify({ ts: t0 - 1000, values: { note: 'khô' } }));
  await publish(c1, 'v1/devices/soil-1/telemetry', JSON.stringify({ ts: t0 - 2000, values: { note: 5 } })); // type conflict: dead letter
  // Compaction moves points older than 10 s into `points`; then one reading stays in `recent_points`.
  await waitFor(() => stored(app.dataDir, 'soil-1').readings >= 6001, 30_000, 200);
  await publish(c1, 'v1/devices/soil-1/telemetry', JSON.stringify({ soil: 1, temp: 2 }));
  await end(c1); await end(c2);
  const s = stored(app.dataDir, 'soil-1');
  expect(s).toMatchObject({ readings: 6001, dead: 1 });
  expect(s.recent).toBeGreaterThan(0);
}

describe('deleting a device: telemetry.onDeviceDelete = purge (embedded store)', { timeout: 120_000 }, () => {
  it('removes its readings and dead letters, keeps other devices\', audits it, and a new device of the id starts empty', async () => {
    t = await startTestApp({ telemetry: { onDeviceDelete: 'purge' } });
    await seedAreas(t, AREAS);
    const creds = await seedDevices(t, ['soil-1', 'soil-2'].map((id) => ({ id, kind: 'sensor', name: id, area: 'c1' })));
    await seedHistory(t, creds);
    expect(await history(t, 'soil-1')).toBeGreaterThan(3000);

    expect((await t.api('DELETE', '/api/v1/devices/soil-1')).status).toBe(204);
    const del = (await auditEntries(t, 'device.delete'))[0];
    expect(del.after).toEqual({ readings: 'purge' });
    expect((await t.app.purger.pending()).map((j) => j.deviceId)).toEqual(['soil-1']); // recorded with the deletion

    const purged = await waitFor(async () => (await auditEntries(t!, 'device.purge'))[0], 30_000, 200);
    expect(purged.actor).toBe('system');
    expect(purged.target).toBe('device:soil-1');
    expect(purged.after.requestedBy).toBe('admin:admin');
    expect(purged.after.before).toBeNull();
    expect(purged.after.removed).toEqual({ readings: 6003, deadReadings: 1 }); // 6,001 old, 2 recent
    expect(stored(t.dataDir, 'soil-1')).toEqual({ readings: 0, recent: 0, dead: 0, series: 0, named: false }); // no trace of the id
    const other = stored(t.dataDir, 'soil-2');
    expect(other.readings + other.recent).toBe(200);
    expect(await t.app.purger.pending()).toEqual([]);

    // The id again: nothing of the old device, its own readings from now on.
    const again = await seedDevices(t, [{ id: 'soil-1', kind: 'sensor', name: 'soil-1 mới', area: 'c1' }]);
    expect(await history(t, 'soil-1')).toBe(0);
    expect((await t.api('GET', '/api/v1/devices/soil-1')).body.latest).toEqual({});
    const c = await connectDevice(t.mqttUrl, 'soil-1', again['soil-1']!.secret);
    await publish(c, 'v1/devices/soil-1/telemetry', JSON.stringify({ soil: 42 }));
    await end(c);
    expect(await history(t, 'soil-1')).toBe(1);
  });
});

describe('deleting a device: telemetry.onDeviceDelete = keep (default), then `keng devices purge`', { timeout: 120_000 }, () => {
  it('keeps the readings hidden; the CLI purge later removes the old device\'s only', async () => {
    t = await startTestApp();
    await seedAreas(t, AREAS);
    const creds = await seedDevices(t, ['soil-1', 'soil-2'].map((id) => ({ id, kind: 'sensor', name: id, area: 'c1' })));
    await seedHistory(t, creds);
    const before = stored(t.dataDir, 'soil-1');

    expect((await t.api('DELETE', '/api/v1/devices/soil-1')).status).toBe(204);
    expect((await auditEntries(t, 'device.delete'))[0].after).toEqual({ readings: 'keep' });
    expect(await t.app.purger.pending()).toEqual([]);
    await new Promise((r) => setTimeout(r, 4_000)); // past the purge delay: nothing happens
    const kept = stored(t.dataDir, 'soil-1');
    expect(kept.readings + kept.recent).toBe(before.readings + before.recent);
    expect(kept.dead).toBe(1);

    const again = await seedDevices(t, [{ id: 'soil-1', kind: 'sensor', name: 'soil-1 mới', area: 'c1' }]);
    expect(await history(t, 'soil-1')).toBe(0); // the tombstone hides the old readings
    const c = await connectDevice(t.mqttUrl, 'soil-1', again['soil-1']!.secret);
    await publish(c, 'v1/devices/soil-1/telemetry', JSON.stringify({ soil: 42 }));
    await end(c);
    expect(await history(t, 'soil-1')).toBe(1);

    // The real CLI, on the running server's data directory.
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KENG_')) env[k] = v;
    const cli = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'bin/keng.js'), ...args],
      { cwd: ROOT, env: { ...env, KENG_DATA_DIR: t!.dataDir }, encoding: 'utf8', timeout: 30_000 });
    expect(cli('devices', 'purge', 'nothing-here').status).not.toBe(0);
    const r = cli('devices', 'purge', 'soil-1');
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(cli('devices', 'purges', '--json').stdout).map((j: any) => j.deviceId)).toEqual(['soil-1']);
    expect((await auditEntries(t, 'device.purge_requested'))[0].target).toBe('device:soil-1');

    const purged = await waitFor(async () => (await auditEntries(t!, 'device.purge'))[0], 30_000, 200);
    expect(purged.after.before).toBeGreaterThan(0); // registered again: only readings from before the deletion
    expect(purged.after.removed).toEqual({ readings: before.readings + before.recent, deadReadings: 1 });
    const left = stored(t.dataDir, 'soil-1');
    expect(left.readings + left.recent).toBe(1); // the new device's reading
    expect(left.dead).toBe(0);
    expect(await history(t, 'soil-1')).toBe(1);
    expect(JSON.parse(cli('devices', 'purges', '--json').stdout)).toEqual([]);
  });
});

describe('deleting a device: Keng killed before the purge ran', { timeout: 120_000 }, () => {
  let keng: KengProcess | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    if (keng && keng.proc.exitCode === null && keng.proc.signalCode === null) { keng.proc.kill('SIGTERM'); await keng.exited; }
    if (dir) rmSync(dir, { recursive: true, force: true });
    keng = undefined; dir = undefined;
  });

  it('the purge recorded with the deletion runs after the restart', async () => {
    const TOKEN = 'purge-crash-admin-token-0123456789';
    dir = mkdtempSync(path.join(tmpdir(), 'keng-purge-crash-'));
    const env = { KENG_DATA_DIR: dir, KENG_ADMIN_TOKEN: TOKEN, KENG_ON_DEVICE_DELETE: 'purge' };
    keng = await spawnKeng(env);
    const admin = { async api(method: string, route: string, body?: unknown) {
      const r = await fetch(keng!.httpUrl + route, {
        method, body: body === undefined ? undefined : JSON.stringify(body),
        headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      });
      const text = await r.text();
      return { status: r.status, body: text ? JSON.parse(text) : undefined };
    } };
    await seedAreas(admin, [AREAS[0]!]);
    const creds = await seedDevices(admin, [{ id: 'soil-9', kind: 'sensor', name: 'soil-9', area: 'p1' }]);
    const c = await connectDevice(`mqtt://127.0.0.1:${keng.mqttPort}`, 'soil-9', creds['soil-9']!.secret);
    await backlog(c, 'soil-9', Date.now() - 2 * HOUR, 1000);
    await end(c);

    expect((await admin.api('DELETE', '/api/v1/devices/soil-9')).status).toBe(204);
    keng.proc.kill('SIGKILL'); // well within the 3 s before the purge starts
    expect((await keng.exited).signal).toBe('SIGKILL');
    const after = stored(dir, 'soil-9');
    expect(after.readings + after.recent).toBe(2000); // nothing purged yet

    keng = await spawnKeng(env);
    const purged = await waitFor(async () => (await admin.api('GET', '/api/v1/audit?action=device.purge')).body.entries[0], 30_000, 200);
    expect(purged.after.removed).toEqual({ readings: 2000, deadReadings: 0 });
    expect(stored(dir, 'soil-9')).toEqual({ readings: 0, recent: 0, dead: 0, series: 0, named: false });
  });
});

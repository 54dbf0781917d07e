/**
 * Shared attributes (src/attributes) in the running app: inheritance down the
 * area tree, limits, storage across a restart, a deleted device's values
 * gone with it, pushes to a token device subscribed in real-id form, and the
 * IOC's read-only MQTT client never receiving them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas, seedDevices, type DeviceCredentials } from '../helpers/seed.js';
import { MAX_KEYS } from '../../src/attributes/index.js';

let t: TestApp;
let creds: Record<string, DeviceCredentials>;

beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, COMMUNE_TREE);
  creds = await seedDevices(t, [
    { id: 'spk-a', kind: 'speaker', name: 'Loa A', area: 'ca' },
    { id: 'spk-a1', kind: 'speaker', name: 'Loa A1', area: 'va1' },
    { id: 'spk-b', kind: 'speaker', name: 'Loa B', area: 'cb' },
  ]);
}, 60_000);
afterAll(async () => { await t?.stop(); });

describe('shared attributes service', () => {
  it('a key resolves to the nearest owner: device, village, commune, province', async () => {
    const s = t.app.sharedAttributes;
    await s.update({ kind: 'area', id: 'p1' }, { a: 'p1', b: 'p1', c: 'p1', d: 'p1' });
    await s.update({ kind: 'area', id: 'ca' }, { b: 'ca', c: 'ca', d: 'ca' });
    await s.update({ kind: 'area', id: 'va1' }, { c: 'va1', d: 'va1' });
    await s.update({ kind: 'device', id: 'spk-a1' }, { d: 'dev' });
    expect(s.effective('spk-a1').shared).toEqual({ a: 'p1', b: 'ca', c: 'va1', d: 'dev' });
    expect(s.effective('spk-a').shared).toEqual({ a: 'p1', b: 'ca', c: 'ca', d: 'ca' });
    expect(s.effective('spk-b').shared).toEqual({ a: 'p1', b: 'p1', c: 'p1', d: 'p1' });
    expect(s.sharedAttributes('spk-a1', ['a', 'd', 'zz'])).toEqual({ a: 'p1', d: 'dev' });
    expect(s.areaView('va1').sources).toEqual({ a: 'area:p1', b: 'area:ca', c: 'area:va1', d: 'area:va1' });
    expect(s.effective('nobody').shared).toEqual({});
  });

  it(`holds at most ${MAX_KEYS} keys per owner (422), the change not applied`, async () => {
    const body = Object.fromEntries(Array.from({ length: MAX_KEYS }, (_, i) => [`k${i}`, i]));
    expect((await t.api('PUT', '/api/v1/devices/spk-b/attributes/shared', body)).status).toBe(200);
    const r = await t.api('PUT', '/api/v1/devices/spk-b/attributes/shared', { one_more: 1 });
    expect(r.status).toBe(422);
    expect(Object.keys(t.app.sharedAttributes.own({ kind: 'device', id: 'spk-b' }))).toHaveLength(MAX_KEYS);
  });

  it('a token device subscribed with its real id gets pushes too; the IOC client does not', async () => {
    const tok = await t.api('POST', '/api/v1/tokens', { name: 'ioc', role: 'service', areas: ['p1'] });
    expect(tok.status).toBe(201);
    const ioc = await connectDevice(t.mqttUrl, tok.body.token as string, undefined, { clean: true });
    const iocSeen: string[] = [];
    ioc.on('message', (topic) => iocSeen.push(topic));
    await ioc.subscribeAsync('v1/devices/+/attributes', { qos: 1 });

    const dev = await connectDevice(t.mqttUrl, creds['spk-a']!.accessToken, undefined, { clean: true });
    const seen: Array<[string, unknown]> = [];
    dev.on('message', (topic, p) => seen.push([topic, JSON.parse(p.toString())]));
    await dev.subscribeAsync('v1/devices/spk-a/attributes', { qos: 1 });
    await waitFor(() => seen.length >= 1);
    expect(seen[0]).toEqual(['v1/devices/spk-a/attributes', { a: 'p1', b: 'ca', c: 'ca', d: 'ca' }]);
    expect((await t.api('PUT', '/api/v1/devices/spk-a/attributes/shared', { e: true })).status).toBe(200);
    await waitFor(() => seen.length >= 2);
    expect(seen[1]).toEqual(['v1/devices/spk-a/attributes', { e: true }]);
    await new Promise((r) => setTimeout(r, 300));
    expect(iocSeen).toEqual([]);
    await end(dev);
    await end(ioc);
  });

  it('a connected device moved to another area gets what the move changes for it', async () => {
    const dev = await connectDevice(t.mqttUrl, creds['spk-a']!.accessToken, undefined, { clean: true });
    const seen: unknown[] = [];
    dev.on('message', (_topic, p) => seen.push(JSON.parse(p.toString())));
    await dev.subscribeAsync('v1/devices/me/attributes', { qos: 1 });
    await waitFor(() => seen.length >= 1); // its whole set on subscribe
    // ca → va1: c and d now come from the village (b from ca as before); e is its own.
    expect((await t.api('PATCH', '/api/v1/devices/spk-a', { area: 'va1' })).status).toBe(200);
    await waitFor(() => seen.length >= 2);
    expect(seen[1]).toEqual({ c: 'va1', d: 'va1' });
    expect((await t.api('PATCH', '/api/v1/devices/spk-a', { name: 'Loa A (đổi tên)' })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 300));
    expect(seen).toHaveLength(2); // a rename changes nothing it gets
    await end(dev);
  });

  it('values survive a restart; a deleted device takes its own values with it', async () => {
    await t.stop({ keepData: true });
    t = await startTestApp({}, { dataDir: t.dataDir });
    const s = t.app.sharedAttributes;
    expect(s.effective('spk-a1').shared).toEqual({ a: 'p1', b: 'ca', c: 'va1', d: 'dev' });
    expect((await t.api('DELETE', '/api/v1/devices/spk-a1')).status).toBe(204);
    expect(s.own({ kind: 'device', id: 'spk-a1' })).toEqual({});
    const rows = t.app.stateDb.db.prepare('SELECT count(*) AS n FROM device_shared_attributes WHERE device_id = ?').get('spk-a1') as { n: number };
    expect(rows.n).toBe(0);
  }, 60_000);
});

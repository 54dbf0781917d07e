/**
 * Shared attributes with a ThingsBoard device over real MQTT: a paho-mqtt
 * imitation of the Python SDK 1.7.1 (test/helpers/tb-device.ts) gets the
 * whole effective set when it subscribes, each change as it happens (area
 * values inherited down the tree, device values winning, `deleted` for
 * removed keys), and `shared` in attribute responses filtered by sharedKeys;
 * every change is audited. Fails, never skips, without /usr/bin/python3 + paho.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas, seedDevices, type DeviceCredentials } from '../helpers/seed.js';
import { TbPythonDevice } from '../helpers/tb-device.js';

const PUSH = 'v1/devices/me/attributes';
let t: TestApp;
let creds: Record<string, DeviceCredentials>;
let dev: TbPythonDevice | undefined;

beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, COMMUNE_TREE);
  creds = await seedDevices(t, [
    { id: 'spk-1', kind: 'speaker', name: 'Loa thôn A1', area: 'va1' },
    { id: 'sen-b', kind: 'sensor', name: 'Cảm biến xã B', area: 'cb' },
  ]);
  // Set before the device connects: it must get them when it subscribes.
  expect((await t.api('PUT', '/api/v1/areas/ca/attributes/shared', { reportEverySec: 300, volume: 60 })).status).toBe(200);
  expect((await t.api('PUT', '/api/v1/areas/p1/attributes/shared', { tz: 'Asia/Ho_Chi_Minh', volume: 50 })).status).toBe(200);
}, 60_000);

afterAll(async () => {
  await dev?.quit();
  await t?.stop();
});

describe('shared attributes with a ThingsBoard SDK device', () => {
  it('gets the inherited set on subscribe, shared in responses, and every change pushed', async () => {
    dev = new TbPythonDevice(t.mqttPort, creds['spk-1']!.accessToken);
    await dev.ready();
    // Whole effective set once it listens: province → commune (the nearer area wins).
    expect(await dev.next(PUSH, 0)).toEqual({ tz: 'Asia/Ho_Chi_Minh', volume: 60, reportEverySec: 300 });

    dev.publish('v1/devices/me/attributes/request/1', { sharedKeys: 'volume,missing' });
    expect(await dev.next('v1/devices/me/attributes/response/1', 0)).toEqual({ shared: { volume: 60 } });
    dev.publish('v1/devices/me/attributes/request/2', {});
    expect(await dev.next('v1/devices/me/attributes/response/2', 0)).toEqual({ client: {}, shared: { tz: 'Asia/Ho_Chi_Minh', volume: 60, reportEverySec: 300 } });

    // A device value wins; only what changed for it is pushed.
    const r = await t.api('PUT', '/api/v1/devices/spk-1/attributes/shared', { volume: 80, thresholds: { soilMin: 20, soilMax: 45 } });
    expect(r.status).toBe(200);
    expect(r.body.sources).toEqual({ tz: 'area:p1', reportEverySec: 'area:ca', volume: 'device', thresholds: 'device' });
    expect(await dev.next(PUSH, 1)).toEqual({ volume: 80, thresholds: { soilMin: 20, soilMax: 45 } });

    // An area change reaches devices below it; one the device overrides does not.
    expect((await t.api('PUT', '/api/v1/areas/ca/attributes/shared', { reportEverySec: 600, volume: 65 })).status).toBe(200);
    expect(await dev.next(PUSH, 2)).toEqual({ reportEverySec: 600 });

    // Deleting the device's own value shows the area's again; deleting the last holder says `deleted`.
    expect((await t.api('PUT', '/api/v1/devices/spk-1/attributes/shared', { volume: null })).status).toBe(200);
    expect(await dev.next(PUSH, 3)).toEqual({ volume: 65 });
    expect((await t.api('PUT', '/api/v1/devices/spk-1/attributes/shared', { thresholds: null })).status).toBe(200);
    expect(await dev.next(PUSH, 4)).toEqual({ deleted: ['thresholds'] });

    const got = await t.api('GET', '/api/v1/devices/spk-1/attributes/shared');
    expect(got.body).toEqual({
      shared: { tz: 'Asia/Ho_Chi_Minh', volume: 65, reportEverySec: 600 },
      sources: { tz: 'area:p1', volume: 'area:ca', reportEverySec: 'area:ca' },
      own: {},
    });
    expect(dev.errors).toBe('');
  }, 60_000);

  it('a device elsewhere in the tree gets nothing from another commune', async () => {
    const other = await connectDevice(t.mqttUrl, creds['sen-b']!.accessToken, undefined, { clean: true });
    const seen: string[] = [];
    other.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
    await other.subscribeAsync('v1/devices/me/attributes', { qos: 1 });
    // It gets the province's values on subscribe...
    await waitFor(() => seen.length >= 1);
    expect(JSON.parse(seen[0]!.split(' ').slice(1).join(' '))).toEqual({ tz: 'Asia/Ho_Chi_Minh', volume: 50 });
    // ...but not commune A's change.
    expect((await t.api('PUT', '/api/v1/areas/ca/attributes/shared', { reportEverySec: 900 })).status).toBe(200);
    await waitFor(() => dev!.messages(PUSH).length >= 6);
    expect(dev!.messages(PUSH)[5]).toEqual({ reportEverySec: 900 });
    await new Promise((r) => setTimeout(r, 300));
    expect(seen).toHaveLength(1);
    await end(other);
  }, 30_000);

  it('a device that was offline during a change gets the current set on reconnect', async () => {
    await dev!.quit();
    expect((await t.api('PUT', '/api/v1/areas/va1/attributes/shared', { volume: 75 })).status).toBe(200);
    dev = new TbPythonDevice(t.mqttPort, creds['spk-1']!.accessToken);
    await dev.ready();
    expect(await dev.next(PUSH, 0)).toEqual({ tz: 'Asia/Ho_Chi_Minh', volume: 75, reportEverySec: 900 });
  }, 30_000);

  it('every change is audited with the owner\'s values before and after', async () => {
    const r = await t.api('GET', '/api/v1/audit?action=shared_attributes.update&limit=50');
    expect(r.status).toBe(200);
    const entries = r.body.entries as Array<{ actor: string; target: string; before: unknown; after: unknown }>;
    expect(entries.filter((e) => e.target === 'device:spk-1')).toHaveLength(3);
    const first = entries.filter((e) => e.target === 'area:ca').at(-1)!;
    expect(first).toMatchObject({ actor: expect.stringContaining('admin'), before: {}, after: { reportEverySec: 300, volume: 60 } });
    expect(entries.find((e) => e.target === 'area:va1')).toMatchObject({ before: {}, after: { volume: 75 } });
  });

  it('refuses bad keys and values with the key named, and reserved keys', async () => {
    for (const body of [{ '1bad': 1 }, { deleted: 1 }, { fw_version: '2.0' }, { x: 'y'.repeat(1025) }, { x: { a: 'b'.repeat(5000) } }]) {
      const r = await t.api('PUT', '/api/v1/devices/spk-1/attributes/shared', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe('KENG_ERR_VALIDATION');
      expect(JSON.stringify(r.body.error.details)).toContain(Object.keys(body)[0]!);
    }
    expect((await t.api('PUT', '/api/v1/areas/nowhere/attributes/shared', { a: 1 })).status).toBe(404);
  });
});

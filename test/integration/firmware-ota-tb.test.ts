/**
 * Firmware updates (OTA) with ThingsBoard SDK firmware over real MQTT:
 *
 * - a paho-mqtt imitation of the Python SDK 1.7.1's get_firmware_update()
 *   (test/helpers/tb-device.ts) asks for the fw_* shared attributes, downloads
 *   every chunk over `v2/fw/request/{n}/chunk/{k}` (subscribed only to
 *   `v2/fw/response/+`, as the SDK), verifies the SHA256, reports
 *   DOWNLOADING…UPDATED as telemetry, and the API shows UPDATED;
 * - the Arduino/ESP32 SDK's exchange (OTA_Handler, imitated with mqtt.js):
 *   request id n, chunk size as the payload, (size / chunk) + 1 requests, the
 *   last past the end answered empty; CRC32 and MD5 packages;
 * - a staged rollout assigns its first percent, the rest only when continued
 *   (then pushed); a device without a package gets `v2/fw/error`;
 * - the signed HTTP link serves the same bytes; uploads and rollouts are audited.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas, seedDevices, type DeviceCredentials } from '../helpers/seed.js';
import { TbPythonDevice } from '../helpers/tb-device.js';

let t: TestApp;
let creds: Record<string, DeviceCredentials>;
const IDS = Array.from({ length: 10 }, (_, i) => `ota-${String(i).padStart(2, '0')}`);
const BINARY = randomBytes(20_000);
let pkg: { id: string; checksum: string; url: string };
let rollout: { id: string; devices: Array<{ deviceId: string; stage: string; state: string; assigned: boolean }> };
const clients: MqttClient[] = [];
let py: TbPythonDevice | undefined;

async function upload(query: string, body: Buffer): Promise<{ status: number; body: any }> {
  const res = await fetch(`${t.httpUrl}/api/v1/firmware/packages?${query}`, {
    method: 'POST', headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': 'application/octet-stream' }, body: new Uint8Array(body),
  });
  return { status: res.status, body: await res.json() };
}

/** Collects what an mqtt.js device receives, by topic. */
function inbox(c: MqttClient): Array<{ topic: string; payload: Buffer }> {
  const got: Array<{ topic: string; payload: Buffer }> = [];
  c.on('message', (topic, payload) => got.push({ topic, payload }));
  return got;
}

beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, COMMUNE_TREE);
  creds = await seedDevices(t, IDS.map((id) => ({ id, kind: 'speaker', name: id, area: 'va1' })));
}, 60_000);

afterAll(async () => {
  await py?.quit();
  for (const c of clients) if (c.connected) await end(c);
  await t?.stop();
});

describe('firmware updates for ThingsBoard firmware', () => {
  it('uploads a package with its checksum; a wrong declared checksum is refused', async () => {
    const sha = createHash('sha256').update(BINARY).digest('hex');
    expect((await upload('title=keng-spk&version=2.0.0&checksum=00ff', BINARY)).status).toBe(422);
    const r = await upload(`title=keng-spk&version=2.0.0&model=KS-SPK-ESP32&checksum=${sha}`, BINARY);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ title: 'keng-spk', version: '2.0.0', size: 20_000, checksumAlgorithm: 'SHA256', checksum: sha, sha256: sha });
    pkg = r.body;
    expect((await upload('title=keng-spk&version=2.0.0', BINARY)).status).toBe(409);
  });

  it('a staged rollout assigns its first 30 % only', async () => {
    const r = await t.api('POST', '/api/v1/firmware/rollouts', { packageId: pkg.id, target: { areas: ['ca'] }, percent: 30 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    rollout = r.body;
    expect(r.body).toMatchObject({ stage: 'first', percent: 30, total: 10, firstStage: 3, states: { PENDING: 3, NOT_YET: 7 } });
    const first = rollout.devices.filter((d) => d.stage === 'first').map((d) => d.deviceId);
    for (const id of IDS) {
      const s = (await t.api('GET', `/api/v1/devices/${id}/attributes/shared`)).body.shared;
      if (first.includes(id)) expect(s).toEqual({ fw_title: 'keng-spk', fw_version: '2.0.0', fw_checksum: pkg.checksum, fw_checksum_algorithm: 'SHA256', fw_size: 20_000 });
      else expect(s).toEqual({});
    }
  });

  it('the Python SDK downloads every chunk, verifies and reports; the API shows UPDATED', async () => {
    const id = rollout.devices.find((d) => d.stage === 'first')!.deviceId;
    py = new TbPythonDevice(t.mqttPort, creds[id]!.accessToken);
    await py.ready();
    py.send({ op: 'firmware', title: 'keng-spk', version: '1.0.0', chunkSize: 4096 });
    await waitFor(() => py!.events.find((e) => e.ev === 'fw' && (e.state === 'UPDATED' || e.state === 'FAILED')), 30_000).catch(() => {
      throw new Error(`no end of update: ${JSON.stringify(py!.events)} ${py!.errors}`);
    });
    const fw = py.events.filter((e) => e.ev === 'fw');
    expect(fw.filter((e) => e.state === 'CHUNK').map((e) => e.bytes)).toEqual([4096, 4096, 4096, 4096, 3616]);
    expect(fw.filter((e) => e.state !== 'CHUNK').map((e) => e.state)).toEqual(['DOWNLOADING', 'DOWNLOADED', 'VERIFIED', 'UPDATING', 'UPDATED']);
    expect(fw.at(-1)!.sha256).toBe(createHash('sha256').update(BINARY).digest('hex'));
    // Its reports (telemetry) are the state the API shows.
    const state = await waitFor(async () => {
      const r = await t.api('GET', `/api/v1/devices/${id}/firmware`);
      return r.body.state === 'UPDATED' ? r.body : undefined;
    }, 10_000);
    expect(state).toMatchObject({ packageId: pkg.id, rolloutId: rollout.id, currentTitle: 'keng-spk', currentVersion: '2.0.0' });
    const progress = (await t.api('GET', `/api/v1/firmware/rollouts/${rollout.id}`)).body;
    expect(progress.states).toEqual({ UPDATED: 1, PENDING: 2, NOT_YET: 7 });
    expect(py.errors).toBe('');
  }, 60_000);

  it('a device without a package gets ThingsBoard\'s error on v2/fw/error, without subscribing', async () => {
    const id = rollout.devices.find((d) => d.stage === 'rest')!.deviceId;
    const c = await connectDevice(t.mqttUrl, creds[id]!.accessToken, undefined, { clean: true });
    clients.push(c);
    const got = inbox(c);
    await c.publishAsync('v2/fw/request/1/chunk/0', '4096', { qos: 1 });
    await waitFor(() => got.find((m) => m.topic === 'v2/fw/error'));
    expect(got.find((m) => m.topic === 'v2/fw/error')!.payload.toString()).toBe('NOT_FOUND');
  });

  it('continuing the rollout reaches the rest, pushed to those connected', async () => {
    const id = rollout.devices.find((d) => d.stage === 'rest')!.deviceId;
    const c = await connectDevice(t.mqttUrl, creds[id]!.accessToken, undefined, { clean: true });
    clients.push(c);
    const got = inbox(c);
    await c.subscribeAsync('v1/devices/me/attributes', { qos: 1 });
    const r = await t.api('POST', `/api/v1/firmware/rollouts/${rollout.id}/continue`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ stage: 'all', states: { UPDATED: 1, PENDING: 9 } });
    await waitFor(() => got.find((m) => m.topic === 'v1/devices/me/attributes'));
    expect(JSON.parse(got[0]!.payload.toString())).toEqual({ fw_title: 'keng-spk', fw_version: '2.0.0', fw_checksum: pkg.checksum, fw_checksum_algorithm: 'SHA256', fw_size: 20_000 });
    expect((await t.api('POST', `/api/v1/firmware/rollouts/${rollout.id}/continue`)).status).toBe(409);
  });

  it.each([['CRC32', 5000], ['MD5', 8192]] as const)('the Arduino SDK exchange, %s, chunk size %i: (size / chunk) + 1 requests, the last past the end empty', async (alg, size) => {
    const data = randomBytes(20_000);
    const up = await upload(`title=keng-spk&version=3.0.${size}&checksumAlgorithm=${alg}`, data);
    expect(up.status).toBe(201);
    const id = IDS[9]!;
    expect((await t.api('POST', '/api/v1/firmware/rollouts', { packageId: up.body.id, target: { devices: [id] } })).status).toBe(201);
    const c = await connectDevice(t.mqttUrl, creds[id]!.accessToken, undefined, { clean: true });
    clients.push(c);
    const got = inbox(c);
    await c.subscribeAsync('v1/devices/me/attributes/response/+', { qos: 1 });
    // Start_Firmware_Update: the five keys, comma-separated.
    await c.publishAsync('v1/devices/me/attributes/request/6', JSON.stringify({ sharedKeys: 'fw_checksum,fw_checksum_algorithm,fw_size,fw_title,fw_version,' }), { qos: 1 });
    await waitFor(() => got.find((m) => m.topic === 'v1/devices/me/attributes/response/6'));
    const shared = JSON.parse(got.find((m) => m.topic === 'v1/devices/me/attributes/response/6')!.payload.toString());
    expect(Object.keys(shared)).toEqual(['shared']);
    expect(shared.shared).toMatchObject({ fw_checksum_algorithm: alg, fw_size: 20_000, fw_version: `3.0.${size}` });
    const total = Math.floor(20_000 / size) + 1;
    const parts: Buffer[] = [];
    for (let k = 0; k < total; k++) {
      await c.publishAsync(`v2/fw/request/7/chunk/${k}`, String(size), { qos: 1 });
      const m = await waitFor(() => got.find((x) => x.topic === `v2/fw/response/7/chunk/${k}`));
      parts.push(m.payload);
    }
    expect(parts.map((p) => p.length)).toEqual(Array.from({ length: total }, (_, k) => Math.max(0, Math.min(size, 20_000 - k * size))));
    const whole = Buffer.concat(parts);
    expect(whole.equals(data)).toBe(true);
    const sum = alg === 'MD5' ? createHash('md5').update(whole).digest('hex') : (await import('node:zlib')).crc32(whole).toString(16).padStart(8, '0');
    expect(shared.shared.fw_checksum).toBe(sum);
    await end(c);
  }, 30_000);

  it('the signed link serves the same bytes; a forged one is refused', async () => {
    const r = await t.api('GET', `/api/v1/firmware/packages/${pkg.id}`);
    expect(r.status).toBe(200);
    const url = new URL(r.body.url as string, t.httpUrl);
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(BINARY)).toBe(true);
    url.searchParams.set('sig', 'x'.repeat(43));
    expect((await fetch(url)).status).toBe(403);
  });

  it('uploads and rollouts are audited', async () => {
    const r = await t.api('GET', '/api/v1/audit?action=firmware&limit=50');
    const actions = (r.body.entries as Array<{ action: string }>).map((e) => e.action).sort();
    expect(actions).toEqual(['firmware.rollout', 'firmware.rollout', 'firmware.rollout', 'firmware.rollout_continue', 'firmware.upload', 'firmware.upload', 'firmware.upload']);
    // A package a rollout names stays.
    expect((await t.api('DELETE', `/api/v1/firmware/packages/${pkg.id}`)).status).toBe(409);
  });
});

/**
 * src/firmware in the running app: ThingsBoard's chunk rules (size remembered
 * per request id, the quoted size of the Python SDK, the whole file for an
 * empty first request, empty past the end, PAYLOAD_TOO_LARGE), checksums as
 * ThingsBoard shows them, the rollout's stable pick and its share, device
 * states from reports, packages kept while a rollout names them, a package
 * whose file is missing (a cluster node without it) answered with an error.
 */
import { createHash, randomBytes } from 'node:crypto';
import { rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas, seedDevices, type DeviceCredentials } from '../helpers/seed.js';
import { checksum } from '../../src/firmware/index.js';

let t: TestApp;
const DATA = randomBytes(10_000);
let pkgId: string;
let creds: Record<string, DeviceCredentials>;

beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, COMMUNE_TREE);
  creds = await seedDevices(t, Array.from({ length: 40 }, (_, i) => ({ id: `d-${i}`, kind: 'sensor', name: `d-${i}`, area: 'va1' })));
  pkgId = (await t.app.firmware.addPackage({ title: 'soil', version: '1.1' }, DATA, 'test')).id;
}, 60_000);
afterAll(async () => { await t?.stop(); });

describe('firmware', () => {
  it('checksums as ThingsBoard shows them; the file is 0600', () => {
    expect(checksum(DATA, 'CRC32')).toBe((crc32(DATA) >>> 0).toString(16).padStart(8, '0'));
    expect(checksum(DATA, 'SHA384')).toBe(createHash('sha384').update(DATA).digest('hex'));
    expect(checksum(Buffer.from('abc'), 'CRC32')).toBe('352441c2');
    expect(statSync(path.join(t.dataDir, 'firmware', `${pkgId}.bin`)).mode & 0o777).toBe(0o600);
  });

  it('a rollout of 10 % picks 4 of 40, the same pick when read again, and the rest only when continued', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => `d-${i}`);
    const r = await t.app.firmware.createRollout(pkgId, ids, 10, 'test');
    expect(r).toMatchObject({ firstCount: 4, stage: 'first' });
    expect([...r.devices].sort()).toEqual([...ids].sort());
    expect((await t.app.firmware.getRollout(r.id))!.devices).toEqual(r.devices);
    const assigned = ids.filter((d) => t.app.firmware.assignmentOf(d)?.rolloutId === r.id);
    expect(assigned.sort()).toEqual(r.devices.slice(0, 4).sort());
    await t.app.firmware.continueRollout(r.id);
    expect(ids.every((d) => t.app.firmware.assignmentOf(d)?.rolloutId === r.id)).toBe(true);
    await expect(t.app.firmware.continueRollout(r.id)).rejects.toThrow(/already/);
  });

  it('chunks the ThingsBoard way', async () => {
    const fw = t.app.firmware;
    const get = async (n: string, payload: string, k: number, max = 65_536) => fw.chunk('d-0', n, Buffer.from(payload), k, max);
    expect(await get('1', '4096', 0)).toEqual({ ok: true, payload: DATA.subarray(0, 4096) });
    // An empty payload repeats the size this request id asked before.
    expect(await get('1', '', 1)).toEqual({ ok: true, payload: DATA.subarray(4096, 8192) });
    expect(await get('1', '"4096"', 2)).toEqual({ ok: true, payload: DATA.subarray(8192) });
    expect(await get('1', '4096', 3)).toEqual({ ok: true, payload: Buffer.alloc(0) });
    // A new request id with an empty payload: the whole file.
    expect(await get('2', '""', 0)).toEqual({ ok: true, payload: DATA });
    expect(await get('3', '100000', 0, 65_536)).toEqual({ ok: false, error: 'PAYLOAD_TOO_LARGE' });
    expect(await fw.chunk('nobody', '1', Buffer.from('10'), 0, 1000)).toEqual({ ok: false, error: 'NOT_FOUND' });
  });

  it('a device\'s state: PENDING, then what it reports, UPDATED once it runs the package', async () => {
    const fw = t.app.firmware;
    expect(await fw.deviceFirmware('d-1')).toMatchObject({ packageId: pkgId, state: 'PENDING' });
    t.app.bus.emit('telemetry', { deviceId: 'd-1', area: 'va1', kind: 'sensor', ts: Date.now(), values: { fw_state: 'DOWNLOADING', fw_error: '' } });
    await fw.settled();
    expect(await fw.deviceFirmware('d-1')).toMatchObject({ state: 'DOWNLOADING', error: null });
    t.app.bus.emit('telemetry', { deviceId: 'd-1', area: 'va1', kind: 'sensor', ts: Date.now(), values: { fw_state: 'FAILED', fw_error: 'Checksum verification failed' } });
    await fw.settled();
    expect(await fw.deviceFirmware('d-1')).toMatchObject({ state: 'FAILED', error: 'Checksum verification failed' });
    t.app.bus.emit('attributes', { deviceId: 'd-1', attributes: { current_fw_title: 'soil', current_fw_version: '1.1' } });
    await fw.settled();
    expect(await fw.deviceFirmware('d-1')).toMatchObject({ state: 'UPDATED', currentVersion: '1.1' });
    expect((await fw.deviceFirmware('d-1')).error).toBe('Checksum verification failed');
  });

  it('a new version of the same title and size is pushed with all five fw_* keys, as ThingsBoard does', async () => {
    const c = await connectDevice(t.mqttUrl, creds['d-5']!.accessToken, undefined, { clean: true });
    const seen: Array<Record<string, unknown>> = [];
    c.on('message', (_topic, p) => seen.push(JSON.parse(p.toString()) as Record<string, unknown>));
    await c.subscribeAsync('v1/devices/me/attributes', { qos: 1 });
    // Its set on subscribe leaves the fw_* keys out (the SDKs ask for them at start; a push would start a second download).
    await new Promise((r) => setTimeout(r, 300));
    expect(seen).toEqual([]);
    const next = await t.app.firmware.addPackage({ title: 'soil', version: '1.2' }, randomBytes(10_000), 'test');
    await t.app.firmware.createRollout(next.id, ['d-5'], 100, 'test');
    await waitFor(() => seen.length >= 1);
    expect(seen[0]).toEqual({ fw_title: 'soil', fw_version: '1.2', fw_size: 10_000, fw_checksum: next.checksum, fw_checksum_algorithm: 'SHA256' });
    await end(c);
  });

  it('a package stays while a rollout names it; an unused one is deleted with its file', async () => {
    await expect(t.app.firmware.deletePackage(pkgId)).rejects.toThrow(/rollout/);
    const other = await t.app.firmware.addPackage({ title: 'soil', version: '9.9', checksumAlgorithm: 'MD5' }, Buffer.from('x'), 'test');
    expect(await t.app.firmware.deletePackage(other.id)).toBe(true);
    expect(() => statSync(path.join(t.dataDir, 'firmware', `${other.id}.bin`))).toThrow();
    await expect(t.app.firmware.addPackage({ title: 'bad/title', version: '1' }, Buffer.from('x'), 'test')).rejects.toThrow(/title/);
  });

  it('a package whose file is not on this node: FAILURE over MQTT, 503 KENG_ERR_FIRMWARE_FILE_MISSING over HTTP, and Keng keeps serving', async () => {
    const fw = t.app.firmware;
    const lost = await fw.addPackage({ title: 'soil', version: '7.0' }, randomBytes(2_000), 'test');
    await fw.createRollout(lost.id, ['d-7'], 100, 'test');
    rmSync(path.join(t.dataDir, 'firmware', `${lost.id}.bin`));
    expect(await fw.chunk('d-7', '1', Buffer.from('512'), 0, 65_536)).toEqual({ ok: false, error: 'FAILURE' });
    const res = await fetch(`${t.httpUrl}${fw.signedPath(lost.id).path}`);
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('KENG_ERR_FIRMWARE_FILE_MISSING');
    expect(await fw.chunk('d-0', '9', Buffer.from('100'), 0, 65_536)).toEqual({ ok: true, payload: DATA.subarray(0, 100) });
  });
});

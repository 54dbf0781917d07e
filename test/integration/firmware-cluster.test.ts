/**
 * src/firmware as two cluster nodes on one real PostgreSQL: each node its own
 * Firmware (own pool, own data directory, own event bus). A package uploaded
 * and a rollout made on node A reach node B's copy with its reload, and B's
 * connected devices get the fw_* push; B's API reads (rollout progress, a
 * device's state) show what devices reported to A at once; a node without the
 * package's file answers FAILURE over MQTT and KENG_ERR_FIRMWARE_FILE_MISSING
 * instead of crashing, and serves it once the file is copied there; a
 * deletion on PostgreSQL removes a deleted device's rows.
 */
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/index.js';
import { systemClock } from '../../src/core/clock.js';
import { EventBus } from '../../src/core/events.js';
import { Firmware } from '../../src/firmware/index.js';
import type { SharedLayer } from '../../src/attributes/index.js';
import type { Device } from '../../src/devices/index.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { openState, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';

const DEVICES = Array.from({ length: 10 }, (_, i) => `d-${i}`);

interface Node { fw: Firmware; bus: EventBus; dir: string; db: Db<unknown>; layer?: SharedLayer; pushed: string[][]; metrics: Registry }

function node(db: Db<unknown>): Node {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-fw-node-'));
  const bus = new EventBus();
  const metrics = new Registry();
  const n: Node = { fw: undefined as unknown as Firmware, bus, dir, db, pushed: [], metrics };
  n.fw = new Firmware({
    db, dataDir: dir, bus, logger: createLogger('silent'), clock: systemClock, metrics, reloadMs: 0,
    registry: { getDevice: (id: string) => (DEVICES.includes(id) ? { id, area: 'va1' } as Device : undefined) },
    attributes: {
      addLayer: (l: SharedLayer) => { n.layer = l; },
      changing: (ids: string[], change: () => void) => { n.pushed.push([...ids].sort()); change(); },
    },
  });
  return n;
}

describe('firmware on two cluster nodes (PostgreSQL)', () => {
  let h: StateHarness;
  let a: Node;
  let b: Node;
  beforeEach(async () => {
    h = await openState('postgres');
    a = node(h.db);
    b = node(openPgDb(h.url!));
    await a.fw.start();
    await b.fw.start();
  });
  afterEach(async () => {
    await a.fw.stop();
    await b.fw.stop();
    await b.db.close();
    await h.close();
    for (const n of [a, b]) rmSync(n.dir, { recursive: true, force: true });
  });
  afterAll(stopStatePostgres);

  it('a rollout made on one node reaches the other\'s fw_* with its reload; progress reported to one is read on the other', async () => {
    const bin = randomBytes(5_000);
    const p = await a.fw.addPackage({ title: 'soil', version: '2.0' }, bin, 'user:admin');
    expect((await b.fw.listPackages()).map((x) => x.id)).toEqual([p.id]);
    const r = await a.fw.createRollout(p.id, DEVICES, 50, 'user:admin');
    const first = r.devices.slice(0, 5);
    expect(a.pushed).toEqual([[...first].sort()]);
    expect(a.layer!.values(first[0]!)).toMatchObject({ fw_title: 'soil', fw_version: '2.0', fw_size: 5_000 });
    // Node b: nothing yet in its copy, then its reload pushes exactly the devices that changed.
    expect(b.layer!.values(first[0]!)).toBeUndefined();
    await b.fw.reload();
    expect(b.pushed).toEqual([[...first].sort()]);
    expect(b.layer!.values(first[0]!)).toEqual(a.layer!.values(first[0]!));
    await b.fw.reload();
    expect(b.pushed).toEqual([[...first].sort(), []]);

    // The second stage on b; a learns of it by reloading.
    await b.fw.continueRollout(r.id);
    await expect(a.fw.continueRollout(r.id)).rejects.toThrow(/already/);
    await a.fw.reload();
    expect(a.pushed.at(-1)).toEqual(r.devices.slice(5).sort());

    // Devices report to node a; node b's API reads see it at once.
    a.bus.emit('telemetry', { deviceId: first[0]!, area: 'va1', kind: 'sensor', ts: Date.now(), values: { fw_state: 'DOWNLOADING' } });
    a.bus.emit('attributes', { deviceId: first[1]!, attributes: { current_fw_title: 'soil', current_fw_version: '2.0' } });
    await a.fw.settled();
    expect(await b.fw.deviceFirmware(first[0]!)).toMatchObject({ packageId: p.id, rolloutId: r.id, state: 'DOWNLOADING' });
    const view = await b.fw.view();
    expect(view.device(first[1]!).state).toBe('UPDATED');
    expect(view.device(first[2]!).state).toBe('PENDING');
  });

  it('a node without the package\'s file: FAILURE over MQTT, KENG_ERR_FIRMWARE_FILE_MISSING over HTTP, counted; served once the file is copied', async () => {
    const bin = randomBytes(3_000);
    const p = await a.fw.addPackage({ title: 'soil', version: '3.0' }, bin, 'user:admin');
    await a.fw.createRollout(p.id, ['d-1'], 100, 'user:admin');
    await b.fw.reload();
    expect(await a.fw.chunk('d-1', '1', Buffer.from('1000'), 0, 65_536)).toEqual({ ok: true, payload: bin.subarray(0, 1000) });
    expect(await b.fw.chunk('d-1', '1', Buffer.from('1000'), 0, 65_536)).toEqual({ ok: false, error: 'FAILURE' });
    await expect(b.fw.read(p.id)).rejects.toMatchObject({ code: 'KENG_ERR_FIRMWARE_FILE_MISSING', statusCode: 503 });
    const missing = await b.metrics.getSingleMetric('keng_firmware_file_missing_total')!.get();
    expect(missing.values[0]!.value).toBe(2);
    // What docs/cluster.md tells the operator: copy <dataDir>/firmware/<id>.bin to the node.
    copyFileSync(path.join(a.dir, 'firmware', `${p.id}.bin`), path.join(b.dir, 'firmware', `${p.id}.bin`));
    expect(await b.fw.chunk('d-1', '1', Buffer.from('1000'), 2, 65_536)).toEqual({ ok: true, payload: bin.subarray(2000, 3000) });
  });

  it('the same title and version uploaded on both nodes at once: one package, the other upload refused', async () => {
    const results = await Promise.allSettled([
      a.fw.addPackage({ title: 'soil', version: '4.0' }, randomBytes(100), 'user:admin'),
      b.fw.addPackage({ title: 'soil', version: '4.0' }, randomBytes(100), 'user:admin'),
    ]);
    expect(results.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
    expect((results.find((x) => x.status === 'rejected') as PromiseRejectedResult).reason).toMatchObject({ code: 'KENG_ERR_CONFLICT' });
    expect(await a.fw.listPackages()).toHaveLength(1);
  });

  it('a deleted device\'s assignment and state go (PostgreSQL has no foreign key to the devices)', async () => {
    const p = await a.fw.addPackage({ title: 'soil', version: '5.0' }, randomBytes(100), 'user:admin');
    await a.fw.createRollout(p.id, ['d-2', 'd-3'], 100, 'user:admin');
    a.bus.emit('telemetry', { deviceId: 'd-2', area: 'va1', kind: 'sensor', ts: Date.now(), values: { fw_state: 'UPDATED' } });
    a.bus.emit('device.changed', { deviceId: 'd-2', change: 'deleted' });
    await a.fw.settled();
    await expect.poll(async () => (await b.fw.deviceFirmware('d-2')).packageId, { timeout: 10_000 }).toBeNull();
    expect(await b.fw.deviceFirmware('d-2')).toMatchObject({ state: 'NONE', reportedAt: null });
    expect((await b.fw.deviceFirmware('d-3')).packageId).toBe(p.id);
  });
});

/**
 * The purge bookkeeping of device deletion (src/devices/purge-jobs.ts) and the queue-row
 * rewrite of the InfluxDB queue purge (src/storage/telemetry/outbox-purge.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { StateDb, stateSqlitePort } from '../../src/storage/state/index.js';
import { DeviceRegistry, PURGE_SETTLE_MS, PurgeJobs } from '../../src/devices/index.js';
import { EventBus, Metrics, createLogger } from '../../src/core/index.js';
import { withoutDevice } from '../../src/storage/telemetry/outbox-purge.js';
import { recordsToLines } from '../../src/storage/telemetry/line-protocol.js';

const logger = createLogger('silent');
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });

async function open(onDelete: 'keep' | 'purge') {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-purge-jobs-'));
  const db = new StateDb({ dataDir: dir, logger });
  const clock = { t: 1_764_460_800_000, now() { return this.t; } };
  const reg = new DeviceRegistry({ db, bus: new EventBus(), logger, metrics: new Metrics({ defaultMetrics: false }), clock, onDelete });
  await db.start();
  await reg.start();
  cleanups.push(async () => { await reg.stop(); await db.stop(); rmSync(dir, { recursive: true, force: true }); });
  await reg.createArea({ code: '01', name: 'Tinh', level: 'province' });
  await reg.createDevice({ id: 'rain-1', kind: 'sensor', name: 'r', area: '01' });
  return { reg, jobs: new PurgeJobs(stateSqlitePort(db)), port: stateSqlitePort(db), clock };
}

describe('purge jobs of deleted devices', () => {
  it("'purge': the deletion records the job in its transaction, due after the settle delay", async () => {
    const { reg, jobs, clock } = await open('purge');
    expect(await reg.deleteDevice('rain-1', 'user:an')).toBe(true);
    const job = (await jobs.get('rain-1'))!;
    expect(job).toMatchObject({ deletedAt: clock.t, requestedBy: 'user:an', stage: 'local', attempts: 0, removed: {}, nextAt: clock.t + PURGE_SETTLE_MS });
    expect(await jobs.due(clock.t)).toBeUndefined();
    expect((await jobs.due(clock.t + PURGE_SETTLE_MS))?.deviceId).toBe('rain-1');
    expect(await reg.deleteDevice('rain-1')).toBe(false); // gone already: no second job
    expect(await jobs.list()).toHaveLength(1);
  });

  it('stages, failures and a request made meanwhile', async () => {
    const { reg, jobs, port, clock } = await open('purge');
    await reg.deleteDevice('rain-1', 'user:an');
    const job = (await jobs.get('rain-1'))!;
    await jobs.fail(job, { queuedReadings: 3 }, 'InfluxDB down', clock.t + 9_000);
    expect(await jobs.get('rain-1')).toMatchObject({ stage: 'local', attempts: 1, lastError: 'InfluxDB down', removed: { queuedReadings: 3 }, nextAt: clock.t + 9_000 });
    expect(await jobs.advance(job, { queuedReadings: 3 })).toBe(true);
    expect((await jobs.get('rain-1'))!.stage).toBe('remote');
    // Asked again (explicitly) before it finished: the old run's finish leaves the new request.
    clock.t += 1;
    expect(await reg.requestPurge('rain-1', 'cli:root')).toBe(true);
    expect(await PurgeJobs.finish(port.kysely, job)).toBe(false);
    expect(await jobs.get('rain-1')).toMatchObject({ stage: 'local', requestedBy: 'cli:root', attempts: 0, lastError: null });
    expect(await PurgeJobs.finish(port.kysely, (await jobs.get('rain-1'))!)).toBe(true);
    expect(await jobs.list()).toEqual([]);
  });

  it("'keep': no job; requestPurge later needs a deleted id", async () => {
    const { reg, jobs, clock } = await open('keep');
    expect(await reg.requestPurge('rain-1', 'cli:root')).toBe(false); // registered, never deleted
    await reg.deleteDevice('rain-1');
    expect(await jobs.list()).toEqual([]);
    const deletedAt = clock.t;
    clock.t += 60_000;
    expect(await reg.requestPurge('rain-1', 'cli:root')).toBe(true);
    expect(await jobs.get('rain-1')).toMatchObject({ deletedAt, nextAt: clock.t });
    expect(await reg.requestPurge('never-here', 'cli:root')).toBe(false);
  });
});

describe('withoutDevice: a queue row without one device\'s lines', () => {
  /** A queue row as outbox-db.ts makes it. */
  const row = (recs: { deviceId: string; ts: number; values: Record<string, number | string> }[]) => {
    const out: string[] = [];
    const st = recordsToLines('tele metry', recs.map((r) => ({ ...r, kind: 'sensor', area: 'c.1' })), out);
    return { body: out.join('\n'), lines: st.lines, readings: st.readings, bytes: st.bytes };
  };

  it('cuts only that device (not one whose id starts the same), before the bound, and recounts', () => {
    const r = row([
      { deviceId: 'rain-1', ts: 1000, values: { a: 1, s: 'x y\nz ,device_id=rain-2 ' } },
      { deviceId: 'rain-10', ts: 1000, values: { a: 2 } },
      { deviceId: 'rain-1', ts: 3000, values: { a: 3 } },
    ]);
    expect(withoutDevice(r, 'rain-2', null)).toBeNull(); // named in a string value only
    expect(withoutDevice(r, 'rain-1', null)).toEqual(row([{ deviceId: 'rain-10', ts: 1000, values: { a: 2 } }]));
    expect(withoutDevice(r, 'rain-1', 2000)).toEqual(row([{ deviceId: 'rain-10', ts: 1000, values: { a: 2 } }, { deviceId: 'rain-1', ts: 3000, values: { a: 3 } }]));
    expect(withoutDevice(r, 'rain-1', 500)).toBeNull();
    expect(withoutDevice(row([{ deviceId: 'rain-1', ts: 1, values: { a: 1 } }]), 'rain-1', null)).toEqual({ body: '', lines: 0, readings: 0, bytes: 0 });
  });
});

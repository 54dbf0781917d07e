import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createTelemetryStore, type EmbeddedTelemetryStore, type TelemetryRecord } from '../../src/storage/telemetry/index.js';
import { FakeClock, metricValue, storeConfig, testLogger, testMetrics } from '../helpers/influxd.js';

const T0 = Date.UTC(2025, 5, 1);

describe('embedded telemetry store', () => {
  let dir: string;
  let store: EmbeddedTelemetryStore;
  let metrics: ReturnType<typeof testMetrics>;
  let clock: FakeClock;

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keng-tel-'));
    metrics = testMetrics();
    clock = new FakeClock(T0 + 86_400_000);
    store = createTelemetryStore(storeConfig(dir), { dataDir: dir, logger: testLogger(), metrics, clock }) as EmbeddedTelemetryStore;
    await store.start();
  });
  afterEach(async () => {
    await store.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is named, embedded, healthy', async () => {
    expect(store.name).toBe('telemetry-store');
    expect(store.kind).toBe('embedded');
    expect((await store.health()).ok).toBe(true);
    expect(await store.drain()).toBe(true);
  });

  // The broker thread takes finished commits between two socket reads (settleFinished), so
  // their PUBACKs need not wait for the next turn of the event loop.
  it('settles a finished write without a turn of the event loop when asked, and only then', async () => {
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    const spin = async (settle: boolean): Promise<boolean> => {
      let done = false;
      const w = store.writeBatch([{ deviceId: 'd1', kind: 'sensor', ts: T0 + (settle ? 1 : 2), values: { t: 1 } }]).then(() => { done = true; });
      // Wait for the worker's commit without yielding to the event loop: synchronous sleeps
      // and microtasks only (an awaited resolved promise runs no macrotask).
      for (let i = 0; i < 400 && !done; i++) {
        Atomics.wait(sleeper, 0, 0, 5);
        if (settle) store.settleFinished();
        for (let k = 0; k < 20; k++) await Promise.resolve();
      }
      const settledInside = done;
      await w;
      return settledInside;
    };
    expect(await spin(false)).toBe(false); // the control: without it the reply waits for the event loop
    expect(await spin(true)).toBe(true);
  });

  it('stores numbers, booleans and strings and de-duplicates (device, ts, field)', async () => {
    const recs: TelemetryRecord[] = [
      { deviceId: 'd1', kind: 'sensor', ts: T0, values: { t: 1, ok: true, s: '12' } },
      { deviceId: 'd1', kind: 'sensor', ts: T0 + 1000, values: { t: 1.5, ok: false, s: 'a "quoted", \\ string\n' } },
    ];
    expect(await store.writeBatch(recs)).toEqual({ written: 6, duplicates: 0 });
    // Re-upload of the same readings plus one new field: only the new one is written.
    expect(await store.writeBatch([{ ...recs[0]!, values: { ...recs[0]!.values, extra: 3 } }, recs[0]!])).toEqual({ written: 1, duplicates: 6 });
    expect(await metricValue(metrics, 'keng_readings_duplicate_total')).toBe(6);
    expect(await metricValue(metrics, 'keng_readings_stored_total', { store: 'embedded' })).toBe(7);
    const pts = await store.query({ deviceId: 'd1', fields: [], from: T0, to: T0 + 2000 });
    expect(pts).toEqual([
      { ts: T0, values: { extra: 3, ok: true, s: '12', t: 1 } },
      { ts: T0 + 1000, values: { ok: false, s: 'a "quoted", \\ string\n', t: 1.5 } },
    ]);
    expect(await store.query({ deviceId: 'd1', fields: ['t', 'nope'], from: T0, to: T0 + 2000, limit: 1 })).toEqual([{ ts: T0, values: { t: 1 } }]);
    expect(await store.query({ deviceId: 'other', fields: [], from: T0, to: T0 + 2000 })).toEqual([]);
  });

  it('aggregates in epoch-aligned windows, numeric-only for mean/min/max/sum', async () => {
    const recs: TelemetryRecord[] = [];
    for (let i = 0; i < 12; i++) recs.push({ deviceId: 'd', kind: 'sensor', ts: T0 + i * 60_000 + 7, values: { v: i, b: i % 2 === 0, s: `x${i}` } });
    await store.writeBatch(recs);
    const q = { deviceId: 'd', fields: [] as string[], from: T0 + 120_000, to: T0 + 720_000, everyMs: 300_000 };
    // windows [T0, T0+5m) (partly: minutes 2..4), [T0+5m, T0+10m), [T0+10m, ...) (minute 10, 11)
    expect(await store.query({ ...q, agg: 'mean' })).toEqual([
      { ts: T0, values: { v: 3 } }, { ts: T0 + 300_000, values: { v: 7 } }, { ts: T0 + 600_000, values: { v: 10.5 } },
    ]);
    expect(await store.query({ ...q, agg: 'count' })).toEqual([
      { ts: T0, values: { b: 3, s: 3, v: 3 } }, { ts: T0 + 300_000, values: { b: 5, s: 5, v: 5 } }, { ts: T0 + 600_000, values: { b: 2, s: 2, v: 2 } },
    ]);
    expect(await store.query({ ...q, agg: 'last' })).toEqual([
      { ts: T0, values: { b: true, s: 'x4', v: 4 } }, { ts: T0 + 300_000, values: { b: false, s: 'x9', v: 9 } }, { ts: T0 + 600_000, values: { b: false, s: 'x11', v: 11 } },
    ]);
    expect(await store.query({ ...q, agg: 'sum', fields: ['v', 'b'] })).toEqual([
      { ts: T0, values: { v: 9 } }, { ts: T0 + 300_000, values: { v: 35 } }, { ts: T0 + 600_000, values: { v: 21 } },
    ]);
    expect(await store.query({ ...q, agg: 'min' })).toEqual([
      { ts: T0, values: { v: 2 } }, { ts: T0 + 300_000, values: { v: 5 } }, { ts: T0 + 600_000, values: { v: 10 } },
    ]);
    expect(await store.query({ ...q, agg: 'max', fields: ['s'] })).toEqual([]);
    await expect(store.query({ ...q, everyMs: 0 })).rejects.toMatchObject({ code: 'KENG_ERR_VALIDATION' });
  });

  it('prunes readings older than the retention in chunks', async () => {
    const day = 86_400_000;
    clock.t = T0 + 400 * day;
    const recs: TelemetryRecord[] = [];
    for (let i = 0; i < 7000; i++) recs.push({ deviceId: `d${i % 3}`, kind: 'sensor', ts: T0 + i * 1000, values: { a: i } }); // old
    recs.push({ deviceId: 'd0', kind: 'sensor', ts: T0 + 399 * day, values: { a: 1 } }); // recent
    await store.writeBatch(recs);
    expect(await store.pruneNow()).toBe(7000);
    const left = await store.query({ deviceId: 'd0', fields: [], from: 0, to: T0 + 401 * day });
    expect(left).toEqual([{ ts: T0 + 399 * day, values: { a: 1 } }]);
  });

  it('de-duplicates exactly across the recent/readings split (compaction watermark)', async () => {
    const now = Date.now();
    const r = (ts: number, a: number): TelemetryRecord => ({ deviceId: 'd', kind: 'k', ts, values: { a } });
    expect(await store.writeBatch([r(now - 60_000, 1), r(now - 30_000, 2), r(now, 3)])).toEqual({ written: 3, duplicates: 0 });
    await store.compactNow(); // rows older than the lag move to `readings` (if the periodic step has not already)
    // Re-uploads land on both sides of the watermark; a late reading goes straight to `readings`.
    expect(await store.writeBatch([r(now - 60_000, 1), r(now - 30_000, 2), r(now, 3), r(now - 45_000, 4)])).toEqual({ written: 1, duplicates: 3 });
    const q = { deviceId: 'd', fields: [], from: now - 120_000, to: now + 1 };
    expect(await store.query(q)).toEqual([
      { ts: now - 60_000, values: { a: 1 } }, { ts: now - 45_000, values: { a: 4 } },
      { ts: now - 30_000, values: { a: 2 } }, { ts: now, values: { a: 3 } },
    ]);
    expect(await store.query({ ...q, everyMs: 3_600_000_000, agg: 'sum' })).toEqual([{ ts: Math.floor(now / 3_600_000_000) * 3_600_000_000, values: { a: 10 } }]);
    expect(await store.query({ ...q, everyMs: 3_600_000_000, agg: 'last' })).toEqual([{ ts: Math.floor(now / 3_600_000_000) * 3_600_000_000, values: { a: 3 } }]);
    // Another value for the same (device, field, ts): the last one wins on both sides, as in InfluxDB and the latest values.
    expect(await store.writeBatch([r(now - 60_000, 9), r(now, 9), r(now, 9)])).toEqual({ written: 2, duplicates: 1 });
    expect(await store.query(q)).toEqual([
      { ts: now - 60_000, values: { a: 9 } }, { ts: now - 45_000, values: { a: 4 } },
      { ts: now - 30_000, values: { a: 2 } }, { ts: now, values: { a: 9 } },
    ]);
  });

  it('restarts a crashed worker thread; the failed write is rejected, later writes work', async () => {
    const writer = (store as unknown as { writer: { worker: { terminate(): Promise<number> } } }).writer;
    await writer.worker.terminate();
    await expect(store.writeBatch([{ deviceId: 'd', kind: 'k', ts: T0, values: { a: 1 } }])).rejects.toMatchObject({ code: 'KENG_ERR_STORE_UNAVAILABLE' });
    await vi.waitFor(async () => expect(await store.writeBatch([{ deviceId: 'd', kind: 'k', ts: T0, values: { a: 1 } }])).toEqual({ written: 1, duplicates: 0 }), { timeout: 5000, interval: 200 });
  });

  it('keeps data across a restart', async () => {
    await store.writeBatch([{ deviceId: 'd', kind: 'k', ts: T0, values: { a: 1 } }]);
    await store.stop();
    store = createTelemetryStore(storeConfig(dir), { dataDir: dir, logger: testLogger(), metrics, clock }) as EmbeddedTelemetryStore;
    await store.start();
    expect(await store.writeBatch([{ deviceId: 'd', kind: 'k', ts: T0, values: { a: 1, b: 2 } }])).toEqual({ written: 1, duplicates: 1 });
    expect(await store.query({ deviceId: 'd', fields: [], from: T0, to: T0 + 1 })).toEqual([{ ts: T0, values: { a: 1, b: 2 } }]);
  });

  it('field-type rule: a value of another type goes to dead_readings; the other fields of the message are stored', async () => {
    expect(await store.writeBatch([{ deviceId: 'd1', kind: 'sensor', ts: T0, values: { rssi: -70, t: 20 } }])).toEqual({ written: 2, duplicates: 0 });
    const res = await store.writeBatch([
      { deviceId: 'd1', kind: 'sensor', ts: T0 + 1000, values: { rssi: 'weak', t: 21, on: true } },
      { deviceId: 'd2', kind: 'sensor', ts: T0 + 1000, values: { t: false, on: false } },
    ]);
    expect(res).toEqual({
      written: 3, duplicates: 0, setAside: [
        { deviceId: 'd1', ts: T0 + 1000, field: 'rssi', value: 'weak', reason: 'field_type_conflict' },
        { deviceId: 'd2', ts: T0 + 1000, field: 't', value: false, reason: 'field_type_conflict' },
      ],
    });
    expect(await metricValue(metrics, 'keng_readings_dead_lettered_total', { store: 'embedded', reason: 'field_type_conflict' })).toBe(2);
    expect(await metricValue(metrics, 'keng_readings_stored_total', { store: 'embedded' })).toBe(5);
    expect(await store.query({ deviceId: 'd1', fields: [], from: T0, to: T0 + 2000 })).toEqual([
      { ts: T0, values: { rssi: -70, t: 20 } }, { ts: T0 + 1000, values: { on: true, t: 21 } },
    ]);
    // The type is kept in the database: a restart still sets a string rssi aside.
    await store.stop();
    store = createTelemetryStore(storeConfig(dir), { dataDir: dir, logger: testLogger(), metrics, clock }) as EmbeddedTelemetryStore;
    await store.start();
    expect((await store.writeBatch([{ deviceId: 'd3', kind: 'sensor', ts: T0, values: { rssi: 'ok', on: 1 } }])).setAside?.map((a) => a.field)).toEqual(['rssi', 'on']);
    await store.stop();
    const db = new Database(path.join(dir, 'telemetry.db'), { readonly: true });
    expect(db.prepare('SELECT device, field, ts, value, type, reason, detail FROM dead_readings ORDER BY device, field').all()).toEqual([
      { device: 'd1', field: 'rssi', ts: T0 + 1000, value: 'weak', type: 'string', reason: 'field_type_conflict', detail: 'field is number, value is string' },
      { device: 'd2', field: 't', ts: T0 + 1000, value: 0, type: 'boolean', reason: 'field_type_conflict', detail: 'field is number, value is boolean' },
      { device: 'd3', field: 'on', ts: T0, value: 1, type: 'number', reason: 'field_type_conflict', detail: 'field is boolean, value is number' },
      { device: 'd3', field: 'rssi', ts: T0, value: 'ok', type: 'string', reason: 'field_type_conflict', detail: 'field is number, value is string' },
    ]);
    db.close();
    await store.start();
  });

  it('a database made before field types were kept learns each field\'s type from its earliest reading', async () => {
    await store.writeBatch([
      { deviceId: 'd1', kind: 'k', ts: T0 + 5000, values: { mode: 'eco' } },
      { deviceId: 'd2', kind: 'k', ts: T0 + 6000, values: { level: 1 } },
      { deviceId: 'd1', kind: 'k', ts: Date.now() - 60_000, values: { fresh: true } },
    ]);
    await store.compactNow(); // the T0 readings move to `readings`, `fresh` stays in `recent`
    await store.stop();
    const db = new Database(path.join(dir, 'telemetry.db'));
    db.exec('ALTER TABLE fields DROP COLUMN k');
    // Mixed types were allowed then: d2's older mode is a number.
    const id = (t: string, n: string): number => (db.prepare(`SELECT id FROM ${t} WHERE name = ?`).get(n) as { id: number }).id;
    db.prepare('INSERT INTO readings (device, field, ts, v, k) VALUES (?, ?, ?, 7, 0)').run(id('devices', 'd2'), id('fields', 'mode'), T0);
    db.prepare('INSERT INTO series (device, field) VALUES (?, ?)').run(id('devices', 'd2'), id('fields', 'mode'));
    db.close();
    store = createTelemetryStore(storeConfig(dir), { dataDir: dir, logger: testLogger(), metrics, clock }) as EmbeddedTelemetryStore;
    await store.start();
    const r = await store.writeBatch([{ deviceId: 'd3', kind: 'k', ts: T0, values: { mode: 'boost', fresh: 'yes', level: 2, other: 'x' } }]);
    expect(r.setAside?.map((a) => a.field)).toEqual(['mode', 'fresh']);
    expect(r.written).toBe(2);
  });

  it('throughput: 100 records × 4 fields per writeBatch', async () => {
    const batches = 300;
    let ts = Date.now(); // realistic: readings dated "now" (they take the append-only `recent` path)
    const make = (): TelemetryRecord[] => {
      const out: TelemetryRecord[] = [];
      for (let i = 0; i < 100; i++) out.push({ deviceId: `dev-${i}`, kind: 'sensor', ts: ts, values: { soil_moisture: 31.5 + i, temperature: 24.1, humidity: 70 + (i % 7), battery_v: 3.7 } });
      ts += 1000;
      return out;
    };
    await store.writeBatch(make()); // warm-up (dictionaries)
    const t0 = performance.now();
    // The ingest group-commits: several batches may be in flight; keep 4 outstanding.
    const inflight: Promise<unknown>[] = [];
    for (let b = 0; b < batches; b++) {
      inflight.push(store.writeBatch(make()));
      if (inflight.length >= 4) await inflight.shift();
    }
    await Promise.all(inflight);
    const sec = (performance.now() - t0) / 1000;
    const readings = batches * 400;
    console.log(`embedded writeBatch(100×4): ${(readings / sec).toFixed(0)} readings/s, ${(batches / sec).toFixed(0)} batches/s (sync=full)`);
    expect(readings / sec).toBeGreaterThan(1000);
  });
});

/**
 * The telemetry-store contract, one suite run on every store that keeps readings itself
 * (embedded SQLite: test/unit/telemetry-embedded.test.ts; PostgreSQL, cluster mode:
 * test/integration/telemetry-pg.test.ts): one row per (device, field, ts), the last value wins,
 * an identical re-send is a duplicate, the field-type rule with its dead-letter table, history
 * windows, retention, purge of one device, health.
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import type { Metrics } from '../../src/core/index.js';
import type { PurgeCounts, TelemetryPurge, TelemetryRecord, TelemetryStore } from '../../src/storage/telemetry/index.js';
import { FakeClock, metricValue, testMetrics } from './influxd.js';

export const T0 = Date.UTC(2025, 5, 1);

export type ContractStore = TelemetryStore & TelemetryPurge & { pruneNow(): Promise<number> };

/** A dead-letter row as both stores keep it (the stored value's encoding differs per store and is left out). */
export interface DeadRow { device: string; field: string; ts: number; type: string; reason: string; detail: string | null }

export interface ContractSubject {
  store: ContractStore;
  /** Stop the store and start a new one over the same data. */
  reopen(): Promise<ContractStore>;
  deadReadings(): Promise<DeadRow[]>;
  close(): Promise<void>;
}

/** Registers the contract's tests; `open` makes a store with empty data, started. */
export function telemetryStoreContract(open: (ctx: { clock: FakeClock; metrics: Metrics }) => Promise<ContractSubject>): void {
  let s: ContractSubject;
  let metrics: Metrics;
  let clock: FakeClock;
  const store = (): ContractStore => s.store;

  beforeEach(async () => {
    metrics = testMetrics();
    clock = new FakeClock(T0 + 86_400_000);
    s = await open({ clock, metrics });
  });
  afterEach(async () => { await s.close(); });

  it('contract: healthy, named, nothing left to drain', async () => {
    expect(store().name).toBe('telemetry-store');
    expect((await store().health()).ok).toBe(true);
    expect(await store().drain(1000)).toBe(true);
  });

  it('contract: stores numbers, booleans and strings and de-duplicates (device, ts, field)', async () => {
    const recs: TelemetryRecord[] = [
      { deviceId: 'd1', kind: 'sensor', ts: T0, values: { t: 1, ok: true, s: '12' } },
      { deviceId: 'd1', kind: 'sensor', ts: T0 + 1000, values: { t: 1.5, ok: false, s: 'a "quoted", \\ string\n' } },
    ];
    expect(await store().writeBatch(recs)).toEqual({ written: 6, duplicates: 0 });
    // Re-upload of the same readings plus one new field: only the new one is written.
    expect(await store().writeBatch([{ ...recs[0]!, values: { ...recs[0]!.values, extra: 3 } }, recs[0]!])).toEqual({ written: 1, duplicates: 6 });
    expect(await metricValue(metrics, 'keng_readings_duplicate_total')).toBe(6);
    expect(await metricValue(metrics, 'keng_readings_stored_total', { store: store().kind })).toBe(7);
    const pts = await store().query({ deviceId: 'd1', fields: [], from: T0, to: T0 + 2000 });
    expect(pts).toEqual([
      { ts: T0, values: { extra: 3, ok: true, s: '12', t: 1 } },
      { ts: T0 + 1000, values: { ok: false, s: 'a "quoted", \\ string\n', t: 1.5 } },
    ]);
    expect(await store().query({ deviceId: 'd1', fields: ['t', 'nope'], from: T0, to: T0 + 2000, limit: 1 })).toEqual([{ ts: T0, values: { t: 1 } }]);
    expect(await store().query({ deviceId: 'other', fields: [], from: T0, to: T0 + 2000 })).toEqual([]);
    expect(await store().query({ deviceId: 'd1', fields: [], from: T0, to: T0 + 2000, limit: 0 })).toEqual([]);
  });

  it('contract: the last value wins; an identical re-send, also within one batch, is a duplicate', async () => {
    const r = (ts: number, a: number): TelemetryRecord => ({ deviceId: 'd', kind: 'k', ts, values: { a } });
    expect(await store().writeBatch([r(T0, 1), r(T0 + 1000, 2), r(T0 + 2000, 3)])).toEqual({ written: 3, duplicates: 0 });
    expect(await store().writeBatch([r(T0, 1), r(T0 + 1000, 2), r(T0 + 500, 4)])).toEqual({ written: 1, duplicates: 2 });
    // T0: 1 → 9 (written); T0+2000: 3 → 9 (written), 9 again (duplicate), then 5 (written), 5 (duplicate).
    expect(await store().writeBatch([r(T0, 9), r(T0 + 2000, 9), r(T0 + 2000, 9), r(T0 + 2000, 5), r(T0 + 2000, 5)])).toEqual({ written: 3, duplicates: 2 });
    const q = { deviceId: 'd', fields: [], from: T0, to: T0 + 3000 };
    expect(await store().query(q)).toEqual([
      { ts: T0, values: { a: 9 } }, { ts: T0 + 500, values: { a: 4 } }, { ts: T0 + 1000, values: { a: 2 } }, { ts: T0 + 2000, values: { a: 5 } },
    ]);
    expect(await store().query({ ...q, everyMs: 3_600_000, agg: 'sum' })).toEqual([{ ts: T0, values: { a: 20 } }]);
    expect(await store().query({ ...q, everyMs: 3_600_000, agg: 'last' })).toEqual([{ ts: T0, values: { a: 5 } }]);
  });

  it('contract: a re-sent message with other fields is taken field by field; the fields it lacks keep their values', async () => {
    const m = (values: Record<string, number | string | boolean>): TelemetryRecord => ({ deviceId: 'd', kind: 'k', ts: T0, values });
    expect(await store().writeBatch([m({ a: 1, b: 2, d: 'x' })])).toEqual({ written: 3, duplicates: 0 });
    // a the same (duplicate), b changed, c new; d not sent: kept. Then within one batch: c again (duplicate), e new, b back.
    expect(await store().writeBatch([m({ a: 1, b: 3, c: true })])).toEqual({ written: 2, duplicates: 1 });
    expect(await store().writeBatch([m({ c: true, e: 5 }), m({ b: 2 })])).toEqual({ written: 2, duplicates: 1 });
    expect(await store().query({ deviceId: 'd', fields: [], from: T0, to: T0 + 1 })).toEqual([{ ts: T0, values: { a: 1, b: 2, c: true, d: 'x', e: 5 } }]);
    expect(await store().query({ deviceId: 'd', fields: ['b', 'e'], from: T0, to: T0 + 1 })).toEqual([{ ts: T0, values: { b: 2, e: 5 } }]);
  });

  it('contract: aggregates in epoch-aligned windows, numeric-only for mean/min/max/sum', async () => {
    const recs: TelemetryRecord[] = [];
    for (let i = 0; i < 12; i++) recs.push({ deviceId: 'd', kind: 'sensor', ts: T0 + i * 60_000 + 7, values: { v: i, b: i % 2 === 0, s: `x${i}` } });
    await store().writeBatch(recs);
    const q = { deviceId: 'd', fields: [] as string[], from: T0 + 120_000, to: T0 + 720_000, everyMs: 300_000 };
    // windows [T0, T0+5m) (partly: minutes 2..4), [T0+5m, T0+10m), [T0+10m, ...) (minute 10, 11)
    expect(await store().query({ ...q, agg: 'mean' })).toEqual([
      { ts: T0, values: { v: 3 } }, { ts: T0 + 300_000, values: { v: 7 } }, { ts: T0 + 600_000, values: { v: 10.5 } },
    ]);
    expect(await store().query({ ...q, agg: 'count' })).toEqual([
      { ts: T0, values: { b: 3, s: 3, v: 3 } }, { ts: T0 + 300_000, values: { b: 5, s: 5, v: 5 } }, { ts: T0 + 600_000, values: { b: 2, s: 2, v: 2 } },
    ]);
    expect(await store().query({ ...q, agg: 'last' })).toEqual([
      { ts: T0, values: { b: true, s: 'x4', v: 4 } }, { ts: T0 + 300_000, values: { b: false, s: 'x9', v: 9 } }, { ts: T0 + 600_000, values: { b: false, s: 'x11', v: 11 } },
    ]);
    expect(await store().query({ ...q, agg: 'sum', fields: ['v', 'b'] })).toEqual([
      { ts: T0, values: { v: 9 } }, { ts: T0 + 300_000, values: { v: 35 } }, { ts: T0 + 600_000, values: { v: 21 } },
    ]);
    expect(await store().query({ ...q, agg: 'min' })).toEqual([
      { ts: T0, values: { v: 2 } }, { ts: T0 + 300_000, values: { v: 5 } }, { ts: T0 + 600_000, values: { v: 10 } },
    ]);
    expect(await store().query({ ...q, agg: 'max', fields: ['s'] })).toEqual([]);
    // Windows before the epoch align the same way (floor).
    await store().writeBatch([{ deviceId: 'n', kind: 'k', ts: -1, values: { v: 1 } }, { deviceId: 'n', kind: 'k', ts: -300_001, values: { v: 2 } }]);
    expect(await store().query({ deviceId: 'n', fields: [], from: -600_000, to: 0, everyMs: 300_000, agg: 'max' })).toEqual([
      { ts: -600_000, values: { v: 2 } }, { ts: -300_000, values: { v: 1 } },
    ]);
    await expect(store().query({ ...q, everyMs: 0 })).rejects.toMatchObject({ code: 'KENG_ERR_VALIDATION' });
  });

  it('contract: prunes readings older than the retention in chunks', async () => {
    const day = 86_400_000;
    clock.t = T0 + 400 * day;
    const recs: TelemetryRecord[] = [];
    for (let i = 0; i < 7000; i++) recs.push({ deviceId: `d${i % 3}`, kind: 'sensor', ts: T0 + i * 1000, values: { a: i } }); // old
    recs.push({ deviceId: 'd0', kind: 'sensor', ts: T0 + 399 * day, values: { a: 1 } }); // recent
    await store().writeBatch(recs);
    expect(await store().pruneNow()).toBe(7000);
    const left = await store().query({ deviceId: 'd0', fields: [], from: 0, to: T0 + 401 * day });
    expect(left).toEqual([{ ts: T0 + 399 * day, values: { a: 1 } }]);
  });

  it('contract: keeps data across a restart', async () => {
    await store().writeBatch([{ deviceId: 'd', kind: 'k', ts: T0, values: { a: 1 } }]);
    await s.reopen();
    expect(await store().writeBatch([{ deviceId: 'd', kind: 'k', ts: T0, values: { a: 1, b: 2 } }])).toEqual({ written: 1, duplicates: 1 });
    expect(await store().query({ deviceId: 'd', fields: [], from: T0, to: T0 + 1 })).toEqual([{ ts: T0, values: { a: 1, b: 2 } }]);
  });

  it('contract: field-type rule: a value of another type goes to the dead-letter table; the other fields of the message are stored', async () => {
    expect(await store().writeBatch([{ deviceId: 'd1', kind: 'sensor', ts: T0, values: { rssi: -70, t: 20 } }])).toEqual({ written: 2, duplicates: 0 });
    const res = await store().writeBatch([
      { deviceId: 'd1', kind: 'sensor', ts: T0 + 1000, values: { rssi: 'weak', t: 21, on: true } },
      { deviceId: 'd2', kind: 'sensor', ts: T0 + 1000, values: { t: false, on: false } },
    ]);
    expect(res).toEqual({
      written: 3, duplicates: 0, setAside: [
        { deviceId: 'd1', ts: T0 + 1000, field: 'rssi', value: 'weak', reason: 'field_type_conflict' },
        { deviceId: 'd2', ts: T0 + 1000, field: 't', value: false, reason: 'field_type_conflict' },
      ],
    });
    expect(await metricValue(metrics, 'keng_readings_dead_lettered_total', { store: store().kind, reason: 'field_type_conflict' })).toBe(2);
    expect(await metricValue(metrics, 'keng_readings_stored_total', { store: store().kind })).toBe(5);
    expect(await store().query({ deviceId: 'd1', fields: [], from: T0, to: T0 + 2000 })).toEqual([
      { ts: T0, values: { rssi: -70, t: 20 } }, { ts: T0 + 1000, values: { on: true, t: 21 } },
    ]);
    // The type is kept in the database: after a restart a string rssi is still set aside.
    await s.reopen();
    expect((await store().writeBatch([{ deviceId: 'd3', kind: 'sensor', ts: T0, values: { rssi: 'ok', on: 1 } }])).setAside?.map((a) => a.field)).toEqual(['rssi', 'on']);
    expect(await s.deadReadings()).toEqual([
      { device: 'd1', field: 'rssi', ts: T0 + 1000, type: 'string', reason: 'field_type_conflict', detail: 'field is number, value is string' },
      { device: 'd2', field: 't', ts: T0 + 1000, type: 'boolean', reason: 'field_type_conflict', detail: 'field is number, value is boolean' },
      { device: 'd3', field: 'on', ts: T0, type: 'number', reason: 'field_type_conflict', detail: 'field is boolean, value is number' },
      { device: 'd3', field: 'rssi', ts: T0, type: 'string', reason: 'field_type_conflict', detail: 'field is number, value is string' },
    ]);
  });

  it('contract: purges one device (before a time, then all), in chunks; other devices keep theirs', async () => {
    const recs: TelemetryRecord[] = [];
    for (let i = 0; i < 6000; i++) recs.push({ deviceId: i % 2 ? 'gone' : 'kept', kind: 'k', ts: T0 + i * 1000, values: { a: i } });
    await store().writeBatch(recs);
    await store().writeBatch([{ deviceId: 'gone', kind: 'k', ts: T0, values: { a: 'text' } }]); // a dead letter
    const removed: PurgeCounts = {};
    await store().purgeLocal('gone', T0 + 2000 * 1000, removed, new AbortController().signal);
    expect(removed).toEqual({ readings: 1000, deadReadings: 1 });
    await store().purgeLocal('gone', null, removed, new AbortController().signal);
    expect(removed).toEqual({ readings: 3000, deadReadings: 1 });
    const all = { fields: [], from: T0, to: T0 + 6000 * 1000 };
    expect(await store().query({ deviceId: 'gone', ...all })).toEqual([]);
    expect((await store().query({ deviceId: 'kept', ...all })).length).toBe(3000);
    expect(await s.deadReadings()).toEqual([]);
    const aborted = new AbortController();
    aborted.abort();
    await expect(store().purgeLocal('kept', null, {}, aborted.signal)).rejects.toThrow();
  });
}

/** The throughput tests' batches: 100 soil probes × 4 fields, each batch 1 s after the one before. */
export function soilBatches(startTs: number): () => TelemetryRecord[] {
  let ts = startTs;
  return () => {
    const out: TelemetryRecord[] = [];
    for (let i = 0; i < 100; i++) out.push({ deviceId: `dev-${i}`, kind: 'sensor', ts, values: { soil_moisture: 31.5 + i, temperature: 24.1, humidity: 70 + (i % 7), battery_v: 3.7 } });
    ts += 1000;
    return out;
  };
}

/**
 * One warm-up batch (dictionaries, field kinds), then `batches` batches with 4 in flight, as the
 * ingest's group commit may have them. Returns the seconds the timed batches took.
 */
export async function timedWrites(store: Pick<TelemetryStore, 'writeBatch'>, make: () => TelemetryRecord[], batches: number): Promise<number> {
  await store.writeBatch(make());
  const t0 = performance.now();
  const inflight: Promise<unknown>[] = [];
  for (let b = 0; b < batches; b++) {
    inflight.push(store.writeBatch(make()));
    if (inflight.length >= 4) await inflight.shift();
  }
  await Promise.all(inflight);
  return (performance.now() - t0) / 1000;
}

/**
 * Field types and the area tag against a real InfluxDB 1.x (Debian influxd):
 * a type change keeps the message's other fields, the rule matches the
 * embedded store, the server's types are learned, and what another writer
 * changed is dead-lettered field by field; a device that moves to another
 * area keeps one history.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import {
  createTelemetryStore, type Agg, type HistoryQuery, type TelemetryRecord, type TelemetryStore,
} from '../../src/storage/telemetry/index.js';
import { FakeClock, fastTimers, metricValue, influxdForFile, storeConfig, testLogger, testMetrics } from '../helpers/influxd.js';

const fx = influxdForFile('keng-ftypes-');
const tmp = (): string => fx.tmp();
let dbSeq = 0;

function influxStore(dir: string, database: string): { store: TelemetryStore; metrics: ReturnType<typeof testMetrics> } {
  const metrics = testMetrics();
  const clock = new FakeClock();
  const config = storeConfig(dir, {
    telemetry: { store: 'influxdb' },
    influx: { url: fx.influxd.url, api: 'v1', database, retryMinMs: 500, retryMaxMs: 30_000, timeoutMs: 2000 },
  });
  return { store: createTelemetryStore(config, { dataDir: dir, logger: testLogger(), metrics, clock, timers: fastTimers(clock, 5) }), metrics };
}

function embeddedStore(dir: string): TelemetryStore {
  return createTelemetryStore(storeConfig(dir), { dataDir: dir, logger: testLogger(), metrics: testMetrics(), clock: new FakeClock() });
}

function deadReadings(file: string): unknown[] {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare('SELECT device, field, ts, value, type, reason FROM dead_readings ORDER BY ts, field').all();
  } finally { db.close(); }
}

async function influxCount(database: string, field: string): Promise<number> {
  const r = await fx.influxd.queryOrThrow(`SELECT count("${field}") FROM "telemetry"`, database);
  return (r.results?.[0]?.series?.[0]?.values?.[0]?.[1] as number | undefined) ?? 0;
}

const T0 = Date.UTC(2025, 10, 30, 0, 0, 0);
const rec = (ts: number, values: TelemetryRecord['values'], deviceId = 'soil-1', area = '00004'): TelemetryRecord =>
  ({ deviceId, kind: 'sensor', area, ts, values });

describe('field types and the area tag (real influxd)', () => {
  it('a type change against real InfluxDB 1.6.7 keeps the other fields', async () => {
    const db = `keng_ft_${++dbSeq}`;
    const dir = tmp();
    const embDir = tmp();
    const { store, metrics } = influxStore(dir, db);
    const emb = embeddedStore(embDir);
    await store.start(); await emb.start();
    const batches: TelemetryRecord[][] = [
      [rec(T0, { rssi: -70, soil_moisture: 31.5 }), rec(T0 + 60_000, { rssi: -71, soil_moisture: 31.25 })],
      // The firmware now sends rssi as text, in the same message as the other readings.
      [rec(T0 + 120_000, { rssi: 'weak', soil_moisture: 30.5, battery_v: 3.75 })],
      [rec(T0 + 180_000, { rssi: -72, soil_moisture: 30 })],
      // Another value for an existing (device, field, ts): both stores keep the last one (so do the latest values).
      [rec(T0 + 60_000, { soil_moisture: 32 })],
    ];
    try {
      const results = [];
      for (const b of batches) { results.push(await store.writeBatch(b)); await emb.writeBatch(b); }
      const aside = [{ deviceId: 'soil-1', ts: T0 + 120_000, field: 'rssi', value: 'weak', reason: 'field_type_conflict' }];
      expect(results[1]).toEqual({ written: 2, duplicates: 0, setAside: aside });
      expect(await store.drain(20_000)).toBe(true);
      // InfluxDB holds every other reading of that message.
      expect(await influxCount(db, 'soil_moisture')).toBe(4);
      expect((await store.query({ deviceId: 'soil-1', fields: ['soil_moisture'], from: T0 + 60_000, to: T0 + 60_001 }))[0]!.values).toEqual({ soil_moisture: 32 });
      expect(await influxCount(db, 'battery_v')).toBe(1);
      expect(await influxCount(db, 'rssi')).toBe(3);
      const q: HistoryQuery = { deviceId: 'soil-1', fields: [], from: T0, to: T0 + 3_600_000 };
      const history = await store.query(q);
      expect(history[2]).toEqual({ ts: T0 + 120_000, values: { battery_v: 3.75, soil_moisture: 30.5 } });
      // Both stores apply the same rule, so the history API answers the same.
      expect(history).toEqual(await emb.query(q));
      for (const agg of ['mean', 'count', 'last'] as Agg[]) expect(await store.query({ ...q, everyMs: 300_000, agg })).toEqual(await emb.query({ ...q, everyMs: 300_000, agg }));
      const dead = [{ device: 'soil-1', field: 'rssi', ts: T0 + 120_000, value: 'weak', type: 'string', reason: 'field_type_conflict' }];
      expect(deadReadings(path.join(dir, 'influx-queue.db'))).toEqual(dead);
      expect(await metricValue(metrics, 'keng_readings_dead_lettered_total', { store: 'influxdb-v1', reason: 'field_type_conflict' })).toBe(1);
      expect(await metricValue(metrics, 'keng_readings_stored_total', { store: 'influxdb-v1' })).toBe(9);
      expect(await metricValue(metrics, 'keng_store_errors_total', { kind: 'rejected' })).toBe(0); // InfluxDB was never sent the conflict
    } finally { await store.stop(); await emb.stop(); }
    expect(deadReadings(path.join(embDir, 'telemetry.db'))).toEqual([
      { device: 'soil-1', field: 'rssi', ts: T0 + 120_000, value: 'weak', type: 'string', reason: 'field_type_conflict' },
    ]);

    // A fresh Keng (empty queue) on the existing database learns the types at start.
    const fresh = influxStore(tmp(), db);
    await fresh.store.start();
    try {
      const r = await fresh.store.writeBatch([rec(T0 + 240_000, { rssi: 'weak', soil_moisture: 29.5 })]);
      expect(r.setAside?.map((a) => a.field)).toEqual(['rssi']);
      expect(await fresh.store.drain(20_000)).toBe(true);
      expect(await influxCount(db, 'soil_moisture')).toBe(5);
      expect(await metricValue(fresh.metrics, 'keng_store_errors_total', { kind: 'rejected' })).toBe(0);
    } finally { await fresh.store.stop(); }
  });

  it('when another writer changed a field\'s type, InfluxDB\'s rejection costs only that field', async () => {
    const db = `keng_ft_${++dbSeq}`;
    const dir = tmp();
    const { store, metrics } = influxStore(dir, db);
    await store.start(); // the measurement is empty: nothing to learn yet
    try {
      // Another program writes "level" as a string into the same measurement.
      const res = await fetch(`${fx.influxd.url}/write?db=${db}&precision=ms`, { method: 'POST', body: `telemetry,device_id=other level="high" ${T0}` });
      expect(res.status).toBe(204);
      const recs: TelemetryRecord[] = [];
      for (let i = 0; i < 50; i++) recs.push(rec(T0 + i * 1000, i === 20 ? { level: 2.5, temp: 20 + i, ok: true } : { temp: 20 + i }));
      expect(await store.writeBatch(recs)).toEqual({ written: 52, duplicates: 0 }); // Keng did not know "level": accepted and queued
      expect(await store.drain(20_000)).toBe(true);
      expect(await influxCount(db, 'temp')).toBe(50);
      expect(await influxCount(db, 'ok')).toBe(1);
      expect(deadReadings(path.join(dir, 'influx-queue.db'))).toEqual([
        { device: 'soil-1', field: 'level', ts: T0 + 20_000, value: 2.5, type: 'number', reason: 'field_type_conflict' },
      ]);
      expect(await metricValue(metrics, 'keng_readings_dead_lettered_total', { reason: 'field_type_conflict' })).toBe(1);
      expect(await metricValue(metrics, 'keng_readings_stored_total', { store: 'influxdb-v1' })).toBe(51);
      // The server's answer taught the type: the next numeric level is set aside before it is queued.
      expect((await store.writeBatch([rec(T0 + 60_000, { level: 3, temp: 1 })])).setAside?.map((a) => a.field)).toEqual(['level']);
    } finally { await store.stop(); }
  });

  it('tags every point with the device\'s area; a device that moves keeps one history', async () => {
    const db = `keng_ft_${++dbSeq}`;
    const { store } = influxStore(tmp(), db);
    const emb = embeddedStore(tmp());
    await store.start(); await emb.start();
    try {
      const recs: TelemetryRecord[] = [];
      for (let i = 0; i < 40; i++) {
        const area = i < 20 ? '00004' : '00007'; // moved to another commune halfway
        recs.push(rec(T0 + i * 30_000, { temp: i, on: i % 2 === 0 }, 'mover', area));
        recs.push(rec(T0 + i * 30_000 + 7, { temp: 100 + i, area: i, kind: 'x' }, 'stayer', '00004')); // fields named like tags
      }
      recs.push(rec(T0 + 5, { temp: -1 }, 'nowhere', ''));
      await store.writeBatch(recs); await emb.writeBatch(recs);
      expect(await store.drain(20_000)).toBe(true);
      const tags = await fx.influxd.queryOrThrow('SHOW TAG VALUES FROM "telemetry" WITH KEY = "area"', db);
      expect(tags.results?.[0]?.series?.[0]?.values?.map((v) => v[1])).toEqual(['00004', '00007']);
      // Dashboards group by area.
      const byArea = await fx.influxd.queryOrThrow('SELECT count("temp") FROM "telemetry" GROUP BY "area"', db);
      expect(Object.fromEntries((byArea.results?.[0]?.series ?? []).map((s) => [(s as unknown as { tags: { area: string } }).tags.area, s.values[0]![1]])))
        .toEqual({ '': 1, '00004': 60, '00007': 20 });
      // The history API: one series per device across the move, the same answers as the embedded store.
      const span = { from: T0 - 60_000, to: T0 + 3_600_000 };
      for (const deviceId of ['mover', 'stayer', 'nowhere']) {
        const raw = await store.query({ deviceId, fields: [], ...span });
        expect(raw).toEqual(await emb.query({ deviceId, fields: [], ...span }));
        expect(raw).toHaveLength(deviceId === 'nowhere' ? 1 : 40);
        expect(await store.query({ deviceId, fields: ['temp'], ...span, limit: 25 })).toEqual(await emb.query({ deviceId, fields: ['temp'], ...span, limit: 25 }));
        const named = { deviceId, fields: ['area', 'kind', 'temp'], ...span };
        expect(await store.query(named)).toEqual(await emb.query(named));
        expect(await store.query({ ...named, everyMs: 300_000, agg: 'last' })).toEqual(await emb.query({ ...named, everyMs: 300_000, agg: 'last' }));
        for (const agg of ['mean', 'sum', 'count', 'last'] as Agg[]) {
          for (const everyMs of [300_000, 3_600_000]) {
            const q = { deviceId, fields: [], ...span, everyMs, agg };
            expect(await store.query(q), JSON.stringify(q)).toEqual(await emb.query(q));
          }
        }
      }
      expect(await store.query({ deviceId: 'mover', fields: ['temp'], ...span, everyMs: 3_600_000, agg: 'count' })).toEqual([{ ts: T0, values: { temp: 40 } }]);
    } finally { await store.stop(); await emb.stop(); }
  });
});

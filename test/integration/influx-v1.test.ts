/**
 * Real InfluxDB 1.x (Debian influxd) behind the on-disk queue: delivery,
 * equivalence of query() with the embedded store, outage and restart.
 */
import { describe, expect, it } from 'vitest';
import type { Config, DeepPartial } from '../../src/config/index.js';
import {
  createTelemetryStore, type Agg, type HistoryQuery, type TelemetryRecord, type TelemetryStore, type Timers,
} from '../../src/storage/telemetry/index.js';
import { FakeClock, fastTimers, metricValue, influxdForFile, storeConfig, testLogger, testMetrics } from '../helpers/influxd.js';

const fx = influxdForFile('keng-influx-');
const tmp = (): string => fx.tmp();
let dbSeq = 0;

interface Made { store: TelemetryStore; metrics: ReturnType<typeof testMetrics>; clock: FakeClock; timers: Timers & { simulatedMs: number } }

function influxStore(dir: string, database: string, influx: DeepPartial<Config['influx']> = {}, clock = new FakeClock()): Made {
  const metrics = testMetrics();
  const timers = fastTimers(clock, 5);
  const config = storeConfig(dir, {
    telemetry: { store: 'influxdb' },
    influx: { url: fx.influxd.url, api: 'v1', database, retryMinMs: 500, retryMaxMs: 30_000, timeoutMs: 2000, ...influx },
  });
  return { store: createTelemetryStore(config, { dataDir: dir, logger: testLogger(), metrics, clock, timers }), metrics, clock, timers };
}

async function count(database: string, field = 'a'): Promise<number> {
  const r = await fx.influxd.query(`SELECT count("${field}") FROM "telemetry"`, database);
  return Number(r.results?.[0]?.series?.[0]?.values?.[0]?.[1] ?? 0);
}

const T0 = Date.UTC(2025, 10, 30, 0, 0, 0);

function records(n: number, start = 0, device = 'dev-1'): TelemetryRecord[] {
  const out: TelemetryRecord[] = [];
  for (let i = start; i < start + n; i++) out.push({ deviceId: device, kind: 'sensor', ts: T0 + i * 1000, values: { a: i, b: i / 4, c: i % 3 === 0, d: `s${i}` } });
  return out;
}

describe('InfluxDB 1.x store (real influxd)', () => {
  it('delivers every reading, with types and escaping intact', async () => {
    const db = `keng_${++dbSeq}`;
    const { store, metrics } = influxStore(tmp(), db);
    await store.start();
    try {
      for (let b = 0; b < 20; b++) await store.writeBatch(records(100, b * 100));
      const odd: TelemetryRecord = {
        deviceId: 'odd dev,x=1', kind: 'spea ker', ts: T0,
        values: { s: 'quote " backslash \\ comma, eq= newline\nend', n: 1, f: 1.25, big: 1e21, neg: -0.5, t: true },
      };
      await store.writeBatch([odd]);
      expect(await store.drain(20_000)).toBe(true);
      for (const f of ['a', 'b', 'c', 'd']) expect(await count(db, f)).toBe(2000);
      const keys = await fx.influxd.query('SHOW FIELD KEYS FROM "telemetry"', db);
      const types = Object.fromEntries((keys.results?.[0]?.series?.[0]?.values ?? []) as [string, string][]);
      expect(types).toMatchObject({ a: 'float', b: 'float', c: 'boolean', d: 'string', n: 'float', f: 'float', s: 'string' });
      expect(await store.query({ deviceId: odd.deviceId, fields: [], from: T0, to: T0 + 1 })).toEqual([{ ts: T0, values: sortKeys(odd.values) }]);
      expect(await metricValue(metrics, 'keng_readings_stored_total', { store: 'influxdb-v1' })).toBe(8000 + 6);
      const h = await store.health();
      expect(h).toMatchObject({ ok: true, detail: { server: 'up', queued: 0 } });
    } finally { await store.stop(); }
  });

  it('dead-letters a field type conflict and keeps going (more in influx-field-types.test.ts)', async () => {
    const db = `keng_${++dbSeq}`;
    const { store, metrics } = influxStore(tmp(), db);
    await store.start();
    try {
      await store.writeBatch(records(10));
      expect(await store.drain(10_000)).toBe(true);
      await store.writeBatch([{ deviceId: 'dev-1', kind: 'sensor', ts: T0 + 999_000, values: { a: 'not a number' } }]);
      await store.writeBatch(records(10, 10));
      expect(await store.drain(10_000)).toBe(true);
      expect(await count(db)).toBe(20);
      expect(await metricValue(metrics, 'keng_readings_dead_lettered_total', { reason: 'field_type_conflict' })).toBe(1);
    } finally { await store.stop(); }
  });

  it('answers query() exactly like the embedded store (raw and every aggregate)', async () => {
    const db = `keng_${++dbSeq}`;
    const embeddedDir = tmp();
    const emb = createTelemetryStore(storeConfig(embeddedDir), { dataDir: embeddedDir, logger: testLogger(), metrics: testMetrics(), clock: new FakeClock() });
    const { store: inf } = influxStore(tmp(), db);
    await emb.start(); await inf.start();
    try {
      // Irregular timestamps over ~3 h, fields sometimes missing, dyadic values (sums exact in any order).
      let seed = 42;
      const rnd = (): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
      const data: TelemetryRecord[] = [];
      for (const dev of ['s-1', 's-2', 'spk 3']) {
        let ts = T0 - 7 * 60_000 + Math.floor(rnd() * 1000);
        for (let i = 0; i < 400; i++) {
          ts += 1 + Math.floor(rnd() * 60_000);
          if (i % 50 === 0) ts = Math.ceil(ts / 300_000) * 300_000; // exactly on a window boundary
          const values: TelemetryRecord['values'] = {};
          if (rnd() < 0.9) values.temp = Math.round((rnd() * 80 - 20) * 8) / 8;
          if (rnd() < 0.7) values.hum = Math.round(rnd() * 100);
          if (rnd() < 0.5) values.on = rnd() < 0.5;
          if (rnd() < 0.3) values.mode = rnd() < 0.5 ? 'eco' : 'boost "x"';
          if (!Object.keys(values).length) values.temp = 1;
          data.push({ deviceId: dev, kind: dev.startsWith('spk') ? 'speaker' : 'sensor', ts, values });
        }
      }
      for (let i = 0; i < data.length; i += 97) {
        const part = data.slice(i, i + 97);
        await emb.writeBatch(part); await inf.writeBatch(part);
      }
      expect(await inf.drain(20_000)).toBe(true);
      const span = { from: T0 - 3 * 60_000 - 1234, to: T0 + 4 * 3_600_000 + 777 };
      const queries: HistoryQuery[] = [];
      for (const deviceId of ['s-1', 's-2', 'spk 3', 'missing']) {
        for (const fields of [[], ['temp'], ['temp', 'on', 'mode'], ['nope']]) {
          queries.push({ deviceId, fields, ...span });
          queries.push({ deviceId, fields, ...span, limit: 17 });
          for (const everyMs of [60_000, 300_000, 3_600_000, 86_400_000]) {
            for (const agg of ['mean', 'min', 'max', 'sum', 'count', 'last'] as Agg[]) queries.push({ deviceId, fields, ...span, everyMs, agg });
          }
        }
      }
      let nonEmpty = 0;
      for (const q of queries) {
        const [a, b] = await Promise.all([emb.query(q), inf.query(q)]);
        expect(b, JSON.stringify(q)).toEqual(a);
        if (a.length) nonEmpty++;
      }
      expect(nonEmpty).toBeGreaterThan(queries.length / 2);
    } finally { await emb.stop(); await inf.stop(); }
  });

  it('loses nothing through an outage longer than the client retry time (3 min), and no duplicates', async () => {
    const db = `keng_${++dbSeq}`;
    const { store, timers } = influxStore(tmp(), db);
    await store.start();
    let written = 0;
    let next = 0;
    const write = async (n: number): Promise<void> => { await store.writeBatch(records(n, next)); next += n; written += n; };
    try {
      for (let i = 0; i < 10; i++) await write(50);
      await fx.influxd.stop();
      const outageStart = timers.simulatedMs;
      // Keep writing while the forwarder backs off, until > 3 minutes of (simulated) retry time passed.
      while (timers.simulatedMs - outageStart < 5 * 60_000) {
        await write(50);
        await new Promise((r) => setTimeout(r, 5));
      }
      const h = await store.health();
      expect(h.ok).toBe(true);
      expect(h.detail).toMatchObject({ server: 'down' });
      expect(h.detail.queued as number).toBeGreaterThan(0);
      await fx.influxd.restart();
      for (let i = 0; i < 5; i++) await write(50);
      expect(await store.drain(30_000)).toBe(true);
      expect(await count(db)).toBe(written);
      expect(await count(db, 'd')).toBe(written);
    } finally {
      await fx.influxd.restart().catch(() => undefined);
      await store.stop();
    }
  });

  it('resumes a non-empty queue after a controller restart', async () => {
    const db = `keng_${++dbSeq}`;
    const dir = tmp();
    // Create the database first, so only the queue is under test.
    await fx.influxd.query(`CREATE DATABASE "${db}"`);
    await fx.influxd.stop();
    const a = influxStore(dir, db);
    await a.store.start();
    try {
      for (let b = 0; b < 10; b++) await a.store.writeBatch(records(100, b * 100));
      expect((await a.store.health()).detail.queued).toBe(4000);
    } finally { await a.store.stop(); }
    const b = influxStore(dir, db);
    await b.store.start();
    try {
      expect((await b.store.health()).detail.queued).toBe(4000);
      await fx.influxd.restart();
      expect(await b.store.drain(30_000)).toBe(true);
      expect(await count(db)).toBe(1000);
      expect(await count(db, 'd')).toBe(1000);
    } finally { await b.store.stop(); }
  });
});

function sortKeys<T extends Record<string, unknown>>(o: T): T {
  return Object.fromEntries(Object.entries(o).sort(([x], [y]) => (x < y ? -1 : 1))) as T;
}

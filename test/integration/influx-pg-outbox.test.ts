/**
 * Cluster mode with InfluxDB: readings committed to the PostgreSQL outbox (pg-influx-store.ts) and
 * forwarded by any node (pg-outbox.ts), with a real influxd 1.x and a real PostgreSQL 15: delivery
 * and dead letters, two nodes forwarding from one outbox, a node dying with a claimed batch, and
 * an InfluxDB outage.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config, DeepPartial } from '../../src/config/index.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { createTelemetryStore, PgInfluxTelemetryStore, type TelemetryRecord } from '../../src/storage/telemetry/index.js';
import { Backoff } from '../../src/storage/telemetry/backoff.js';
import { InfluxV1Backend } from '../../src/storage/telemetry/influx-v1.js';
import { PgOutboxForwarder } from '../../src/storage/telemetry/pg-outbox.js';
import { realTimers } from '../../src/storage/telemetry/timers.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { FakeClock, influxdForFile, metricValue, storeConfig, testLogger, testMetrics } from '../helpers/influxd.js';
import { soilBatches, timedWrites } from '../helpers/telemetry-contract.js';

const fx = influxdForFile('keng-pg-outbox-');
let pg: PostgresServer;
let seq = 0;
beforeAll(async () => { pg = await startPostgres(); }, 120_000);
afterAll(async () => { await pg?.destroy(); });

const T0 = Date.UTC(2025, 10, 30);

function config(database: string, influx: DeepPartial<Config['influx']> = {}): Readonly<Config> {
  return storeConfig('/nonexistent', {
    telemetry: { store: 'influxdb' },
    cluster: { databaseUrl: 'postgres://unused', redisUrl: 'redis://unused', nodeId: 'n1' },
    influx: { url: fx.influxd.url, api: 'v1', database, retryMinMs: 200, retryMaxMs: 1_000, timeoutMs: 2_000, batchLines: 200, ...influx },
  });
}

interface Node { store: PgInfluxTelemetryStore; db: Db<unknown>; metrics: ReturnType<typeof testMetrics>; clock: FakeClock }

/** One Keng node's store on the cluster database `url` (lease and poll shortened for the tests). */
function node(url: string, database: string, o: { leaseMs?: number; nodeId?: string; influxUrl?: string } = {}): Node {
  const db = openPgDb(url);
  const metrics = testMetrics();
  const clock = new FakeClock(T0 + 86_400_000);
  const cfg = config(database, o.influxUrl ? { url: o.influxUrl } : {});
  const store = new PgInfluxTelemetryStore(cfg, new InfluxV1Backend(cfg.influx, testLogger()), {
    dataDir: '/nonexistent', logger: testLogger(), metrics, clock, db, url, nodeId: o.nodeId ?? 'n1', leaseMs: o.leaseMs, pollMs: 200,
  });
  return { store, db, metrics, clock };
}

async function stopAll(...nodes: Node[]): Promise<void> {
  for (const n of nodes) { await n.store.stop(); await n.db.close(); }
}

function records(n: number, start = 0, device = 'dev-1'): TelemetryRecord[] {
  const out: TelemetryRecord[] = [];
  for (let i = start; i < start + n; i++) out.push({ deviceId: device, kind: 'sensor', ts: T0 + i * 1000, values: { a: i, b: i / 4, c: i % 3 === 0, d: `s${i}` } });
  return out;
}

async function count(database: string, field = 'a'): Promise<number> {
  const r = await fx.influxd.query(`SELECT count("${field}") FROM "telemetry"`, database);
  return Number(r.results?.[0]?.series?.[0]?.values?.[0]?.[1] ?? 0);
}

async function until(what: string, f: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!await f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('InfluxDB through the PostgreSQL outbox (cluster mode, real influxd and PostgreSQL)', () => {
  it('delivers every reading with types and escaping intact; set-aside and refused readings go to telemetry_dead_readings', async () => {
    const url = await pg.createDatabase(`ob${++seq}`);
    const database = `keng_ob${seq}`;
    // The wiring's factory makes this store in cluster mode with telemetry.store = influxdb.
    const cfg = config(database);
    expect(createTelemetryStore({ ...cfg, cluster: { ...cfg.cluster, databaseUrl: url } }, {
      dataDir: '/nonexistent', logger: testLogger(), metrics: testMetrics(), clock: new FakeClock(), clusterDb: openPgDb(url),
    })).toBeInstanceOf(PgInfluxTelemetryStore);
    const n = node(url, database);
    await n.store.start();
    try {
      for (let b = 0; b < 10; b++) expect(await n.store.writeBatch(records(100, b * 100))).toEqual({ written: 400, duplicates: 0 });
      const odd: TelemetryRecord = { deviceId: 'odd dev,x=1', kind: 'spea ker', ts: T0, values: { s: 'quote " backslash \\ comma, eq= newline\nend', n: 1, t: true } };
      await n.store.writeBatch([odd]);
      expect(await n.store.drain(20_000)).toBe(true);
      for (const f of ['a', 'b', 'c', 'd']) expect(await count(database, f)).toBe(1000);
      expect(await n.store.query({ deviceId: odd.deviceId, fields: [], from: T0, to: T0 + 1 })).toEqual([{ ts: T0, values: { n: 1, s: odd.values.s, t: true } }]);
      expect(await metricValue(n.metrics, 'keng_readings_stored_total', { store: 'influxdb-v1' })).toBe(4003);

      // The field-type rule, in the ingest transaction: `a` is a number, a string is set aside.
      const r = await n.store.writeBatch([{ deviceId: 'dev-1', kind: 'sensor', ts: T0 + 5e6, values: { a: 'text', e: 1 } }]);
      expect(r.setAside).toEqual([expect.objectContaining({ deviceId: 'dev-1', field: 'a', value: 'text', reason: 'field_type_conflict' })]);
      // A field this cluster never typed but InfluxDB holds as a string (another writer): InfluxDB refuses
      // the number, and only that reading is dead-lettered; the other fields of its line are stored.
      await fetch(`${fx.influxd.url}/write?db=${database}&precision=ms`, { method: 'POST', body: `telemetry,device_id=other q="str" ${T0}` });
      await n.store.writeBatch([{ deviceId: 'dev-2', kind: 'sensor', ts: T0 + 7e6, values: { q: 5, w: 6 } }]);
      expect(await n.store.drain(20_000)).toBe(true);
      expect(await count(database, 'w')).toBe(1);
      expect(await count(database, 'e')).toBe(1);
      const dead = await sql<{ device: string; field: string; reason: string; status: number | null; line: string | null }>`SELECT device, field, reason, status, line
        FROM telemetry_dead_readings ORDER BY field`.execute(n.db.kysely);
      expect(dead.rows).toEqual([
        { device: 'dev-1', field: 'a', reason: 'field_type_conflict', status: null, line: null },
        { device: 'dev-2', field: 'q', reason: 'field_type_conflict', status: 400, line: `telemetry,device_id=dev-2,kind=sensor q=5 ${T0 + 7e6}` },
      ]);
      expect(await metricValue(n.metrics, 'keng_readings_dead_lettered_total', { reason: 'field_type_conflict' })).toBe(2);
      expect((await n.store.health())).toMatchObject({ ok: true, detail: { server: 'up', queued: 0 } });
    } finally { await stopAll(n); }
  }, 60_000);

  it('two nodes both forward from one outbox: every reading reaches InfluxDB once', async () => {
    const url = await pg.createDatabase(`ob${++seq}`);
    const database = `keng_ob${seq}`;
    await fx.influxd.query(`CREATE DATABASE "${database}"`);
    const nodes = [node(url, database, { nodeId: 'n1' }), node(url, database, { nodeId: 'n2' })];
    for (const x of nodes) await x.store.start();
    try {
      // Both nodes ingest at once, 8 batches in flight each, different devices, while both forward.
      await Promise.all(nodes.map((x, i) => Promise.all(Array.from({ length: 8 }, async (_, k) => {
        for (let b = 0; b < 10; b++) await x.store.writeBatch(records(50, b * 50, `n${i}-d${k}`));
      }))));
      for (const x of nodes) expect(await x.store.drain(60_000)).toBe(true);
      const total = 2 * 8 * 500;
      expect(await count(database)).toBe(total);
      expect(await count(database, 'd')).toBe(total);
      const sent = await Promise.all(nodes.map((x) => metricValue(x.metrics, 'keng_readings_stored_total', { store: 'influxdb-v1' })));
      expect(sent[0]! + sent[1]!).toBe(total * 4); // each row was forwarded by exactly one node
      for (const x of sent) expect(x).toBeGreaterThan(0); // both nodes forwarded
      const rows = await sql<{ n: number }>`SELECT COUNT(*)::int AS n FROM telemetry_influx_outbox`.execute(nodes[0]!.db.kysely);
      expect(rows.rows[0]!.n).toBe(0);
    } finally { await stopAll(...nodes); }
  }, 120_000);

  it('a node that dies with a claimed batch: another node sends it after the lease, nothing missing, no duplicate', async () => {
    const url = await pg.createDatabase(`ob${++seq}`);
    const database = `keng_ob${seq}`;
    await fx.influxd.query(`CREATE DATABASE "${database}"`);
    const leaseMs = 3_000;
    // Rows committed, then claimed by "the dying node", which sends half of them and dies before the DELETE.
    // (InfluxDB is down meanwhile, so the writing node's own forwarder sends nothing.)
    await fx.influxd.stop();
    const writer = node(url, database);
    await writer.store.start();
    for (let b = 0; b < 6; b++) await writer.store.writeBatch(records(100, b * 100));
    await writer.store.stop();
    await writer.db.close();
    await fx.influxd.restart();
    const db = openPgDb(url);
    const backend = new InfluxV1Backend(config(database).influx, testLogger());
    const fwd = (): PgOutboxForwarder => new PgOutboxForwarder({
      db, backend, logger: testLogger(), metrics: testMetrics(), clock: new FakeClock(), timers: realTimers, backoff: new Backoff(100, 100),
      batchLines: 200, leaseMs, pollMs: 100, nodeId: 'dead',
    });
    const sentThenDied = await fwd().claim();
    const claimedOnly = await fwd().claim();
    expect(sentThenDied?.ids).toHaveLength(2);
    expect(claimedOnly?.ids).toHaveLength(2);
    expect((await backend.write(sentThenDied!.body, sentThenDied!.lines, new AbortController().signal)).ok).toBe(true);
    const claimedAt = Date.now();
    expect(await count(database)).toBe(200);

    const s2 = node(url, database, { leaseMs });
    await s2.store.start();
    try {
      // The free rows go at once; the dead node's rows wait for its lease.
      await until('free rows sent', async () => await count(database) === 400);
      const left = await sql<{ n: number }>`SELECT COUNT(*)::int AS n FROM telemetry_influx_outbox`.execute(db.kysely);
      if (Date.now() - claimedAt < leaseMs - 500) expect(left.rows[0]!.n).toBe(4);
      expect(await s2.store.drain(30_000)).toBe(true);
      expect(Date.now() - claimedAt).toBeGreaterThanOrEqual(leaseMs - 200);
      expect(await count(database)).toBe(600);
      expect(await count(database, 'd')).toBe(600);
      // The batch sent twice is one set of points in InfluxDB (same series and time).
      const r = await fx.influxd.query('SELECT count("a") FROM "telemetry" WHERE time >= 0', database);
      expect(Number(r.results?.[0]?.series?.[0]?.values?.[0]?.[1])).toBe(600);
    } finally {
      await stopAll(s2);
      await backend.close();
      await db.close();
    }
  }, 60_000);

  it('InfluxDB down then up: the outbox grows (depth, oldest age), then drains', async () => {
    const url = await pg.createDatabase(`ob${++seq}`);
    const database = `keng_ob${seq}`;
    await fx.influxd.query(`CREATE DATABASE "${database}"`);
    const n = node(url, database);
    await n.store.start();
    try {
      await n.store.writeBatch(records(100));
      expect(await n.store.drain(20_000)).toBe(true);
      await fx.influxd.stop();
      for (let b = 1; b <= 20; b++) {
        await n.store.writeBatch(records(100, b * 100));
        await new Promise((r) => setTimeout(r, 50));
      }
      n.clock.t += 90_000;
      const t = await n.store.outboxStats();
      expect(t.readings).toBe(20 * 100 * 4);
      expect(await metricValue(n.metrics, 'keng_queue_depth_readings')).toBe(8000);
      expect(await metricValue(n.metrics, 'keng_queue_oldest_age_seconds')).toBeGreaterThanOrEqual(90);
      const h = await n.store.health();
      expect(h).toMatchObject({ ok: true, detail: { server: 'down', queued: 8000 } });
      await fx.influxd.restart();
      expect(await n.store.drain(30_000)).toBe(true);
      expect(await count(database)).toBe(2100);
      expect(await count(database, 'd')).toBe(2100);
      await n.store.outboxStats();
      expect(await metricValue(n.metrics, 'keng_queue_depth_readings')).toBe(0);
      expect(await metricValue(n.metrics, 'keng_queue_oldest_age_seconds')).toBe(0);
    } finally {
      await fx.influxd.restart().catch(() => undefined);
      await stopAll(n);
    }
  }, 90_000);

  it('throughput: 100 records × 4 fields per writeBatch into the outbox, 4 in flight, while the node forwards', async () => {
    const url = await pg.createDatabase(`ob${++seq}`);
    const database = `keng_ob${seq}`;
    const n = node(url, database);
    await n.store.start();
    try {
      const batches = 300;
      const sec = await timedWrites(n.store, soilBatches(T0), batches);
      const t1 = performance.now();
      expect(await n.store.drain(60_000)).toBe(true);
      const all = sec + (performance.now() - t1) / 1000;
      console.log(`outbox writeBatch(100×4): ${(batches * 400 / sec).toFixed(0)} readings/s committed; all in InfluxDB after ${all.toFixed(1)} s (${(batches * 400 / all).toFixed(0)} readings/s end to end, fsync on)`);
      expect(await count(database, 'soil_moisture')).toBe((batches + 1) * 100);
    } finally { await stopAll(n); }
  }, 120_000);

  it('purging a device cuts its lines out of the outbox and deletes its dead letters, other devices untouched', async () => {
    const url = await pg.createDatabase(`ob${++seq}`);
    // No InfluxDB at this address: everything stays in the outbox.
    const n = node(url, `keng_ob${seq}`, { influxUrl: 'http://127.0.0.1:1' });
    await n.store.start();
    try {
      // dev-1 and dev-10 (a prefix of each other's tag) interleaved in the same rows.
      for (let b = 0; b < 5; b++) await n.store.writeBatch([...records(30, b * 30, 'dev-1'), ...records(30, b * 30, 'dev-10')]);
      await n.store.writeBatch([{ deviceId: 'dev-1', kind: 'sensor', ts: T0 + 9e6, values: { a: 'text' } }]);
      const removed: Record<string, number> = {};
      await n.store.purgeLocal('dev-1', T0 + 100 * 1000, removed, new AbortController().signal);
      expect(removed).toEqual({ queuedReadings: 100 * 4, deadReadings: 0 });
      await n.store.purgeLocal('dev-1', null, removed, new AbortController().signal);
      expect(removed).toEqual({ queuedReadings: 150 * 4, deadReadings: 1 });
      const t = await n.store.outboxStats();
      expect(t.readings).toBe(150 * 4);
      const bodies = await sql<{ body: string; lines: number; readings: number }>`SELECT body, lines, readings FROM telemetry_influx_outbox`.execute(n.db.kysely);
      const lines = bodies.rows.flatMap((r) => r.body.split('\n'));
      expect(lines).toHaveLength(150);
      expect(lines.every((l) => l.includes('device_id=dev-10,'))).toBe(true);
      expect(bodies.rows.reduce((x, r) => x + r.lines, 0)).toBe(150);
    } finally { await stopAll(n); }
  }, 60_000);
});

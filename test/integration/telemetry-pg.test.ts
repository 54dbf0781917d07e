/**
 * The PostgreSQL telemetry store (cluster mode) on a real PostgreSQL: the same contract as the
 * embedded store, plus what only a shared server has: two nodes learning a field's type at once,
 * the server going away (writes reject, health fails, nothing hangs) and coming back.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Metrics } from '../../src/core/index.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { PgTelemetryStore } from '../../src/storage/telemetry/pg-store.js';
import type { TelemetryRecord } from '../../src/storage/telemetry/index.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { FakeClock, storeConfig, testLogger, testMetrics } from '../helpers/influxd.js';
import { T0, soilBatches, telemetryStoreContract, timedWrites, type DeadRow } from '../helpers/telemetry-contract.js';

let server: PostgresServer;
let seq = 0;
beforeAll(async () => { server = await startPostgres(); }, 120_000);
afterAll(async () => { await server?.destroy(); });

function pgStore(url: string, db: Db<unknown>, clock: FakeClock, metrics: Metrics): PgTelemetryStore {
  return new PgTelemetryStore(storeConfig('/nonexistent'), { db, url, logger: testLogger(), metrics, clock });
}

describe('PostgreSQL telemetry store: the store contract', () => {
  telemetryStoreContract(async ({ clock, metrics }) => {
    const url = await server.createDatabase(`tel${++seq}`);
    let db = openPgDb(url);
    const make = async (): Promise<PgTelemetryStore> => { const st = pgStore(url, db, clock, metrics); await st.start(); return st; };
    const subject = {
      store: await make(),
      async reopen() {
        await subject.store.stop(); await db.close();
        db = openPgDb(url); subject.store = await make();
        return subject.store;
      },
      async deadReadings() {
        const r = await sql<DeadRow>`SELECT device, field, ts, type, reason, detail FROM telemetry_dead_readings ORDER BY device, field, ts`.execute(db.kysely);
        return r.rows;
      },
      async close() { await subject.store.stop(); await db.close(); },
    };
    return subject;
  });
});

describe('PostgreSQL telemetry store: several nodes, outages', () => {
  it('two nodes learning new fields at once agree on each field\'s type', async () => {
    const url = await server.createDatabase(`tel${++seq}`);
    const dbs = [openPgDb(url), openPgDb(url)];
    const stores = dbs.map((db) => pgStore(url, db, new FakeClock(T0), testMetrics()));
    await Promise.all(stores.map((s) => s.start())); // concurrent migrations too
    const rec = (dev: string, v: number | string): TelemetryRecord => ({
      deviceId: dev, kind: 'k', ts: T0, values: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`f${i}`, v])),
    });
    const [a, b] = await Promise.all([stores[0]!.writeBatch([rec('a', 1)]), stores[1]!.writeBatch([rec('b', 'x')])]);
    // Whichever committed its field first decides it; every field went one way for each node.
    expect(a.written + (a.setAside?.length ?? 0)).toBe(50);
    expect(a.written + b.written).toBe(50);
    const kinds = await sql<{ k: number; n: number }>`SELECT k, COUNT(*)::int AS n FROM telemetry_fields GROUP BY k ORDER BY k`.execute(dbs[0]!.kysely);
    expect(kinds.rows.reduce((n, r) => n + r.n, 0)).toBe(50);
    for (const s of stores) await s.stop();
    for (const d of dbs) await d.close();
  });

  it('two nodes writing the same keys at once: every batch commits, one row per key', async () => {
    const url = await server.createDatabase(`tel${++seq}`);
    const dbs = [openPgDb(url), openPgDb(url)];
    const stores = dbs.map((db) => pgStore(url, db, new FakeClock(T0), testMetrics()));
    for (const s of stores) await s.start();
    // The same 50 devices × 4 fields, in opposite orders on the two nodes, 4 batches in flight each.
    const batch = (node: number, round: number): TelemetryRecord[] => {
      const recs = Array.from({ length: 50 }, (_, i) => ({ deviceId: `d${i}`, kind: 'k', ts: T0 + (round % 5), values: { a: node, b: round, c: 1, d: 2 } }));
      return node ? recs.reverse() : recs;
    };
    const results = await Promise.all(stores.flatMap((s, node) => Array.from({ length: 20 }, (_, round) => s.writeBatch(batch(node, round)))));
    for (const r of results) expect(r.written + r.duplicates).toBe(200);
    const n = await sql<{ n: number }>`SELECT COUNT(*)::int AS n FROM telemetry_readings`.execute(dbs[0]!.kysely);
    expect(n.rows[0]!.n).toBe(5 * 200);
    for (const s of stores) await s.stop();
    for (const d of dbs) await d.close();
  }, 60_000);

  it('throughput: 100 records × 4 fields per writeBatch, 4 in flight', async () => {
    const url = await server.createDatabase(`tel${++seq}`);
    const db = openPgDb(url);
    const store = pgStore(url, db, new FakeClock(T0), testMetrics());
    await store.start();
    const batches = 300;
    const sec = await timedWrites(store, soilBatches(Date.now()), batches);
    console.log(`postgres writeBatch(100×4): ${(batches * 400 / sec).toFixed(0)} readings/s, ${(batches / sec).toFixed(0)} batches/s (fsync on)`);
    const n = await sql<{ n: number }>`SELECT COUNT(*)::int AS n FROM telemetry_readings`.execute(db.kysely);
    expect(n.rows[0]!.n).toBe((batches + 1) * 400);
    await store.stop();
    await db.close();
  }, 120_000);

  it('the server dies: writes reject (no hang), health fails; it comes back: writes work again', async () => {
    const url = await server.createDatabase(`tel${++seq}`);
    const db = openPgDb(url, { connectTimeoutMs: 1_000 });
    const store = pgStore(url, db, new FakeClock(T0), testMetrics());
    await store.start();
    const r = (i: number): TelemetryRecord[] => [{ deviceId: 'd', kind: 'k', ts: T0 + i, values: { a: i } }];
    expect(await store.writeBatch(r(1))).toEqual({ written: 1, duplicates: 0 });
    await server.kill();
    const t0 = Date.now();
    await expect(store.writeBatch(r(2))).rejects.toMatchObject({ code: 'KENG_ERR_STORE_UNAVAILABLE' });
    await expect(store.query({ deviceId: 'd', fields: [], from: T0, to: T0 + 10 })).rejects.toMatchObject({ code: 'KENG_ERR_STORE_UNAVAILABLE' });
    const h = await store.health();
    expect(h.ok).toBe(false);
    expect(Date.now() - t0).toBeLessThan(15_000);
    await server.restart();
    let back = false;
    for (let i = 0; i < 50 && !back; i++) { back = (await store.health()).ok; if (!back) await new Promise((res) => setTimeout(res, 100)); }
    expect(back).toBe(true);
    expect(await store.writeBatch(r(2))).toEqual({ written: 1, duplicates: 0 });
    expect(await store.query({ deviceId: 'd', fields: [], from: T0, to: T0 + 10 })).toEqual([{ ts: T0 + 1, values: { a: 1 } }, { ts: T0 + 2, values: { a: 2 } }]);
    await store.stop();
    await db.close();
  }, 60_000);

  it('start fails with a message naming the setting when the database cannot be reached', async () => {
    const url = 'postgres://keng:secret@127.0.0.1:1/keng';
    const db = openPgDb(url, { connectTimeoutMs: 1_000 });
    const store = pgStore(url, db, new FakeClock(T0), testMetrics());
    const err = await store.start().then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/KENG_DATABASE_URL/);
    expect(err?.message).not.toMatch(/secret/);
    await db.close();
  });
});

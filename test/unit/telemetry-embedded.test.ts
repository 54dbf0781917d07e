import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createTelemetryStore, type EmbeddedTelemetryStore, type TelemetryRecord } from '../../src/storage/telemetry/index.js';
import { FakeClock, storeConfig, testLogger, testMetrics } from '../helpers/influxd.js';
import { T0, soilBatches, telemetryStoreContract, timedWrites, type ContractStore, type DeadRow } from '../helpers/telemetry-contract.js';

describe('embedded telemetry store: the store contract', () => {
  telemetryStoreContract(async ({ clock, metrics }) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keng-tel-'));
    const make = async (): Promise<ContractStore> => {
      const st = createTelemetryStore(storeConfig(dir), { dataDir: dir, logger: testLogger(), metrics, clock }) as EmbeddedTelemetryStore;
      await st.start();
      return st;
    };
    const subject = {
      store: await make(),
      async reopen() { await subject.store.stop(); subject.store = await make(); return subject.store; },
      async deadReadings() {
        const db = new Database(path.join(dir, 'telemetry.db'), { readonly: true });
        try { return db.prepare('SELECT device, field, ts, type, reason, detail FROM dead_readings ORDER BY device, field, ts').all() as DeadRow[]; } finally { db.close(); }
      },
      async close() { await subject.store.stop(); rmSync(dir, { recursive: true, force: true }); },
    };
    return subject;
  });
});

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

  it('is embedded', () => { expect(store.kind).toBe('embedded'); });

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
    // Readings dated "now", as in the field: they take the append-only `recent` path.
    const sec = await timedWrites(store, soilBatches(Date.now()), batches);
    const readings = batches * 400;
    console.log(`embedded writeBatch(100×4): ${(readings / sec).toFixed(0)} readings/s, ${(batches / sec).toFixed(0)} batches/s (sync=full)`);
    expect(readings / sec).toBeGreaterThan(1000);
  });
});

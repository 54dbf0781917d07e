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

  it('de-duplicates exactly across the recent_points/points split (compaction watermark)', async () => {
    const now = Date.now();
    const r = (ts: number, a: number): TelemetryRecord => ({ deviceId: 'd', kind: 'k', ts, values: { a } });
    expect(await store.writeBatch([r(now - 60_000, 1), r(now - 30_000, 2), r(now, 3)])).toEqual({ written: 3, duplicates: 0 });
    await store.compactNow(); // points older than the lag move to `points` (if the periodic step has not already)
    // Re-uploads land on both sides of the watermark; a late reading goes straight to `points`.
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

  it('a store of one row per reading (before points) is converted when opened: every reading kept, in steps, field types learned', async () => {
    await store.stop();
    const file = path.join(dir, 'telemetry.db');
    rmSync(file, { force: true });
    // The schema of those stores, as they were made (fields without a kind: before field types were kept, too).
    const db = new Database(file);
    db.exec(`
      CREATE TABLE devices (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
      CREATE TABLE fields (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
      CREATE TABLE series (device INTEGER NOT NULL, field INTEGER NOT NULL, PRIMARY KEY (device, field)) WITHOUT ROWID;
      CREATE TABLE readings (device INTEGER NOT NULL, field INTEGER NOT NULL, ts INTEGER NOT NULL, v, k INTEGER NOT NULL, PRIMARY KEY (device, field, ts)) WITHOUT ROWID;
      CREATE TABLE recent (device INTEGER NOT NULL, field INTEGER NOT NULL, ts INTEGER NOT NULL, v, k INTEGER NOT NULL, PRIMARY KEY (ts, device, field)) WITHOUT ROWID;
      CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE dead_readings (device TEXT NOT NULL, field TEXT NOT NULL, ts INTEGER NOT NULL, value, type TEXT NOT NULL,
        reason TEXT NOT NULL, detail TEXT, at INTEGER NOT NULL, PRIMARY KEY (device, field, ts)) WITHOUT ROWID;
      INSERT INTO devices (id, name) VALUES (1, 'd1'), (2, 'd2');
      INSERT INTO fields (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'mode');
    `);
    const N = 25_000; // d1: 3 fields × 25,000 readings, more than one conversion step holds
    const W = T0 + 20_000 * 1000; // the watermark: older readings in `readings`, the rest in `recent`
    db.prepare("INSERT INTO meta (key, value) VALUES ('watermark', ?)").run(W);
    const ins = { readings: db.prepare('INSERT INTO readings VALUES (?, ?, ?, ?, ?)'), recent: db.prepare('INSERT INTO recent VALUES (?, ?, ?, ?, ?)') };
    db.transaction(() => {
      for (let i = 0; i < N; i++) {
        const ts = T0 + i * 1000;
        const t = ts < W ? ins.readings : ins.recent;
        t.run(1, 1, ts, i / 4, 0);
        t.run(1, 2, ts, i % 2, 1);
        if (i % 10 === 0) t.run(1, 3, ts, `s${i}`, 2);
      }
      // Mixed types were allowed before field types: d2's older mode is a number, d1's later one a string.
      ins.readings.run(2, 4, T0, 7, 0);
      ins.readings.run(1, 4, T0 + 5000, 'eco', 2);
    })();
    db.exec('INSERT INTO series SELECT DISTINCT device, field FROM readings WHERE device = 1');
    // d2's series row is missing (the conversion must still find its reading); a point written before a crash
    // in the middle of a conversion holds one field of (d1, T0 + 1000): the conversion merges into it.
    db.exec("CREATE TABLE points (device INTEGER NOT NULL, ts INTEGER NOT NULL, p TEXT NOT NULL, PRIMARY KEY (device, ts)) WITHOUT ROWID");
    db.prepare('INSERT INTO points VALUES (1, ?, \'{"1":99}\')').run(T0 + 1000);
    db.prepare('DELETE FROM readings WHERE device = 1 AND field = 1 AND ts = ?').run(T0 + 1000);
    db.close();

    store = createTelemetryStore(storeConfig(dir), { dataDir: dir, logger: testLogger(), metrics, clock }) as EmbeddedTelemetryStore;
    await store.start();

    const all = await store.query({ deviceId: 'd1', fields: [], from: T0, to: T0 + N * 1000 });
    expect(all).toHaveLength(N);
    expect(all[0]).toEqual({ ts: T0, values: { a: 0, b: false, c: 's0' } });
    expect(all[1]).toEqual({ ts: T0 + 1000, values: { a: 99, b: true } });
    expect(all[5]).toEqual({ ts: T0 + 5000, values: { a: 1.25, b: true, mode: 'eco' } });
    expect(all[19_999]).toEqual({ ts: T0 + 19_999_000, values: { a: 19_999 / 4, b: true } });
    expect(all[20_000]).toEqual({ ts: W, values: { a: 5000, b: false, c: 's20000' } }); // from `recent`
    expect(all[N - 1]).toEqual({ ts: T0 + (N - 1) * 1000, values: { a: (N - 1) / 4, b: true } });
    const readings = all.reduce((n, p) => n + Object.keys(p.values).length, 0);
    expect(readings).toBe(N * 2 + N / 10 + 1);
    expect(await store.query({ deviceId: 'd1', fields: ['a'], from: T0, to: T0 + N * 1000, everyMs: 86_400_000_000, agg: 'count' }))
      .toEqual([{ ts: Math.floor(T0 / 86_400_000_000) * 86_400_000_000, values: { a: N } }]);
    expect(await store.query({ deviceId: 'd2', fields: [], from: T0, to: T0 + 1 })).toEqual([{ ts: T0, values: { mode: 7 } }]);

    // The field learned its type from its earliest reading (d2's number), and the old tables are gone.
    const r = await store.writeBatch([{ deviceId: 'd3', kind: 'k', ts: T0, values: { mode: 'boost', c: 'x', b: 1 } }]);
    expect(r.setAside?.map((x) => x.field)).toEqual(['mode', 'b']);
    expect(r.written).toBe(1);
    const check = new Database(file, { readonly: true });
    try {
      expect(check.prepare("SELECT name FROM sqlite_master WHERE name IN ('readings', 'recent')").all()).toEqual([]);
    } finally { check.close(); }
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

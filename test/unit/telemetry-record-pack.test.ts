/** Packed hand-off of telemetry batches to the SQLite worker threads (record-pack.ts). */
import { describe, expect, it } from 'vitest';
import { isPacked, packRecords, unpackRecords } from '../../src/storage/telemetry/record-pack.js';
import type { TelemetryRecord } from '../../src/storage/telemetry/types.js';

describe('record-pack', () => {
  it('round-trips numbers, booleans, strings, -0, non-finite numbers and field order', () => {
    const records: TelemetryRecord[] = [
      { deviceId: 'dev-1', kind: 'sensor', ts: 1_764_460_800_000, values: { soil_moisture: 31.5, temperature: -0, ok: true, off: false } },
      { deviceId: 'dev-2', kind: 'speaker', ts: 1, values: { power_source: 'solar', note: 'ký tự "x" \\ \n', big: 1e300, nan: Number.NaN, inf: -Infinity } },
      { deviceId: 'dev-1', kind: 'sensor', ts: 2, values: { note: 'solar', v: 0.1 + 0.2 } },
      { deviceId: 'dev-3', kind: 'sensor', area: '00004', ts: 3, values: { a: 1 } },
    ];
    const p = packRecords(records);
    expect(isPacked(p)).toBe(true);
    expect(isPacked(records)).toBe(false);
    expect(p.count).toBe(4);
    expect(p.strings.filter((s) => s === 'solar')).toHaveLength(1); // strings are interned per batch
    const back = unpackRecords(structuredClone(p));
    expect(back).toEqual(records.map((r) => ({ ...r, area: r.area ?? '' })));
    expect(Object.is(back[0]!.values.temperature, -0)).toBe(true);
    expect(Object.keys(back[1]!.values)).toEqual(Object.keys(records[1]!.values));
  });

  it('grows past the initial estimate (many fields per record) and survives a transfer', () => {
    const values: Record<string, number> = {};
    for (let i = 0; i < 200; i++) values[`f${i}`] = i;
    const records: TelemetryRecord[] = [{ deviceId: 'd', kind: 'k', ts: 5, values }, { deviceId: 'd', kind: 'k', ts: 6, values: { a: 1 } }];
    const p = packRecords(records);
    const moved = structuredClone(p, { transfer: [p.nums.buffer as ArrayBuffer] });
    expect(p.nums.byteLength).toBe(0); // transferred, not copied
    expect(unpackRecords(moved)).toEqual(records.map((r) => ({ ...r, area: '' })));
  });

  it('an empty batch and a "__proto__" field name stay plain data', () => {
    expect(unpackRecords(packRecords([]))).toEqual([]);
    const values = JSON.parse('{"__proto__": 1, "a": 2}') as Record<string, number>;
    const [r] = unpackRecords(packRecords([{ deviceId: 'd', kind: 'k', ts: 1, values }]));
    expect(Object.getPrototypeOf(r!.values)).toBe(Object.prototype);
    expect(Object.keys(r!.values)).toEqual(['__proto__', 'a']);
  });

  it("keeps every record's own device, kind, area and field names when neighbours share some of them", () => {
    // Consecutive records of one device reuse the previous record's strings; every change must still show.
    const records: TelemetryRecord[] = [
      { deviceId: 'a', kind: 'soil', area: 'X1', ts: 1, values: { t: 1, h: 2, b: 3 } },
      { deviceId: 'a', kind: 'soil', area: 'X1', ts: 2, values: { t: 4, h: 5, b: 6 } },
      { deviceId: 'a', kind: 'soil', ts: 3, values: { h: 7, t: 8 } },
      { deviceId: 'b', kind: 'soil', area: 'X1', ts: 4, values: { t: 9, extra: 'e', b: false } },
      { deviceId: 'a', kind: 'rain', area: 'X2', ts: 5, values: {} },
      { deviceId: 'a', kind: 'rain', area: 'X2', ts: 6, values: { t: 'soil' } },
    ];
    const back = unpackRecords(packRecords(records));
    expect(back).toEqual(records.map((r) => ({ ...r, area: r.area ?? '' })));
    expect(back.map((r) => Object.keys(r.values))).toEqual(records.map((r) => Object.keys(r.values)));
  });
});

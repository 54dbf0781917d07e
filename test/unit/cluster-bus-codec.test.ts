/**
 * The live bus's entry encoding (src/cluster/codec.ts): readings survive the
 * round trip in order, runs of one device are written once, large batches
 * split under the cap, and bad entries are refused with BadEntry (counted by
 * the adapter, never a crash).
 */
import { describe, expect, it } from 'vitest';
import { BadEntry, decodeReadings, encodeParts, encodeReadings } from '../../src/cluster/codec.js';
import type { TelemetryEvent } from '../../src/core/events.js';

const T0 = Date.UTC(2026, 11, 6, 4, 0, 0);

function readings(n: number, devices = 3): TelemetryEvent[] {
  return Array.from({ length: n }, (_, i) => ({
    deviceId: `soil-${Math.floor(i / Math.ceil(n / devices))}`, area: 'va1', kind: 'sensor', ts: T0 + i * 1000,
    values: { soil_moisture: 30 + i / 10, pump_on: i % 2 === 0, note: `ô ${i}` },
  }));
}

describe('live bus encoding', () => {
  it('round-trips readings in order (numbers, booleans, Vietnamese strings, out-of-order times)', () => {
    const list = readings(30);
    list.push({ deviceId: 'soil-0', area: 'ca', kind: 'sensor', ts: T0 - 5000, values: { t: -1.5 } }); // older, other area
    expect(decodeReadings(encodeReadings(list))).toEqual(list);
  });

  it('writes each run\'s device, area and kind once and times as differences (compact)', () => {
    const list = readings(100, 1);
    const body = encodeReadings(list);
    expect(body.split('soil-0').length - 1).toBe(1);
    expect(body).toContain(',1000,');
    expect(body.length).toBeLessThan(JSON.stringify(list).length * 0.7);
  });

  it('splits a batch over the cap into entries under it, losing nothing; a single oversized reading is counted', () => {
    const list = readings(2000);
    const whole = Buffer.byteLength(encodeReadings(list));
    const { parts, tooLarge } = encodeParts(list, 16 * 1024);
    expect(whole).toBeGreaterThan(16 * 1024);
    expect(tooLarge).toBe(0);
    expect(parts.length).toBeGreaterThan(1);
    for (const p of parts) expect(Buffer.byteLength(p.body)).toBeLessThanOrEqual(16 * 1024);
    expect(parts.flatMap((p) => decodeReadings(p.body))).toEqual(list);
    expect(parts.reduce((n, p) => n + p.readings, 0)).toBe(2000);

    expect(encodeParts(list, 10 * 1024 * 1024).parts).toHaveLength(1); // the usual case: one entry per batch
    const huge: TelemetryEvent = { deviceId: 'x', area: 'a', kind: 'sensor', ts: T0, values: { blob: 'x'.repeat(5000) } };
    const r = encodeParts([huge, ...readings(3)], 1024);
    expect(r.tooLarge).toBe(1);
    expect(r.parts.flatMap((p) => decodeReadings(p.body))).toEqual(readings(3));
  });

  it('refuses bad entries with BadEntry', () => {
    for (const bad of ['{', '{}', '[1]', '[["d","a","k",[1]]]', '[["d","a","k",["x",{}]]]', '[["d","a","k",[1.5,{}]]]',
      '[["d","a","k",[1,{"v":null}]]]', '[["d","a","k",[1,{"v":[1]}]]]', '[["d","a","k",[1,[]]]]', '[[1,"a","k",[]]]']) {
      expect(() => decodeReadings(bad), bad).toThrow(BadEntry);
    }
    expect(decodeReadings('[]')).toEqual([]);
  });
});

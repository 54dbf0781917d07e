import { describe, expect, it } from 'vitest';
import { Backlog, backlogPayloads } from '../../src/sim/backlog.js';

const r = (ts: number) => ({ ts, values: { soil_moisture: ts / 1000 } });

describe('store-and-forward backlog', () => {
  it('hands readings back oldest first, in chunks', () => {
    const b = new Backlog(100);
    for (let i = 1; i <= 10; i++) b.push(r(i * 1000));
    expect(b.take(4).map((x) => x.ts)).toEqual([1000, 2000, 3000, 4000]);
    expect(b.take(100).map((x) => x.ts)).toEqual([5000, 6000, 7000, 8000, 9000, 10000]);
    expect(b.size).toBe(0);
  });

  it('keeps time order when a reading arrives out of order', () => {
    const b = new Backlog(100);
    [5, 1, 3, 3, 9, 2].forEach((t) => b.push(r(t)));
    expect(b.peekAll().map((x) => x.ts)).toEqual([1, 2, 3, 3, 5, 9]);
  });

  it('drops the oldest when full, and counts them', () => {
    const b = new Backlog(3);
    for (let i = 1; i <= 5; i++) b.push(r(i));
    expect(b.peekAll().map((x) => x.ts)).toEqual([3, 4, 5]);
    expect(b.dropped).toBe(2);
  });

  it('puts a failed upload back in front', () => {
    const b = new Backlog(10);
    for (let i = 1; i <= 5; i++) b.push(r(i));
    const batch = b.take(2);
    b.push(r(6));
    b.putBack(batch);
    expect(b.peekAll().map((x) => x.ts)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('stays correct across internal compaction', () => {
    const b = new Backlog(100_000);
    for (let i = 0; i < 5000; i++) b.push(r(i));
    const seen: number[] = [];
    while (b.size) seen.push(...b.take(333).map((x) => x.ts));
    expect(seen).toEqual(Array.from({ length: 5000 }, (_, i) => i));
  });

  it('uploads as JSON arrays of {ts, values}, oldest first', () => {
    const payloads = backlogPayloads([r(1), r(2), r(3)], 2);
    expect(payloads).toHaveLength(2);
    const first = JSON.parse(payloads[0]!) as Array<{ ts: number; values: Record<string, number> }>;
    expect(first.map((x) => x.ts)).toEqual([1, 2]);
    expect(first[0]!.values).toEqual({ soil_moisture: 0.001 });
  });
});

import { describe, expect, it } from 'vitest';
import { LatencyRecorder, percentileSorted, percentiles } from '../../src/sim/stats.js';
import { formatDuration, parseDuration } from '../../src/sim/duration.js';
import { rampOffsetMs, runRamp } from '../../src/sim/ramp.js';

describe('percentiles (nearest rank)', () => {
  it('picks nearest-rank values', () => {
    const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentileSorted(sorted, 50)).toBe(5);
    expect(percentileSorted(sorted, 90)).toBe(9);
    expect(percentileSorted(sorted, 99)).toBe(10);
    expect(percentileSorted(sorted, 100)).toBe(10);
    expect(percentileSorted(sorted, 0)).toBe(1);
  });
  it('handles one sample and no samples', () => {
    expect(percentileSorted([42], 99)).toBe(42);
    expect(percentileSorted([], 50)).toBeNaN();
  });
  it('sorts numerically, not as strings', () => {
    expect(percentiles([100, 9, 20, 3], [50, 100])).toEqual([9, 100]);
  });
  it('rejects out-of-range p', () => {
    expect(() => percentileSorted([1], 101)).toThrow(RangeError);
  });
  it('p99 of 1..1000 is 990', () => {
    const r = new LatencyRecorder(16);
    for (let i = 1000; i >= 1; i--) r.record(i); // grows past the initial capacity
    const s = r.summary();
    expect(s).toMatchObject({ count: 1000, p50: 500, p90: 900, p99: 990, max: 1000 });
    expect(r.samples()).toHaveLength(1000);
  });
  it('merges samples from another recorder (worker threads)', () => {
    const a = new LatencyRecorder(); const b = new LatencyRecorder();
    a.record(1); b.record(3); b.record(2);
    a.merge(b.samples());
    expect(a.summary().p50).toBe(2);
  });
});

describe('durations', () => {
  it('parses units; a bare number is seconds', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('5s')).toBe(5000);
    expect(parseDuration('2m')).toBe(120_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('20')).toBe(20_000);
    expect(parseDuration('1.5s')).toBe(1500);
  });
  it('rejects nonsense', () => {
    expect(() => parseDuration('fast')).toThrow(/not a duration/);
    expect(() => parseDuration('-5s')).toThrow();
  });
  it('formats', () => {
    expect(formatDuration(250)).toBe('250ms');
    expect(formatDuration(1500)).toBe('1.5s');
  });
});

describe('connection ramp', () => {
  it('spaces attempts by rate', () => {
    expect(rampOffsetMs(0, 100)).toBe(0);
    expect(rampOffsetMs(50, 100)).toBe(500);
    expect(rampOffsetMs(10, Infinity)).toBe(0);
  });
  it('never has more than maxPending attempts awaiting', async () => {
    let pending = 0, peak = 0;
    const r = await runRamp(Array.from({ length: 30 }, (_, i) => i), { ratePerSec: 1e6, maxPending: 4 }, async (i) => {
      pending++; peak = Math.max(peak, pending);
      await new Promise((res) => setTimeout(res, 2));
      pending--;
      if (i === 7) throw new Error('refused');
    });
    expect(peak).toBeLessThanOrEqual(4);
    expect(r).toMatchObject({ ok: 29, failed: 1 });
    expect(r.errors[0]?.message).toBe('refused');
  });
});

import { describe, expect, it } from 'vitest';
import { parseBenchArgs, UsageError } from '../../bench/lib/args.js';
import { influxConfig } from '../../tools/influxd.js';
import { brokerUsPerMsg } from '../../bench/lib/load-run.js';
import { parseCpuMs, parseMachineCpu, readMachineCpu, readRssBytes, readThreadCpuMs, stealPct } from '../../bench/lib/proc.js';
import { promValue } from '../../bench/lib/prom.js';
import { checkDevice } from '../../bench/lib/verify.js';

describe('bench: storage check', () => {
  const fields = ['a', 'b', 'c', 'd'];
  const full = (ts: number) => ({ ts, values: { a: 1, b: 2, c: 3, d: 4 } });
  it('finds every acknowledged ts with all fields', () => {
    const c = checkDevice([1, 2, 3], [full(1), full(2), full(3), full(4)], fields);
    expect(c).toEqual({ storedReadings: 16, storedPoints: 4, missing: [] });
  });
  it('reports missing and partial points', () => {
    const c = checkDevice([1, 2, 3], [full(1), { ts: 2, values: { a: 1, b: 2 } }], fields);
    expect(c.missing).toEqual([2, 3]);
    expect(c.storedReadings).toBe(6);
  });
});

describe('bench: prometheus text', () => {
  const text = [
    '# HELP keng_queue_depth_readings x',
    '# TYPE keng_queue_depth_readings gauge',
    'keng_queue_depth_readings 12',
    'keng_queue_depth_readings_other 99',
    'keng_rejected_total{reason="a"} 2',
    'keng_rejected_total{reason="b"} 3',
    'keng_commit_seconds_sum 1.5',
  ].join('\n');
  it('reads a gauge without confusing prefixes', () => {
    expect(promValue(text, 'keng_queue_depth_readings')).toBe(12);
  });
  it('sums labelled series, or filters by label', () => {
    expect(promValue(text, 'keng_rejected_total')).toBe(5);
    expect(promValue(text, 'keng_rejected_total', { reason: 'b' })).toBe(3);
  });
  it('null when absent', () => {
    expect(promValue(text, 'keng_nothing')).toBeNull();
  });
});

describe('bench: /proc', () => {
  it('parses CPU time even with spaces in the command name', () => {
    const stat = '123 (node (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0';
    expect(parseCpuMs(stat)).toBe(3000);
  });
  it("reads one thread's CPU time: this process's main thread, which has just spent some", () => {
    const t0 = readThreadCpuMs(process.pid, process.pid);
    expect(t0).not.toBeNull();
    // Spin until the reading moves by 3 ticks (10 ms each), or give up after 5 s of wall time.
    const giveUp = performance.now() + 5_000;
    let x = 0;
    while (readThreadCpuMs(process.pid, process.pid)! - t0! < 30 && performance.now() < giveUp) {
      for (let i = 0; i < 100_000; i++) x += Math.sqrt(x + i);
    }
    expect(x).toBeGreaterThan(0);
    expect(readThreadCpuMs(process.pid, process.pid)! - t0!).toBeGreaterThanOrEqual(30);
    expect(readThreadCpuMs(process.pid, 2 ** 22 + 12345)).toBeNull();
  });
  it('the broker thread CPU per acknowledged message, in µs; unknown without the CPU time or messages', () => {
    expect(brokerUsPerMsg({ serverMainCpuMs: 1_500, ackedInWindow: 100_000 })).toBe(15);
    expect(brokerUsPerMsg({ serverMainCpuMs: null, ackedInWindow: 100_000 })).toBeNull();
    expect(brokerUsPerMsg({ serverMainCpuMs: 1_500, ackedInWindow: 0 })).toBeNull();
  });
  it("the machine's CPU stolen by the hypervisor between two readings of /proc/stat, in % of all cores", () => {
    const a = parseMachineCpu('cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 50 0 25 400 5 0 0 20 0 0\n');
    expect(a).toEqual({ total: 1000, steal: 40 });
    const b = parseMachineCpu('cpu  300 5 120 1300 20 0 5 250 30 0\n');
    expect(b).toEqual({ total: 2000, steal: 250 });
    expect(stealPct(a, b)).toBeCloseTo(21, 6); // 210 of 1,000 ticks
    expect(stealPct(b, a)).toBeNull();
    expect(stealPct(null, b)).toBeNull();
    expect(parseMachineCpu('intr 1 2 3\n')).toBeNull();
    const now = readMachineCpu();
    expect(now).not.toBeNull();
    expect(now!.total).toBeGreaterThan(now!.steal);
  });
  it('reads our own RSS', () => {
    expect(readRssBytes(process.pid)).toBeGreaterThan(1024 * 1024);
    expect(readRssBytes(2 ** 22 + 12345)).toBeNull();
  });
});

describe('bench: flags and influxd config', () => {
  it('has the documented defaults', () => {
    expect(parseBenchArgs([])).toMatchObject({
      shapes: [{ devices: 200, window: 1 }, { devices: 20, window: 20 }, { devices: 100, window: 64 }],
      rounds: 1, baseline: true, durationSec: 20, warmupSec: 3, stores: ['embedded'], idle: 0, workers: 1, generator: 'raw',
    });
    expect(parseBenchArgs(['--devices', '50'])).toMatchObject({ shapes: [{ devices: 50, window: 64 }] });
    expect(parseBenchArgs(['--shapes', '10x2, 3×4', '--baseline', 'none', '--store', 'both'])).toMatchObject({
      shapes: [{ devices: 10, window: 2 }, { devices: 3, window: 4 }], baseline: false, stores: ['embedded', 'influxdb'],
    });
    expect(parseBenchArgs(['--generator', 'mqttjs'])).toMatchObject({ generator: 'mqttjs' });
    expect(parseBenchArgs(['--store', 'influxdb', '--idle', '5000'])).toMatchObject({ stores: ['influxdb'], idle: 5000, rampPerSec: 1000 });
    expect(parseBenchArgs(['--store', 'postgres'])).toMatchObject({ stores: ['postgres'] });
  });
  it('refuses bad values', () => {
    expect(() => parseBenchArgs(['--store', 'mysql'])).toThrow(UsageError);
    expect(() => parseBenchArgs(['--generator', 'fast'])).toThrow(/--generator/);
    expect(() => parseBenchArgs(['--devices', '0'])).toThrow(/--devices/);
    expect(() => parseBenchArgs(['--shapes', '10x0'])).toThrow(/--window/);
    expect(() => parseBenchArgs(['--shapes', '10'])).toThrow(/--shapes/);
    expect(() => parseBenchArgs(['--shapes', '1x1', '--devices', '2'])).toThrow(UsageError);
    expect(() => parseBenchArgs(['--baseline', 'mosquitto'])).toThrow(/--baseline/);
    expect(() => parseBenchArgs(['--bogus'])).toThrow();
  });
  it('binds influxd to loopback only, with reporting off', () => {
    const c = influxConfig('/tmp/x', 1234, 1235);
    expect(c).toContain('bind-address = "127.0.0.1:1234"');
    expect(c).toContain('bind-address = "127.0.0.1:1235"');
    expect(c).toContain('reporting-disabled = true');
    expect(c).toContain('wal-dir = "/tmp/x/wal"');
  });
});

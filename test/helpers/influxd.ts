/**
 * Test helpers for the telemetry stores: a real InfluxDB 1.x (the one in
 * tools/influxd.ts, shared with the benchmarks) and small utilities.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { loadConfig, type Config, type DeepPartial } from '../../src/config/index.js';
import { createLogger, Metrics, type Clock } from '../../src/core/index.js';
import type { Timers } from '../../src/storage/telemetry/index.js';

import { startInfluxd, type Influxd } from '../../tools/influxd.js';

export { INFLUXD as INFLUXD_BIN, startInfluxd, type Influxd } from '../../tools/influxd.js';
export { freePort } from '../../tools/ports.js';

/**
 * One influxd for the whole test file (started before its tests, destroyed after them) and
 * temporary data directories removed with it. `influxd` is readable once the tests run.
 */
export function influxdForFile(prefix: string): { readonly influxd: Influxd; tmp(): string } {
  let server: Influxd | undefined;
  const dirs: string[] = [];
  beforeAll(async () => { server = await startInfluxd(); });
  afterAll(async () => {
    await server?.destroy();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  return {
    get influxd(): Influxd {
      if (!server) throw new Error('influxd is started in beforeAll');
      return server;
    },
    tmp(): string {
      const d = mkdtempSync(path.join(tmpdir(), prefix));
      dirs.push(d);
      return d;
    },
  };
}

// ---------------------------------------------------------------------------
// Small shared utilities for the telemetry-store tests.


export function storeConfig(dataDir: string, overrides: DeepPartial<Config> = {}): Readonly<Config> {
  return loadConfig({ env: {}, overrides: { dataDir, logLevel: 'silent', ...overrides } });
}

export function testLogger(): ReturnType<typeof createLogger> {
  return createLogger((process.env.KENG_TEST_LOG_LEVEL as Config['logLevel']) ?? 'silent');
}

export function testMetrics(): Metrics { return new Metrics({ defaultMetrics: false }); }

/** A settable clock. */
export class FakeClock implements Clock {
  constructor(public t = Date.UTC(2025, 0, 1)) {}
  now(): number { return this.t; }
}

/**
 * Timers that compress time: a delay of `ms` advances `clock` by `ms` and
 * fires after ~`realMs` real milliseconds. Lets a test run hours of back-off in seconds.
 */
export function fastTimers(clock: FakeClock, realMs = 2): Timers & { simulatedMs: number } {
  const t = {
    simulatedMs: 0,
    setTimeout(fn: () => void, ms: number): unknown {
      return setTimeout(() => { clock.t += ms; t.simulatedMs += ms; fn(); }, realMs);
    },
    clearTimeout(h: unknown): void { clearTimeout(h as NodeJS.Timeout); },
  };
  return t;
}

export async function metricValue(m: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const all = await m.registry.getMetricsAsJSON();
  const metric = all.find((x) => x.name === name);
  if (!metric) return 0;
  let sum = 0;
  for (const v of metric.values as { value: number; labels: Record<string, string | number> }[]) {
    if (Object.entries(labels).every(([k, val]) => String(v.labels[k]) === val)) sum += v.value;
  }
  return sum;
}

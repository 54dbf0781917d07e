/**
 * Starts a real InfluxDB 1.x (Debian's /usr/bin/influxd) on free loopback
 * ports with a temporary directory. Throws when influxd is not installed: CI
 * must fail, not skip.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, type Config, type DeepPartial } from '../../src/config/index.js';
import { createLogger, Metrics, type Clock } from '../../src/core/index.js';
import type { Timers } from '../../src/storage/telemetry/index.js';

export const INFLUXD_BIN = process.env.KENG_INFLUXD ?? '/usr/bin/influxd';

export interface Influxd {
  url: string;
  port: number;
  dir: string;
  /** SIGTERM and wait for exit (data kept for restart(); the directory is removed at process exit). */
  stop(): Promise<void>;
  /** Start again on the same port and data directory. */
  restart(): Promise<void>;
  /** stop() and delete the temporary directory. */
  destroy(): Promise<void>;
  /** Run InfluxQL (POST /query, epoch=ms). */
  query(q: string, db?: string): Promise<any>;
}

export { freePort } from '../../bench/lib/ports.js';
import { freePorts } from '../../bench/lib/ports.js';

function configText(dir: string, port: number, rpcPort: number): string {
  return `reporting-disabled = true
bind-address = "127.0.0.1:${rpcPort}"

[meta]
  dir = "${path.join(dir, 'meta')}"

[data]
  dir = "${path.join(dir, 'data')}"
  wal-dir = "${path.join(dir, 'wal')}"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[coordinator]

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:${port}"
  auth-enabled = false
  log-enabled = false
  flux-enabled = false

[ifql]
  enabled = false

[subscriber]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false

[continuous_queries]
  enabled = false
`;
}

async function waitForPing(url: string, proc: ChildProcess, timeoutMs: number, log: () => string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (proc.exitCode !== null) throw new Error(`influxd exited with ${proc.exitCode}: ${log()}`);
    try {
      const res = await fetch(`${url}/ping`, { signal: AbortSignal.timeout(500) });
      if (res.status === 204) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`influxd did not answer /ping within ${timeoutMs} ms: ${log()}`);
}

export async function startInfluxd(): Promise<Influxd> {
  if (!existsSync(INFLUXD_BIN)) throw new Error(`${INFLUXD_BIN} is missing: install the influxdb package (InfluxDB 1.x) to run these tests`);
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-influxd-'));
  const [port, rpcPort] = (await freePorts(2)) as [number, number];
  const cfgFile = path.join(dir, 'influxdb.conf');
  writeFileSync(cfgFile, configText(dir, port, rpcPort));
  const url = `http://127.0.0.1:${port}`;
  let proc: ChildProcess | null = null;
  let output = '';

  const launch = async (): Promise<void> => {
    output = '';
    const p = spawn(INFLUXD_BIN, ['-config', cfgFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INFLUXDB_REPORTING_DISABLED: 'true' } });
    proc = p;
    const keep = (b: Buffer): void => { output = (output + b.toString()).slice(-4000); };
    p.stdout!.on('data', keep);
    p.stderr!.on('data', keep);
    await waitForPing(url, p, 30_000, () => output);
  };

  const stop = async (): Promise<void> => {
    const p = proc;
    proc = null;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(t);
  };

  // Callers that only stop() leave no temporary directory or orphan influxd behind.
  process.once('exit', () => {
    const p = proc as ChildProcess | null;
    if (p && p.exitCode === null) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  await launch();
  return {
    url, port, dir,
    stop,
    async restart() { await stop(); await launch(); },
    async destroy() { await stop(); rmSync(dir, { recursive: true, force: true }); },
    async query(q: string, db?: string) {
      const form = new URLSearchParams({ q, epoch: 'ms' });
      if (db) form.set('db', db);
      const res = await fetch(`${url}/query`, { method: 'POST', body: form });
      return res.json();
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

/**
 * A throw-away InfluxDB 1.x (Debian's `/usr/bin/influxd`) on free loopback
 * ports with its data in a temporary directory: for the benchmarks and the
 * integration tests (test/helpers/influxd.ts re-exports it). Throws when
 * influxd is not installed: CI must fail, not skip.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onCleanup, trackChild } from './cleanup.js';
import { freePorts } from './ports.js';

export const INFLUXD = process.env.KENG_INFLUXD ?? process.env.KENG_BENCH_INFLUXD ?? '/usr/bin/influxd';

export interface InfluxQueryReply {
  results?: Array<{ series?: Array<{ name: string; columns: string[]; values: unknown[][] }>; error?: string }>;
  error?: string;
}

export interface Influxd {
  url: string;
  port: number;
  dir: string;
  /** pid of the running influxd (changes on restart()). */
  readonly pid: number;
  /** Runs InfluxQL (POST /query, epoch=ms); returns the reply as it is, InfluxQL errors included. */
  query(q: string, db?: string): Promise<InfluxQueryReply>;
  /** Same, but an InfluxQL or HTTP error throws. */
  queryOrThrow(q: string, db?: string): Promise<InfluxQueryReply>;
  /** SIGTERM and wait for exit (data kept for restart(); the directory goes at process exit unless keepData). */
  stop(): Promise<void>;
  /** Start again on the same port and data directory. */
  restart(): Promise<void>;
  /** stop() and delete the temporary directory. */
  destroy(): Promise<void>;
}

export function influxConfig(dir: string, httpPort: number, rpcPort: number): string {
  return [
    'reporting-disabled = true',
    `bind-address = "127.0.0.1:${rpcPort}"`,
    '[meta]',
    `  dir = "${path.join(dir, 'meta')}"`,
    '  logging-enabled = false',
    '[data]',
    `  dir = "${path.join(dir, 'data')}"`,
    `  wal-dir = "${path.join(dir, 'wal')}"`,
    '  query-log-enabled = false',
    '  wal-fsync-delay = "0s"',
    '[retention]',
    '  enabled = false',
    '[shard-precreation]',
    '  enabled = false',
    '[monitor]',
    '  store-enabled = false',
    '[http]',
    '  enabled = true',
    `  bind-address = "127.0.0.1:${httpPort}"`,
    '  auth-enabled = false',
    '  log-enabled = false',
    '  pprof-enabled = false',
    '  flux-enabled = false',
    '[continuous_queries]',
    '  enabled = false',
    '[subscriber]',
    '  enabled = false',
    '',
  ].join('\n');
}

async function waitForPing(url: string, proc: ChildProcess, timeoutMs: number, log: () => string): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`influxd exited with ${proc.exitCode} during start:\n${log()}`);
    try {
      if ((await fetch(`${url}/ping`, { signal: AbortSignal.timeout(500) })).status === 204) return;
    } catch { /* not yet */ }
    if (Date.now() > until) throw new Error(`influxd did not answer ${url}/ping within ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startInfluxd(o: { keepData?: boolean } = {}): Promise<Influxd> {
  if (!existsSync(INFLUXD)) throw new Error(`${INFLUXD} is missing: install the influxdb package (InfluxDB 1.x), or set KENG_INFLUXD`);
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-influxd-'));
  const [port, rpcPort] = (await freePorts(2)) as [number, number];
  const conf = path.join(dir, 'influxdb.conf');
  writeFileSync(conf, influxConfig(dir, port, rpcPort));
  const url = `http://127.0.0.1:${port}`;
  let proc: ChildProcess | null = null;
  let output = '';

  const launch = async (): Promise<void> => {
    output = '';
    const p = spawn(INFLUXD, ['run', '-config', conf], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INFLUXDB_REPORTING_DISABLED: 'true' } });
    proc = p;
    trackChild(p);
    const keep = (b: Buffer): void => { output = (output + b.toString()).slice(-4000); };
    p.stdout!.on('data', keep);
    p.stderr!.on('data', keep);
    await waitForPing(url, p, 30_000, () => output);
  };

  const stop = async (): Promise<void> => {
    const p = proc;
    proc = null;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(t);
  };

  const query = async (q: string, db?: string): Promise<InfluxQueryReply> => {
    const body = new URLSearchParams({ q, epoch: 'ms', ...(db ? { db } : {}) });
    const res = await fetch(`${url}/query`, { method: 'POST', body });
    return (await res.json()) as InfluxQueryReply;
  };

  // Benchmarks stop it through their cleanup list; tests that only stop() leave no directory or orphan behind.
  onCleanup(`influxd ${port}`, async () => {
    await stop();
    if (!o.keepData) rmSync(dir, { recursive: true, force: true });
  });
  process.once('exit', () => {
    const p = proc as ChildProcess | null;
    if (p && p.exitCode === null) p.kill('SIGKILL');
    if (!o.keepData) rmSync(dir, { recursive: true, force: true });
  });

  await launch();
  return {
    url, port, dir,
    get pid() { return (proc as ChildProcess | null)?.pid ?? -1; },
    query,
    async queryOrThrow(q: string, db?: string) {
      const reply = await query(q, db);
      const err = reply.error ?? reply.results?.find((r) => r.error)?.error;
      if (err) throw new Error(`influxdb: ${q}: ${err}`);
      return reply;
    },
    stop,
    async restart() { await stop(); await launch(); },
    async destroy() { await stop(); rmSync(dir, { recursive: true, force: true }); },
  };
}

/** Sum of count(field) over the given fields in [from, to] (ms). */
export async function influxCountReadings(db: Influxd, database: string, measurement: string, fields: string[], from: number, to: number): Promise<number> {
  const sel = fields.map((f) => `count("${f}")`).join(', ');
  const reply = await db.queryOrThrow(`SELECT ${sel} FROM "${measurement}" WHERE time >= ${from}ms AND time <= ${to}ms`, database);
  const row = reply.results?.[0]?.series?.[0]?.values?.[0];
  if (!row) return 0;
  return row.slice(1).reduce<number>((s, v) => s + (typeof v === 'number' ? v : 0), 0);
}

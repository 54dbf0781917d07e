/**
 * A throw-away InfluxDB 1.x (`/usr/bin/influxd`) on free loopback ports with
 * its data in a temporary directory.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onCleanup, trackChild } from './cleanup.js';
import { freePorts } from './ports.js';

export const INFLUXD = process.env.KENG_BENCH_INFLUXD ?? '/usr/bin/influxd';

export interface Influxd {
  url: string;
  pid: number;
  dir: string;
  /** Runs InfluxQL; returns the parsed JSON reply. */
  query(q: string, db?: string): Promise<InfluxQueryReply>;
  stop(): Promise<void>;
}

export interface InfluxQueryReply {
  results?: Array<{ series?: Array<{ name: string; columns: string[]; values: unknown[][] }>; error?: string }>;
  error?: string;
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
    '[http]',
    `  bind-address = "127.0.0.1:${httpPort}"`,
    '  log-enabled = false',
    '  pprof-enabled = false',
    '[monitor]',
    '  store-enabled = false',
    '[continuous_queries]',
    '  enabled = false',
    '[subscriber]',
    '  enabled = false',
    '',
  ].join('\n');
}

export async function startInfluxd(o: { keepData?: boolean } = {}): Promise<Influxd> {
  if (!existsSync(INFLUXD)) throw new Error(`${INFLUXD} not found (set KENG_BENCH_INFLUXD)`);
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-bench-influx-'));
  const [httpPort, rpcPort] = (await freePorts(2)) as [number, number];
  const conf = path.join(dir, 'influxdb.conf');
  writeFileSync(conf, influxConfig(dir, httpPort, rpcPort));
  const child = spawn(INFLUXD, ['run', '-config', conf], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INFLUXDB_REPORTING_DISABLED: 'true' } });
  trackChild(child);
  const tail: string[] = [];
  const keep = (b: Buffer): void => { tail.push(...b.toString().split('\n').filter(Boolean)); if (tail.length > 40) tail.splice(0, tail.length - 40); };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
  };
  onCleanup(`influxd ${child.pid}`, async () => {
    await stop();
    if (!o.keepData) rmSync(dir, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${httpPort}`;
  const query = async (q: string, db?: string): Promise<InfluxQueryReply> => {
    const body = new URLSearchParams({ q, ...(db ? { db } : {}), epoch: 'ms' });
    const res = await fetch(`${url}/query`, { method: 'POST', body });
    const reply = (await res.json()) as InfluxQueryReply;
    const err = reply.error ?? reply.results?.find((r) => r.error)?.error;
    if (!res.ok || err) throw new Error(`influxdb: ${q}: ${err ?? `HTTP ${res.status}`}`);
    return reply;
  };
  const until = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`influxd exited during start:\n${tail.join('\n')}`);
    try {
      if ((await fetch(`${url}/ping`)).status === 204) break;
    } catch { /* not yet */ }
    if (Date.now() > until) throw new Error(`influxd not answering on ${url}:\n${tail.join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, pid: child.pid!, dir, query, stop };
}

/** Sum of count(field) over the given fields in [from, to] (ms). */
export async function influxCountReadings(db: Influxd, database: string, measurement: string, fields: string[], from: number, to: number): Promise<number> {
  const sel = fields.map((f) => `count("${f}")`).join(', ');
  const reply = await db.query(`SELECT ${sel} FROM "${measurement}" WHERE time >= ${from}ms AND time <= ${to}ms`, database);
  const row = reply.results?.[0]?.series?.[0]?.values?.[0];
  if (!row) return 0;
  return row.slice(1).reduce<number>((s, v) => s + (typeof v === 'number' ? v : 0), 0);
}

/**
 * What the loudspeaker benchmarks (bench/broadcast.ts, bench/alert.ts) share: Keng started for a
 * fleet of simulated speakers, the fleet's CPU priority, a test tone uploaded as media, waiting for
 * presence and for a broadcast's targets, command-line numbers, percentiles.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { setPriority, tmpdir } from 'node:os';
import path from 'node:path';
import { onCleanup } from '../../tools/cleanup.js';
import { startPostgres } from '../../tools/postgres.js';
import { startRedis } from '../../tools/redis.js';
import type { KengApi } from '../../src/sim/api-client.js';
import { clusterNodeEnv, startKeng, type KengProcess } from './keng-server.js';

export const log = (s: string): void => { process.stdout.write(s + '\n'); };
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `--name N`: a positive number, `def` when absent. */
export function numArg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : def;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`);
  return v;
}

/** `--name N`: a nice value 0-19, `def` when absent. */
export function niceArg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : def;
  if (!Number.isInteger(v) || v < 0 || v > 19) throw new Error(`--${name} must be an integer 0-19`);
  return v;
}

/**
 * Keng as a child process with a per-device MQTT rate limit no speaker fleet reaches (2,000
 * speakers answer and report within the same second); its output tail is printed when the
 * benchmark fails or Keng exits with an error. `--cluster`: one node in cluster mode, on a throw-away
 * PostgreSQL 15 and Redis (the state window's commits go to PostgreSQL: docs/cluster.md).
 */
export async function startSpeakerKeng(): Promise<KengProcess> {
  const env: Record<string, string> = { KENG_MQTT_RATE_LIMIT_PER_SEC: '100000', KENG_MQTT_RATE_LIMIT_BURST: '100000' };
  if (process.argv.includes('--cluster')) {
    const [pg, redis] = await Promise.all([startPostgres(), startRedis()]);
    onCleanup('postgres and redis', async () => { await Promise.all([pg.destroy(), redis.destroy()]); });
    Object.assign(env, clusterNodeEnv(pg.url, redis.url, 'bench'));
    log(`cluster mode: postgres ${pg.url}, redis ${redis.url}`);
  }
  const keng = await startKeng({ env });
  onCleanup('server output', () => { if (process.exitCode) process.stderr.write(`keng output tail:\n${keng.outputTail()}\n`); });
  keng.child.once('exit', (code) => { if (code) process.stderr.write(`keng exited with ${code}:\n${keng.outputTail()}\n`); });
  log(`keng pid ${keng.pid} at ${keng.httpUrl}, ${keng.mqttUrl}`);
  return keng;
}

/**
 * Lowers this process's CPU priority (call it after Keng was started: the child keeps priority 0).
 * The simulated speakers are 2,000 separate devices with CPUs of their own; here they share this
 * machine's two cores with the controller under test. Measured (/proc CPU ticks): during a
 * broadcast the fleet (answers, 2,000 downloads) used more than a core and left Keng 50-90 % of
 * one. At a lower priority the fleet uses what Keng does not, as separate devices would. 0: off.
 */
export function lowerFleetPriority(nice: number): void {
  if (nice !== 0) setPriority(nice);
}

/** Monotonic µs: the clock of .cpuprofile files (any process), to cut a server profile to a window. */
export function monoMicros(): bigint {
  return process.hrtime.bigint() / 1000n;
}

/** A sine tone as a small MP3 (made with ffmpeg), uploaded as media by the admin. */
export async function uploadTone(keng: KengProcess, o: { seconds: number; frequency: number; name: string }): Promise<{ id: string; size: number }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-bench-media-'));
  try {
    const mp3 = path.join(dir, o.name);
    // 16 kbit/s mono: every speaker downloads it, and the size of a voice message, not music.
    execFileSync('/usr/bin/ffmpeg', ['-nostdin', '-v', 'error', '-y', '-f', 'lavfi', '-i', `sine=frequency=${o.frequency}:duration=${o.seconds}`,
      '-ac', '1', '-ar', '16000', '-codec:a', 'libmp3lame', '-b:a', '16k', mp3]);
    const form = new FormData();
    form.append('file', new Blob([readFileSync(mp3)], { type: 'audio/mpeg' }), o.name);
    const up = await fetch(`${keng.httpUrl}/api/v1/media`, { method: 'POST', headers: { authorization: `Bearer ${keng.adminToken}` }, body: form });
    if (up.status !== 201) throw new Error(`media upload: HTTP ${up.status} ${await up.text()}`);
    return (await up.json()) as { id: string; size: number };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function waitUntil(fn: () => Promise<boolean>, timeoutMs: number, stepMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try { if (await fn()) return; } catch (err) { process.stderr.write(`poll: ${(err as Error).message} (retrying)\n`); }
    await sleep(stepMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms`);
}

/** Until presence is settled: at least `n` speakers online in the registry. */
export async function waitSpeakersOnline(api: KengApi, n: number, timeoutMs = 60_000): Promise<void> {
  await waitUntil(async () => {
    const r = await api.request<unknown[]>('GET', '/api/v1/devices?kind=speaker&online=true');
    return Array.isArray(r.body) && r.body.length >= n;
  }, timeoutMs, 250);
}

export type TargetCounts = Record<string, number>;

/**
 * Polls a broadcast's target counts until `done` says so, or some target has failed for good.
 * Every 250 ms: each poll reads and serialises all target rows (~10 ms of Keng's CPU at 2,000),
 * and the figures come from the log's own times, not from when this loop notices the end.
 */
export async function waitBroadcast(api: KengApi, id: string, done: (c: TargetCounts) => boolean, timeoutMs = 120_000): Promise<TargetCounts> {
  let last: TargetCounts = {};
  await waitUntil(async () => {
    const r = await api.request<{ counts?: TargetCounts }>('GET', `/api/v1/broadcasts/${encodeURIComponent(id)}`);
    last = r.body.counts ?? {};
    return done(last) || (last.failed ?? 0) + (last.rejected ?? 0) + (last.expired ?? 0) > 0;
  }, timeoutMs, 250);
  return last;
}

export interface LogLine { at: string; state: string; deviceId: string; detail?: string }

/** A broadcast's log (every target transition with the server's time). */
export async function broadcastLog(api: KengApi, id: string): Promise<LogLine[]> {
  const r = await api.request<LogLine[]>('GET', `/api/v1/broadcasts/log?broadcastId=${encodeURIComponent(id)}&limit=100000`);
  if (r.status !== 200 || !Array.isArray(r.body)) throw new Error(`GET /api/v1/broadcasts/log: HTTP ${r.status}`);
  return r.body;
}

export interface Spread { n: number; min: number; p50: number; p99: number; max: number }

/** Nearest-rank percentiles (NaN for an empty list). */
export function spread(values: readonly number[]): Spread {
  const v = [...values].sort((a, b) => a - b);
  const at = (q: number): number => (v.length ? v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))]! : Number.NaN);
  return { n: v.length, min: at(0), p50: at(0.5), p99: at(0.99), max: at(1) };
}

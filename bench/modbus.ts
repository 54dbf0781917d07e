/**
 * `npm run bench:modbus` (docs/benchmarks.md): Keng polling 200 Modbus
 * sensors behind 10 Modbus TCP gateways at a 5 s interval, two of the
 * gateways dead (one accepts TCP and never answers, one refuses the
 * connection).
 *
 * Keng runs in this process (buildApp, embedded store, the shipped
 * `soil-3in1` map: one request of 3 holding registers per poll); the
 * gateways run in a child process (bench/lib/modbus-gateways.ts: modbus-serial
 * ServerTCP), so their CPU is not counted as Keng's. After a warm-up, for the
 * measuring window: answered reads per second, poll lateness (from when a
 * poll was due to when it got its line and sent its first request, the
 * poller's own record) p50 / p99 / max for the devices behind healthy
 * gateways, and Keng's CPU (process.cpuUsage over the window, in cores).
 * Target: no poll of a healthy device later than one interval; CPU under a
 * quarter of a core. A missed target is reported (exit 0); a setup failure
 * exits 1.
 *
 * Options: --devices 200 --gateways 10 --interval-sec 5 --warmup-sec 20 --measure-sec 60 --timeout-ms 1000
 */
import { fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config/index.js';
import { createLogger } from '../src/core/index.js';
import type { PollRecord } from '../src/modbus/index.js';
import { fmt, round, table, type Row } from './lib/report.js';

interface Gw { kind: 'healthy' | 'silent' | 'refused'; port: number }

function numArg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} needs a positive number`);
  return v;
}

function pct(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * The main thread's time waiting for a CPU while runnable (Linux schedstat, ns → ms): tells a process held up by
 * other work on the machine (this grows) from one blocked in its own system calls, e.g. an fsync (it does not).
 */
function runQueueWaitMs(): number | null {
  try {
    const f = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').trim().split(/\s+/);
    return Number(f[1]) / 1e6;
  } catch {
    return null;
  }
}

const log = (s: string): void => { process.stdout.write(`${s}\n`); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const N = numArg('devices', 200);
  const G = numArg('gateways', 10);
  const intervalSec = numArg('interval-sec', 5);
  const warmupSec = numArg('warmup-sec', 20);
  const measureSec = numArg('measure-sec', 60);
  const timeoutMs = numArg('timeout-ms', 1000);
  if (G < 3) throw new Error('--gateways must be at least 3 (two of them are dead)');

  // 1. The gateways, in a child process.
  const child = fork(fileURLToPath(new URL('./lib/modbus-gateways.js', import.meta.url)), [`${G - 2},1,1`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const gws = await new Promise<Gw[]>((resolve, reject) => {
    child.once('message', (m: { ready?: Gw[] }) => (m.ready ? resolve(m.ready) : reject(new Error('gateways: unexpected message'))));
    child.once('exit', (code) => reject(new Error(`gateways exited (${code})`)));
  });
  const childStats = (): Promise<{ requests: number; cpuMs: number }> => new Promise((resolve) => {
    child.once('message', (m: { stats: { requests: number; cpuMs: number } }) => resolve(m.stats));
    child.send({ stats: true });
  });

  // 2. Keng, in this process.
  const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-bench-modbus-'));
  const config = loadConfig({
    env: {},
    overrides: {
      dataDir, logLevel: 'warn', adminToken: 'bench-admin-token-0123456789abcdef',
      http: { port: 0, host: '127.0.0.1' }, mqtt: { port: 0, host: '127.0.0.1' },
      modbus: { requestTimeoutMs: timeoutMs },
    },
  });
  const app = buildApp(config, { logger: createLogger(config.logLevel) });
  let stopped = false;
  const stopAll = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await app.stop().catch(() => undefined);
    child.kill();
    rmSync(dataDir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => { void stopAll().then(() => process.exit(130)); });
  try {
    await app.start();
    await app.registry.createArea({ code: 'bench-tinh', name: 'Tỉnh đo tải', level: 'province' });
    await app.registry.createArea({ code: 'bench-xa', name: 'Xã đo tải', level: 'commune', parent: 'bench-tinh' });
    const healthyIds = new Set<string>();
    const gatewayOf = new Map<string, number>();
    const t0 = Date.now();
    for (let i = 0; i < N; i++) {
      const g = gws[i % G]!;
      const id = `soil-${String(i).padStart(4, '0')}`;
      await app.modbus.devices.create({ id, kind: 'sensor', name: `Đầu dò ${i}`, area: 'bench-xa' }, {
        transport: { type: 'modbus-tcp', host: '127.0.0.1', port: g.port, unitId: 1 + Math.floor(i / G) },
        registerMap: 'soil-3in1', pollIntervalSec: intervalSec,
      });
      if (g.kind === 'healthy') healthyIds.add(id);
      gatewayOf.set(id, i % G);
    }
    log(`registered ${N} devices behind ${G} gateways (${G - 2} healthy, 1 silent, 1 refusing) in ${((Date.now() - t0) / 1000).toFixed(1)} s; `
      + `warming up ${warmupSec} s, then measuring ${measureSec} s`);

    await sleep(warmupSec * 1000);

    // 3. The measuring window.
    const polls: PollRecord[] = [];
    const off = app.modbus.poller.onPoll((r) => { polls.push(r); });
    const reqMetric = async (): Promise<Map<string, number>> => {
      const m = await app.metrics.registry.getSingleMetric('keng_modbus_requests_total')?.get();
      return new Map((m?.values ?? []).map((v) => [String(v.labels.result), v.value]));
    };
    const acceptedMetric = async (): Promise<number> =>
      ((await app.metrics.registry.getSingleMetric('keng_readings_accepted_total')?.get())?.values ?? []).reduce((a, v) => a + v.value, 0);
    const req0 = await reqMetric();
    const acc0 = await acceptedMetric();
    const child0 = await childStats();
    const elu0 = performance.eventLoopUtilization();
    // Diagnostics of a late tail: how long the event loop was held at most, and how long the registry's periodic
    // flush to the state store (SQLite on the main thread, synchronous=FULL: an fsync per flush) took. The flush is
    // private to the registry; it is timed here by wrapping the instance's method (a benchmark-only look inside).
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const flushes: number[] = [];
    const reg = app.registry as unknown as { tick?: () => void };
    const tick = reg.tick?.bind(app.registry);
    if (tick) reg.tick = () => { const f0 = performance.now(); tick(); flushes.push(performance.now() - f0); };
    const wait0 = runQueueWaitMs();
    const cpu0 = process.cpuUsage();
    const w0 = performance.now();
    await sleep(measureSec * 1000);
    const cpu = process.cpuUsage(cpu0);
    const wait1 = runQueueWaitMs();
    loopDelay.disable();
    flushes.sort((a, b) => a - b);
    const wallMs = performance.now() - w0;
    const elu = performance.eventLoopUtilization(elu0);
    const child1 = await childStats();
    const req1 = await reqMetric();
    const acc1 = await acceptedMetric();
    off();

    // 4. Figures.
    const sec = wallMs / 1000;
    const healthy = polls.filter((p) => healthyIds.has(p.deviceId));
    const dead = polls.filter((p) => !healthyIds.has(p.deviceId));
    const late = healthy.map((p) => Math.max(0, p.started - p.due)).sort((a, b) => a - b);
    const intervalMs = intervalSec * 1000;
    const tooLate = late.filter((l) => l > intervalMs).length;
    const failedHealthy = healthy.filter((p) => !p.ok).length;
    // Late polls spread over many gateways in the same second: the whole process was held up (CPU starved, GC),
    // not one line. Late polls on one gateway only: that line is the bottleneck.
    const lateOnes = healthy.filter((p) => p.started - p.due > 250);
    const lateSeconds = new Set(lateOnes.map((p) => Math.floor(p.due / 1000))).size;
    const lateGateways = new Set(lateOnes.map((p) => gatewayOf.get(p.deviceId))).size;
    const delta = (k: string): number => (req1.get(k) ?? 0) - (req0.get(k) ?? 0);
    const kengCores = (cpu.user + cpu.system) / 1000 / wallMs;
    const expectedPolls = (healthyIds.size * measureSec) / intervalSec;
    const rows: Row[] = [
      ['devices / gateways', `${N} / ${G} (${G - 2} healthy, 1 silent, 1 refusing connections)`],
      ['interval / request timeout', `${intervalSec} s / ${timeoutMs} ms`],
      ['window', `${fmt(sec, 1)} s after ${warmupSec} s warm-up`],
      ['reads answered / s', `${fmt(delta('ok') / sec, 1)} (expected ${fmt(expectedPolls / measureSec, 1)} from ${healthyIds.size} healthy devices)`],
      ['readings stored / s', fmt((acc1 - acc0) / sec, 1)],
      ['healthy polls (failed)', `${fmt(healthy.length)} (${fmt(failedHealthy)})`],
      ['lateness p50 / p99 / max', `${fmt(pct(late, 50))} / ${fmt(pct(late, 99))} / ${fmt(late.at(-1) ?? null)} ms`],
      ['healthy polls later than 1 interval', `${fmt(tooLate)} (target 0)`],
      ['healthy polls > 250 ms late', `${fmt(lateOnes.length)}, in ${fmt(lateSeconds)} distinct seconds, on ${fmt(lateGateways)} of ${G - 2} healthy gateways`],
      ['dead-gateway polls (timeouts, refused)', `${fmt(dead.length)}: ${fmt(delta('timeout'))} timeouts, ${fmt(delta('not_connected'))} not connected`],
      ['Keng CPU', `${fmt(kengCores, 3)} cores (target < 0.25); event loop busy ${fmt(elu.utilization * 100, 1)} %`],
      ['main thread waiting for a CPU', wait0 === null || wait1 === null ? 'n/a' : `${fmt((wait1 - wait0) / 1000, 1)} s of ${fmt(sec, 1)} s (run queue)`],
      ['event loop delay p99 / max', `${fmt(loopDelay.percentile(99) / 1e6)} / ${fmt(loopDelay.max / 1e6)} ms`],
      ['registry flushes (main thread)', `${flushes.length}, p50 / max ${fmt(pct(flushes, 50), 1)} / ${fmt(flushes.at(-1) ?? null, 1)} ms`],
      ['gateways CPU (child)', `${fmt((child1.cpuMs - child0.cpuMs) / wallMs, 3)} cores`],
      ['machine', `${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`],
    ];
    log(table('bench:modbus', rows));
    const met = tooLate === 0 && kengCores < 0.25 && failedHealthy === 0 && healthy.length >= expectedPolls * 0.95;
    log(met ? 'target met' : 'TARGET MISSED');
    log(`BENCH_RESULT ${JSON.stringify({
      devices: N, gateways: G, intervalSec, measureSec: round(sec, 1), readsPerSec: round(delta('ok') / sec, 1),
      healthyPolls: healthy.length, failedHealthyPolls: failedHealthy, latenessMs: { p50: pct(late, 50), p99: pct(late, 99), max: late.at(-1) ?? null },
      tooLate, lateOver250ms: lateOnes.length, runQueueWaitMs: wait0 === null || wait1 === null ? null : round(wait1 - wait0, 0),
      loopDelayMaxMs: round(loopDelay.max / 1e6, 0), registryFlushMaxMs: round(flushes.at(-1) ?? null, 1), kengCores: round(kengCores, 3), eventLoopUtilization: round(elu.utilization, 3), targetMet: met,
    })}`);
  } finally {
    await stopAll();
  }
}

main().then(() => process.exit(0), (err: unknown) => { console.error(err); process.exit(1); });

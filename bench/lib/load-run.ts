/** Runs the load on the main thread (workers = 1) or split across worker threads, and merges the slices. */
import { Worker } from 'node:worker_threads';
import type { SimCredential } from '../../src/sim/index.js';
import { readCpuMs, readMachineCpu, readThreadCpuMs, stealPct } from './proc.js';
import { runLoadSlice, now, type GeneratorKind, type LoadSliceOptions, type LoadSliceResult, type Schedule } from './load.js';

export interface LoadOptions {
  mqttUrl: string;
  devices: SimCredential[];
  window: number;
  warmupMs: number;
  durationMs: number;
  workers: number;
  /** The server's pid, to read its CPU time over the measurement window. */
  serverPid?: number;
  rampPerSec: number;
  generator: GeneratorKind;
}

export interface LoadResult extends LoadSliceResult {
  /** Time to connect every client. */
  connectMs: number;
  /** CPU time of the whole benchmark process (all threads) during the measurement window. */
  generatorCpuMs: number;
  /** CPU time of the server during the measurement window (null when unknown). */
  serverCpuMs: number | null;
  /** CPU time of the server's main thread (the MQTT broker's) during the measurement window. */
  serverMainCpuMs: number | null;
  /** Machine CPU time taken by the hypervisor for other guests during the window, % of all cores (proc.ts stealPct). */
  stealPct: number | null;
  measuredMs: number;
  measureFrom: number;
  measureTo: number;
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const n = Math.max(1, Math.min(o.workers, o.devices.length));
  const slices: SimCredential[][] = Array.from({ length: n }, () => []);
  o.devices.forEach((d, i) => slices[i % n]!.push(d));
  const base = { mqttUrl: o.mqttUrl, window: o.window, drainTimeoutMs: 15_000, rampPerSec: o.rampPerSec / n, generator: o.generator };
  // Barrier: the warm-up starts when every slice has connected all its clients.
  let arrived = 0;
  let release!: (s: Schedule) => void;
  const schedule = new Promise<Schedule>((r) => { release = r; });
  const t0 = now();
  let connectMs = 0;
  const ready = (): Promise<Schedule> => {
    if (++arrived === n) {
      connectMs = now() - t0;
      const measureFrom = now() + o.warmupMs;
      release({ measureFrom, measureTo: measureFrom + o.durationMs });
    }
    return schedule;
  };
  const cpu = schedule.then((s) => measureCpu(s.measureFrom, s.measureTo, o.serverPid));
  const results = n === 1
    ? [await runLoadSlice({ ...base, devices: slices[0]! }, ready)]
    : await Promise.all(slices.map((devices) => runInWorker({ ...base, devices }, ready)));
  const { measureFrom, measureTo } = await schedule;
  // Put per-device results back in the original device order.
  const ackedTs: number[][] = new Array(o.devices.length);
  results.forEach((r, w) => r.ackedTs.forEach((ts, j) => { ackedTs[j * n + w] = ts; }));
  const merged: LoadResult = {
    connected: sum(results, (r) => r.connected),
    connectFailed: sum(results, (r) => r.connectFailed),
    connectErrors: results.flatMap((r) => r.connectErrors).slice(0, 10),
    sent: sum(results, (r) => r.sent),
    acked: sum(results, (r) => r.acked),
    errors: sum(results, (r) => r.errors),
    ackedInWindow: sum(results, (r) => r.ackedInWindow),
    readingsInWindow: sum(results, (r) => r.readingsInWindow),
    ackedPerSecond: Array.from({ length: Math.max(...results.map((r) => r.ackedPerSecond.length)) }, (_, i) => sum(results, (r) => r.ackedPerSecond[i] ?? 0)),
    latencies: concat(results.map((r) => r.latencies)),
    ackedTs,
    inflightAtEnd: sum(results, (r) => r.inflightAtEnd),
    connectedAt: Math.max(...results.map((r) => r.connectedAt)),
    connectMs,
    generatorCpuMs: (await cpu).generator,
    serverCpuMs: (await cpu).server,
    serverMainCpuMs: (await cpu).serverMain,
    stealPct: (await cpu).steal,
    measuredMs: measureTo - measureFrom,
    measureFrom,
    measureTo,
  };
  return merged;
}

/** The server's main (broker) thread CPU per message acknowledged in the window (µs), null when unknown. */
export function brokerUsPerMsg(load: Pick<LoadResult, 'serverMainCpuMs' | 'ackedInWindow'>): number | null {
  return load.serverMainCpuMs === null || load.ackedInWindow === 0 ? null : (load.serverMainCpuMs * 1000) / load.ackedInWindow;
}

/** Samples this process's and the server's CPU time at the start and end of the window. */
async function measureCpu(from: number, to: number, serverPid?: number): Promise<{ generator: number; server: number | null; serverMain: number | null; steal: number | null }> {
  const wait = (t: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, t - now())));
  const diff = (a: number | null, b: number | null): number | null => (a !== null && b !== null ? b - a : null);
  await wait(from);
  const g0 = process.cpuUsage();
  const s0 = serverPid ? readCpuMs(serverPid) : null;
  const m0 = serverPid ? readThreadCpuMs(serverPid, serverPid) : null;
  const c0 = readMachineCpu();
  await wait(to);
  const g = process.cpuUsage(g0);
  const s1 = serverPid ? readCpuMs(serverPid) : null;
  const m1 = serverPid ? readThreadCpuMs(serverPid, serverPid) : null;
  const c1 = readMachineCpu();
  return { generator: (g.user + g.system) / 1000, server: diff(s0, s1), serverMain: diff(m0, m1), steal: stealPct(c0, c1) };
}

type WorkerMessage = { type: 'connected' } | { type: 'result'; result: LoadSliceResult };

function runInWorker(opts: LoadSliceOptions, ready: () => Promise<Schedule>): Promise<LoadSliceResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('./load-worker.js', import.meta.url), { workerData: opts });
    w.on('message', (m: WorkerMessage) => {
      if (m.type === 'connected') void ready().then((s) => w.postMessage(s));
      else resolve(m.result);
    });
    w.once('error', reject);
    w.once('exit', (code) => { if (code !== 0) reject(new Error(`load worker exited with code ${code}`)); });
  });
}

function sum<T>(xs: T[], f: (x: T) => number): number {
  return xs.reduce((s, x) => s + f(x), 0);
}

function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((s, p) => s + p.length, 0));
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}

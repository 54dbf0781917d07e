/** One throughput run against one telemetry store, with storage verification. */
import { PROFILES } from '../../src/sim/index.js';
import { percentiles } from '../../src/sim/stats.js';
import { influxCountReadings } from '../../tools/influxd.js';
import { brokerUsPerMsg, runLoad } from './load-run.js';
import { probeDiskSync, type DiskSync } from './disk-sync.js';
import { MiB, RssSampler } from './proc.js';
import { fetchMetrics, promValue } from './prom.js';
import { INFLUX_DB, setUp, tearDown } from './setup.js';
import type { BenchStore } from './args.js';
import { verifyViaApi, type VerifyResult } from './verify.js';

export const FIELDS = PROFILES.soil.map((f) => f.name);

export interface ThroughputResult {
  store: BenchStore;
  devices: number;
  window: number;
  workers: number;
  generator: 'raw' | 'mqttjs';
  durationSec: number;
  msgsPerSec: number;
  readingsPerSec: number;
  /** Slowest and median whole second of the measurement (messages acknowledged in it). */
  perSecond: { min: number; median: number; all: number[] };
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  ackedTotal: number;
  sentTotal: number;
  clientErrors: number;
  inflightAtEnd: number;
  rssMaxMiB: number;
  rssEndMiB: number;
  serverCpuPct: number | null;
  /**
   * CPU of the server's main thread, the one every MQTT packet crosses, per acknowledged message (µs): the
   * figure that limits 200 × 1, where a store that replies at once is no faster (docs/benchmarks.md).
   */
  brokerUsPerMsg: number | null;
  generatorCpuPct: number;
  /** Machine CPU taken by the hypervisor during the window, % of all cores (proc.ts stealPct). */
  stealPct: number | null;
  drainMs: number | null;
  /** The data directory's disk, probed right before the load (disk-sync.ts): Keng's rate follows it. */
  diskSync: DiskSync;
  verify: VerifyResult;
  influxCount: number | null;
  server: {
    accepted: number | null; duplicates: number | null; rejected: number | null; refused: number | null;
    /** Group commits over the whole run, mean commit latency (gather + queue + write) and mean store write. */
    commits: number | null; commitAvgMs: number | null; storeWriteAvgMs: number | null;
  };
  stopMs: number;
  failures: string[];
}

export async function runThroughput(o: {
  store: BenchStore; devices: number; window: number; durationSec: number; warmupSec: number;
  workers: number; rampPerSec: number; keep: boolean; rateLimit: number; generator: 'raw' | 'mqttjs'; log: (s: string) => void;
}): Promise<ThroughputResult> {
  const s = await setUp({ store: o.store, devices: o.devices, keep: o.keep, rateLimit: o.rateLimit, log: o.log });
  const diskSync = probeDiskSync(s.keng.dataDir);
  o.log(`disk: ${diskSync.p50Ms.toFixed(2)} ms p50, ${diskSync.p90Ms.toFixed(2)} ms p90 per ${diskSync.samples} commit-sized writes with fdatasync`);
  const failures: string[] = [];
  const rss = new RssSampler(s.keng.pid).start();
  const runStart = Date.now();
  o.log(`load: ${o.devices} clients x window ${o.window}, QoS 1, ${FIELDS.length} fields/message, warm-up ${o.warmupSec} s, measure ${o.durationSec} s, ${o.workers} generator thread(s), ${o.generator} generator`);
  const load = await runLoad({
    mqttUrl: s.keng.mqttUrl, devices: s.devices, window: o.window, warmupMs: o.warmupSec * 1000,
    durationMs: o.durationSec * 1000, workers: o.workers, rampPerSec: o.rampPerSec, serverPid: s.keng.pid, generator: o.generator,
  });
  rss.stop();
  o.log(`connected ${load.connected} clients in ${(load.connectMs / 1000).toFixed(1)} s`);
  if (load.connected < o.devices) failures.push(`${o.devices - load.connected} of ${o.devices} clients failed to connect: ${load.connectErrors.slice(0, 3).join('; ')}`);
  if (load.ackedInWindow === 0) failures.push('no message was acknowledged during the measurement');
  o.log(`load done: ${load.acked} acknowledged, ${load.inflightAtEnd} still in flight after drain, ${load.errors} client errors`);

  // InfluxDB: wait for the on-disk queue in front of it to drain before counting.
  let drainMs: number | null = null;
  if (o.store === 'influxdb') {
    const t0 = performance.now();
    for (;;) {
      const depth = promValue(await fetchMetrics(s.keng.httpUrl, s.keng.adminToken), 'keng_queue_depth_readings');
      if (depth === 0) { drainMs = performance.now() - t0; break; }
      if (depth === null) { failures.push('keng_queue_depth_readings missing from /metrics'); break; }
      if (performance.now() - t0 > 300_000) { failures.push(`queue did not drain in 300 s (depth ${depth})`); break; }
      await new Promise((r) => setTimeout(r, 100));
    }
    if (drainMs !== null) o.log(`queue drained in ${(drainMs / 1000).toFixed(1)} s`);
  }

  const maxTs = Math.max(runStart, ...load.ackedTs.map((a) => (a.length ? a[a.length - 1]! : 0)));
  const from = runStart - 60_000;
  const to = maxTs + 60_000;
  o.log('verifying storage through the history API...');
  const verify = await verifyViaApi(s.api, s.devices.map((d) => d.id), load.ackedTs, FIELDS, from, to);
  if (verify.missingReadings > 0) failures.push(`${verify.missingReadings} acknowledged readings MISSING from storage (e.g. ${verify.missingExamples.slice(0, 3).join(', ')})`);
  let influxCount: number | null = null;
  if (s.influx) {
    influxCount = await influxCountReadings(s.influx, INFLUX_DB, 'telemetry', FIELDS, from, to);
    if (influxCount < verify.ackedReadings) failures.push(`InfluxDB holds ${influxCount} readings < ${verify.ackedReadings} acknowledged`);
  }
  const metrics = await fetchMetrics(s.keng.httpUrl, s.keng.adminToken).catch(() => '');
  const server = {
    accepted: promValue(metrics, 'keng_readings_accepted_total'),
    duplicates: promValue(metrics, 'keng_readings_duplicate_total'),
    rejected: promValue(metrics, 'keng_rejected_total'),
    refused: promValue(metrics, 'keng_mqtt_refused_total'),
    commits: promValue(metrics, 'keng_commit_seconds_count'),
    commitAvgMs: ratio(promValue(metrics, 'keng_commit_seconds_sum'), promValue(metrics, 'keng_commit_seconds_count'), 1000),
    storeWriteAvgMs: ratio(promValue(metrics, 'keng_store_write_seconds_sum'), promValue(metrics, 'keng_store_write_seconds_count'), 1000),
  };
  const { stopMs, exitCode } = await tearDown(s);
  if (exitCode !== 0) failures.push(`keng exited with code ${exitCode} on SIGTERM`);

  const [p50, p90, p99] = percentiles(load.latencies, [50, 90, 99]) as [number, number, number];
  const secs = load.measuredMs / 1000;
  return {
    store: o.store, devices: o.devices, window: o.window, workers: o.workers, generator: o.generator, durationSec: o.durationSec,
    msgsPerSec: load.ackedInWindow / secs,
    readingsPerSec: load.readingsInWindow / secs,
    perSecond: perSecondStats(load.ackedPerSecond, Math.floor(secs)),
    latencyMs: { p50, p90, p99, max: load.latencies.reduce((m, v) => (v > m ? v : m), 0) },
    ackedTotal: load.acked, sentTotal: load.sent, clientErrors: load.errors, inflightAtEnd: load.inflightAtEnd,
    rssMaxMiB: rss.max / MiB, rssEndMiB: rss.last / MiB,
    serverCpuPct: load.serverCpuMs === null ? null : (load.serverCpuMs / load.measuredMs) * 100,
    brokerUsPerMsg: brokerUsPerMsg(load),
    generatorCpuPct: (load.generatorCpuMs / load.measuredMs) * 100,
    stealPct: load.stealPct,
    drainMs, diskSync, verify, influxCount, server, stopMs, failures,
  };
}

/** Whole seconds only (a trailing partial second would look like a dip). */
function perSecondStats(counts: number[], whole: number): ThroughputResult['perSecond'] {
  const all = Array.from({ length: whole }, (_, i) => counts[i] ?? 0);
  const sorted = [...all].sort((a, b) => a - b);
  return { min: sorted[0] ?? 0, median: sorted[Math.floor(sorted.length / 2)] ?? 0, all };
}

function ratio(a: number | null, b: number | null, scale = 1): number | null {
  return a === null || b === null || b === 0 ? null : (a / b) * scale;
}

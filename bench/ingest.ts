/**
 * Ingest benchmark: Keng as a child process, N registered devices publishing
 * QoS 1 telemetry (4 readings per message) with a window of in-flight messages
 * each, over loopback. Reports acknowledged messages/s, PUBACK latency, server
 * RSS, then checks every acknowledged reading is stored (exit 1 if not).
 * By default three shapes (200 × 1, 20 × 20, 100 × 64 in flight), each also
 * run against a bare aedes broker with the same generator (bench/bare-aedes.ts),
 * ending with a table of Keng's rate against the bare broker's.
 * `--idle N`: N connected idle devices, server RSS and time to connect.
 *
 *   npm run bench:ingest
 *   npm run bench:ingest -- --devices 100 --window 64 --duration 20 --store influxdb --baseline none
 *   npm run bench:ingest -- --rounds 3 --duration 10
 *   npm run bench:ingest -- --idle 5000
 * `--generator mqttjs` drives the load with the mqtt.js simulator instead of
 * the lean raw MQTT client (bench/lib/raw-device.ts).
 */
import { cpus } from 'node:os';
import { USAGE, UsageError, parseBenchArgs, type BenchArgs } from './lib/args.js';
import type { BareResult } from './lib/bare-server.js';
import { compareRows, compareTable, runShapes } from './lib/compare.js';
import { installSignalHandlers, runCleanups } from '../tools/cleanup.js';
import { runIdle, IDLE_RSS_TARGET_MIB, type IdleResult } from './lib/idle.js';
import { fmt, round, table, type Row } from './lib/report.js';
import { FIELDS, type ThroughputResult } from './lib/throughput.js';

const log = (s: string): void => { process.stderr.write(`[bench] ${s}\n`); };

function throughputRows(r: ThroughputResult): Row[] {
  const v = r.verify;
  return [
    ['store', r.store],
    ['devices x window', `${r.devices} x ${r.window} (QoS 1, ${FIELDS.length} readings/message)`],
    ['measured', `${r.durationSec} s (generator: ${r.generator}, ${r.workers} thread(s))`],
    ['acknowledged messages/s', fmt(r.msgsPerSec)],
    ['acknowledged readings/s', fmt(r.readingsPerSec)],
    ['messages/s per second: min / median', `${fmt(r.perSecond.min)} / ${fmt(r.perSecond.median)}`],
    ['PUBACK latency p50 / p90 / p99', `${fmt(r.latencyMs.p50, 1)} / ${fmt(r.latencyMs.p90, 1)} / ${fmt(r.latencyMs.p99, 1)} ms (max ${fmt(r.latencyMs.max, 0)})`],
    ['server RSS max / end', `${fmt(r.rssMaxMiB)} / ${fmt(r.rssEndMiB)} MiB`],
    ['disk: commit-sized write + fdatasync p50 / p90', `${fmt(r.diskSync.p50Ms, 2)} / ${fmt(r.diskSync.p90Ms, 2)} ms (before the load)`],
    ['CPU server / generator', `${fmt(r.serverCpuPct)}% / ${fmt(r.generatorCpuPct)}% of one core (${cpus().length} cores)`],
    ['server main (broker) thread CPU per message', `${fmt(r.brokerUsPerMsg, 1)} µs`],
    ['machine CPU stolen by the hypervisor', r.stealPct === null ? 'n/a' : `${fmt(r.stealPct, 1)} % of all cores`],
    ['messages sent / acked (total)', `${fmt(r.sentTotal)} / ${fmt(r.ackedTotal)} (${r.inflightAtEnd} unacked at end, ${r.clientErrors} client errors)`],
    ...(r.drainMs !== null ? [['queue drain time', `${fmt(r.drainMs / 1000, 1)} s`] as Row] : []),
    ['stored / acknowledged readings', `${fmt(v.storedReadings)} / ${fmt(v.ackedReadings)} (history API, ${v.devicesChecked} devices, ${fmt(v.queryMs / 1000, 1)} s)`],
    ...(r.influxCount !== null ? [['InfluxDB count(*) readings', fmt(r.influxCount)] as Row] : []),
    ['missing acknowledged readings', String(v.missingReadings)],
    ['server: accepted / dup / rejected', `${fmt(r.server.accepted)} / ${fmt(r.server.duplicates)} / ${fmt(r.server.rejected)}`],
    ['server group commits', r.server.commits ? `${fmt(r.server.commits)} (mean ${fmt((r.server.accepted ?? 0) / r.server.commits)} readings, commit ${fmt(r.server.commitAvgMs, 1)} ms, store write ${fmt(r.server.storeWriteAvgMs, 1)} ms)` : 'n/a'],
    ['server stop (SIGTERM) time', `${fmt(r.stopMs)} ms`],
    ['result', r.failures.length ? `FAIL: ${r.failures.join('; ')}` : 'PASS'],
  ];
}

function idleRows(r: IdleResult): Row[] {
  return [
    ['idle devices connected', `${r.connected} / ${r.devices} (server: ${fmt(r.serverConnections)})`],
    ['time to connect all', `${fmt(r.connectSec, 1)} s (ramp ${r.rampPerSec}/s)`],
    ['server RSS before / idle / max', `${fmt(r.rssBaselineMiB)} / ${fmt(r.rssIdleMiB)} / ${fmt(r.rssMaxMiB)} MiB (target < ${IDLE_RSS_TARGET_MIB} MiB)`],
    ['RSS per connection', `${fmt(r.kibPerConnection, 1)} KiB`],
    ['registration time', `${fmt(r.registerSec, 1)} s`],
    ['server stop (SIGTERM) time', `${fmt(r.stopMs)} ms`],
    ['result', r.failures.length ? `FAIL: ${r.failures.join('; ')}` : 'PASS'],
  ];
}

function jsonThroughput(r: ThroughputResult): Record<string, unknown> {
  return {
    store: r.store, devices: r.devices, window: r.window, workers: r.workers, generator: r.generator, durationSec: r.durationSec,
    msgsPerSec: round(r.msgsPerSec, 0), readingsPerSec: round(r.readingsPerSec, 0),
    minSecMsgs: r.perSecond.min, medianSecMsgs: r.perSecond.median, perSecond: r.perSecond.all,
    p50Ms: round(r.latencyMs.p50), p90Ms: round(r.latencyMs.p90), p99Ms: round(r.latencyMs.p99),
    rssMaxMiB: round(r.rssMaxMiB, 0), rssEndMiB: round(r.rssEndMiB, 0),
    serverCpuPct: round(r.serverCpuPct, 0), brokerUsPerMsg: round(r.brokerUsPerMsg, 1), generatorCpuPct: round(r.generatorCpuPct, 0),
    stealPct: round(r.stealPct, 1),
    commits: r.server.commits, commitAvgMs: round(r.server.commitAvgMs), storeWriteAvgMs: round(r.server.storeWriteAvgMs),
    drainMs: round(r.drainMs, 0), diskSyncP50Ms: round(r.diskSync.p50Ms, 3), diskSyncP90Ms: round(r.diskSync.p90Ms, 3), stored: r.verify.storedReadings, acked: r.verify.ackedReadings,
    missing: r.verify.missingReadings, influxCount: r.influxCount, pass: r.failures.length === 0,
  };
}

function jsonBare(r: BareResult): Record<string, unknown> {
  return {
    devices: r.devices, window: r.window, msgsPerSec: round(r.msgsPerSec, 0), p50Ms: round(r.latencyMs.p50), p90Ms: round(r.latencyMs.p90),
    p99Ms: round(r.latencyMs.p99), serverCpuPct: round(r.serverCpuPct, 0), brokerUsPerMsg: round(r.brokerUsPerMsg, 1), stealPct: round(r.stealPct, 1), clientErrors: r.clientErrors,
  };
}

async function main(args: BenchArgs): Promise<number> {
  installSignalHandlers();
  const out: string[] = [];
  const json: Record<string, unknown> = { node: process.version, cores: cpus().length, cpu: cpus()[0]?.model };
  let failed = false;
  if (args.idle > 0) {
    const r = await runIdle({ devices: args.idle, rampPerSec: args.rampPerSec, keep: args.keep, log });
    out.push(table(`Idle connections (${args.idle})`, idleRows(r)));
    json.idle = {
      devices: r.devices, connected: r.connected, connectSec: round(r.connectSec, 1), rssIdleMiB: round(r.rssIdleMiB, 0),
      rssMaxMiB: round(r.rssMaxMiB, 0), kibPerConnection: round(r.kibPerConnection, 1), pass: r.failures.length === 0,
    };
    failed ||= r.failures.length > 0;
  } else {
    const runs: Record<string, unknown>[] = [];
    const bare: Record<string, unknown>[] = [];
    const compare: Record<string, unknown>[] = [];
    const summaries: string[] = [];
    for (const store of args.stores) {
      log(`=== ${store} ===`);
      const shapes = await runShapes({ store, ...args, log });
      for (const sr of shapes) {
        for (const r of sr.keng) {
          out.push(table(`Ingest, ${store} store, ${r.devices} x ${r.window}`, throughputRows(r)));
          runs.push(jsonThroughput(r));
          failed ||= r.failures.length > 0;
        }
        bare.push(...sr.bare.map(jsonBare));
      }
      const rows = compareRows(shapes);
      compare.push(...rows.map((row) => ({ store, ...row })));
      summaries.push(`Keng (${store} store) against a bare aedes broker, ${args.durationSec} s measured per run, ${args.rounds} round(s)` +
        `${args.rounds > 1 ? ': median (min–max)' : ''}\n\n${compareTable(rows, store)}`);
    }
    out.push(...summaries);
    json.ingest = runs;
    if (args.baseline) { json.bare = bare; json.compare = compare; }
  }
  process.stdout.write('\n' + out.join('\n\n') + '\n');
  process.stdout.write(`BENCH_RESULT ${JSON.stringify(json)}\n`);
  if (failed) process.stdout.write('\nBENCHMARK FAILED (see "result" above)\n');
  return failed ? 1 : 0;
}

let code: number;
try {
  code = await main(parseBenchArgs(process.argv.slice(2)));
} catch (err) {
  if (err instanceof UsageError) {
    if (err.message) process.stderr.write(`${err.message}\n`);
    process.stderr.write(`${USAGE}\n`);
    code = 2;
  } else {
    process.stderr.write(`\nBENCHMARK FAILED: ${(err as Error).stack ?? err}\n`);
    code = 1;
  }
} finally {
  await runCleanups();
}
process.exit(code);

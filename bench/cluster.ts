/**
 * `npm run bench:cluster` (docs/benchmarks.md): what cluster mode costs on the ingest path. In one run and
 * with the same generator:
 *  - one Keng node on its embedded SQLite store (the default);
 *  - two Keng nodes on one PostgreSQL (KENG_DATABASE_URL, plus KENG_REDIS_URL for the bus between them),
 *    each device connected to one of them (half each): the PUBACK follows the PostgreSQL commit.
 * Prints acknowledged readings/s and PUBACK p50/p99 for both, then reads every acknowledged reading back
 * through the history API (exit 1 if one is missing).
 *
 * The devices connect to the nodes directly, not through HAProxy: until the state store moves to
 * PostgreSQL each node has its own device registry, so a device's credentials are those of the node
 * it was registered on (docs/cluster.md). Everything here shares the machine's two cores: two nodes
 * do not get twice the CPU, so this measures the cost of the PostgreSQL commit, not a cluster's scale.
 *
 *   npm run bench:cluster -- --devices 100 --window 20 --duration 10 --rounds 1
 */
import { parseArgs } from 'node:util';
import { installSignalHandlers, runCleanups } from '../tools/cleanup.js';
import { startPostgres } from '../tools/postgres.js';
import { startRedis } from '../tools/redis.js';
import { runLoad, type LoadResult } from './lib/load-run.js';
import { fmt, table, type Row } from './lib/report.js';
import { setUp, tearDown, type Setup } from './lib/setup.js';
import { FIELDS } from './lib/throughput.js';
import { verifyViaApi } from './lib/verify.js';

const log = (s: string): void => { process.stderr.write(`[bench] ${s}\n`); };

interface Args { devices: number; window: number; durationSec: number; warmupSec: number; rounds: number }

function args(argv: string[]): Args {
  const { values } = parseArgs({
    args: argv,
    options: {
      devices: { type: 'string', default: '100' }, window: { type: 'string', default: '20' },
      duration: { type: 'string', default: '10' }, warmup: { type: 'string', default: '3' }, rounds: { type: 'string', default: '1' },
    },
  });
  const n = (k: keyof typeof values, min: number): number => {
    const v = Number(values[k]);
    if (!Number.isInteger(v) || v < min) throw new Error(`--${k} must be an integer >= ${min}`);
    return v;
  };
  return { devices: n('devices', 2), window: n('window', 1), durationSec: n('duration', 1), warmupSec: n('warmup', 0), rounds: n('rounds', 1) };
}

interface Result { label: string; readingsPerSec: number; p50: number; p99: number; acked: number; stored: number; missing: number }

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : 0;
}

function summarise(label: string, loads: LoadResult[], stored: number, missing: number): Result {
  const secs = Math.max(...loads.map((l) => l.measuredMs)) / 1000;
  const lat = loads.flatMap((l) => Array.from(l.latencies)).sort((a, b) => a - b);
  return {
    label, readingsPerSec: loads.reduce((s, l) => s + l.readingsInWindow, 0) / secs,
    p50: percentile(lat, 50), p99: percentile(lat, 99), acked: loads.reduce((s, l) => s + l.acked, 0), stored, missing,
  };
}

/** Load on every node at once (each with its own devices), read back through the first node. */
async function drive(label: string, nodes: Setup[], a: Args): Promise<Result> {
  const runStart = Date.now();
  const loads = await Promise.all(nodes.map((s) => runLoad({
    mqttUrl: s.keng.mqttUrl, devices: s.devices, window: a.window, warmupMs: a.warmupSec * 1000,
    durationMs: a.durationSec * 1000, workers: 1, rampPerSec: 500, serverPid: s.keng.pid, generator: 'raw',
  })));
  let ackedReadings = 0;
  let missing = 0;
  // Each node reads back its own devices (the readings of both are in the one shared store).
  for (const [i, s] of nodes.entries()) {
    const ackedTs = loads[i]!.ackedTs;
    const to = Math.max(runStart, ...ackedTs.map((t) => (t.length ? t[t.length - 1]! : 0))) + 60_000;
    const v = await verifyViaApi(s.api, s.devices.map((d) => d.id), ackedTs, FIELDS, runStart - 60_000, to);
    ackedReadings += v.ackedReadings;
    missing += v.missingReadings;
  }
  log(`${label}: ${fmt(ackedReadings)} acknowledged readings, ${fmt(missing)} missing`);
  const v = { ackedReadings, missingReadings: missing };
  return summarise(label, loads, v.ackedReadings - v.missingReadings, v.missingReadings);
}

async function main(): Promise<void> {
  installSignalHandlers();
  const a = args(process.argv.slice(2));
  const pg = await startPostgres();
  const redis = await startRedis();
  log(`postgres ${pg.url}, redis ${redis.url}`);
  const results: Result[] = [];
  const half = Math.floor(a.devices / 2);
  for (let round = 1; round <= a.rounds; round++) {
    // One node on SQLite.
    const single = await setUp({ store: 'embedded', devices: a.devices, keep: false, rateLimit: 1_000_000, log });
    try { results.push(await drive(`1 node, SQLite (round ${round})`, [single], a)); } finally { await tearDown(single); }
    // Two nodes on one PostgreSQL database (a fresh one per round), half of the devices each.
    const url = await pg.createDatabase(`bench_${round}_${Date.now()}`);
    const cluster = (nodeId: string): { databaseUrl: string; redisUrl: string; nodeId: string } => ({ databaseUrl: url, redisUrl: redis.url, nodeId });
    const n1 = await setUp({ store: 'embedded', devices: half, keep: false, rateLimit: 1_000_000, log, node: cluster('n1'), prefix: 'bench-a-' });
    const n2 = await setUp({ store: 'embedded', devices: a.devices - half, keep: false, rateLimit: 1_000_000, log, node: cluster('n2'), prefix: 'bench-b-' });
    try { results.push(await drive(`2 nodes, PostgreSQL (round ${round})`, [n1, n2], a)); } finally { await tearDown(n2); await tearDown(n1); }
  }
  const rows: Row[] = results.map((r) => [r.label, `${fmt(r.readingsPerSec)} readings/s, PUBACK p50 ${fmt(r.p50, 1)} / p99 ${fmt(r.p99, 1)} ms, stored ${fmt(r.stored)} of ${fmt(r.acked * FIELDS.length)}`]);
  process.stdout.write(table(`cluster cost: ${a.devices} devices × ${a.window} in flight, QoS 1, ${FIELDS.length} readings/message, ${a.durationSec} s`, rows) + '\n');
  process.stdout.write(`BENCH_RESULT ${JSON.stringify({ devices: a.devices, window: a.window, results })}\n`);
  await runCleanups();
  process.exit(results.some((r) => r.missing > 0) ? 1 : 0);
}

main().catch(async (err: unknown) => {
  process.stderr.write(`[bench] failed: ${(err as Error).stack ?? String(err)}\n`);
  await runCleanups();
  process.exit(1);
});

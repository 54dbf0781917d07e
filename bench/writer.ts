/**
 * `npm run bench:writer` (docs/benchmarks.md): the embedded store's writer alone, on this thread,
 * no MQTT: CPU per commit of the writer's page cache (WRITER_CACHE_KIB) against the 32 MiB it had
 * before, same run, alternating which goes first. Why the cache size matters: embedded-db.ts,
 * WRITER_CACHE_KIB.
 *
 * Each commit is one `writeMany` of --messages (default 125) messages of 4 readings, round robin
 * over --devices devices (default 20 and 1,000), synchronous=FULL, as the worker runs it; a
 * compaction step follows every 300 commits, moving what is older than 2 s of the synthetic clock
 * (which advances 7 ms per commit), at most 10,000 points a step as in the worker, so recent points
 * pile up as they do under heavy load. CPU is this process's user + system time over the whole
 * run, compaction included (and the making and packing of each batch, the same for both settings).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { COMPACT_LAG_MS, EmbeddedWriter, WRITER_CACHE_KIB } from '../src/storage/telemetry/embedded-db.js';
import { packRecords } from '../src/storage/telemetry/record-pack.js';
import type { TelemetryRecord } from '../src/storage/telemetry/types.js';
import { fmt, table, type Row } from './lib/report.js';

const { values: args } = parseArgs({
  options: {
    devices: { type: 'string', default: '20,1000' },
    messages: { type: 'string', default: '125' },
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '2' },
  },
});
const DEVICES = args.devices.split(',').map(Number);
const PER_COMMIT = Number(args.messages);
const SECONDS = Number(args.seconds);
const ROUNDS = Number(args.rounds);
if (DEVICES.some((d) => !(d >= 1)) || !(PER_COMMIT >= 1) || !(SECONDS > 0) || !(ROUNDS >= 1)) {
  process.stderr.write('usage: bench:writer [--devices 20,1000] [--messages 125] [--seconds 5] [--rounds 2]\n');
  process.exit(2);
}
const BEFORE_KIB = 32_768;
const COMPACT_EVERY = 300;
/** Points younger than this (synthetic clock) stay in `recent_points` at each compaction step. */
const KEEP_RECENT_MS = 2_000;

interface Run { cpuMsPerCommit: number; commitsPerSec: number }

function run(devices: number, cacheKiB: number): Run {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-bench-writer-'));
  try {
    const w = new EmbeddedWriter(path.join(dir, 'telemetry.db'), 'full', cacheKiB);
    const names = Array.from({ length: devices }, (_, i) => `soil-${String(i).padStart(5, '0')}`);
    let ts = 1_700_000_000_000;
    let commits = 0; let next = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const end = t0 + SECONDS * 1000;
    while (performance.now() < end) {
      const batch: TelemetryRecord[] = [];
      for (let i = 0; i < PER_COMMIT; i++) {
        const d = next++ % devices;
        batch.push({
          deviceId: names[d]!, kind: 'sensor', area: '', ts: ts + Math.floor(i / devices),
          values: { soil_moisture: 30 + (next % 97) / 10, soil_temp_c: 27 + (next % 13) / 10, ec_us_cm: 800 + (next % 89), battery_v: 3.9 + (next % 5) / 100 },
        });
      }
      w.writeMany([packRecords(batch)]); // packed, as the worker receives it from the broker thread
      ts += 7;
      // compact(now) keeps what is younger than COMPACT_LAG_MS before `now`: pass the clock that keeps KEEP_RECENT_MS.
      if (++commits % COMPACT_EVERY === 0) w.compact(ts + COMPACT_LAG_MS - KEEP_RECENT_MS);
    }
    const wall = performance.now() - t0;
    const cu = process.cpuUsage(cpu0);
    w.close();
    return { cpuMsPerCommit: (cu.user + cu.system) / 1000 / commits, commitsPerSec: commits / (wall / 1000) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows: Row[] = [];
const summary: Record<string, unknown>[] = [];
for (const devices of DEVICES) {
  const before: Run[] = []; const now: Run[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? [BEFORE_KIB, WRITER_CACHE_KIB] : [WRITER_CACHE_KIB, BEFORE_KIB];
    for (const kib of order) (kib === BEFORE_KIB ? before : now).push(run(devices, kib));
  }
  const mean = (xs: Run[], k: keyof Run): number => xs.reduce((a, x) => a + x[k], 0) / xs.length;
  const b = mean(before, 'cpuMsPerCommit'); const n = mean(now, 'cpuMsPerCommit');
  rows.push([`${devices} devices: CPU per commit, ${BEFORE_KIB / 1024} MiB cache`, `${fmt(b, 3)} ms (${fmt(mean(before, 'commitsPerSec'))} commits/s)`]);
  rows.push([`${devices} devices: CPU per commit, ${WRITER_CACHE_KIB / 1024} MiB cache (now)`, `${fmt(n, 3)} ms (${fmt(mean(now, 'commitsPerSec'))} commits/s)`]);
  rows.push([`${devices} devices: now / before`, `${fmt(n / b, 2)}× CPU per commit`]);
  summary.push({ devices, beforeCpuMsPerCommit: +b.toFixed(4), nowCpuMsPerCommit: +n.toFixed(4), ratio: +(n / b).toFixed(3) });
}
process.stdout.write(table(`Embedded writer alone: ${PER_COMMIT} messages × 4 readings per commit, synchronous=FULL, ${SECONDS} s × ${ROUNDS} round(s) per setting`, rows) + '\n');
process.stdout.write(`BENCH_RESULT ${JSON.stringify({ node: process.version, writer: summary })}\n`);

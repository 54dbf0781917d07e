/**
 * Keng against a bare aedes broker, shape by shape (devices × messages in
 * flight), with the same generator in the same run. The two runs of a shape
 * are adjacent and their order alternates from round to round, so what else
 * the machine does at the time hits both sides alike; the ratio is taken per
 * round, from the two adjacent runs.
 */
import { percentiles } from '../../src/sim/stats.js';
import type { BenchStore } from './args.js';
import { runBare, type BareResult } from './bare-server.js';
import type { GeneratorKind } from './load.js';
import { fmt } from './report.js';
import type { Shape } from './shapes.js';
import { runThroughput, type ThroughputResult } from './throughput.js';

export interface ShapeRuns { shape: Shape; keng: ThroughputResult[]; bare: BareResult[] }

export interface CompareOptions {
  store: BenchStore;
  shapes: Shape[];
  rounds: number;
  /** false: Keng only (no baseline runs). */
  baseline: boolean;
  durationSec: number; warmupSec: number; workers: number; rampPerSec: number; keep: boolean; rateLimit: number;
  generator: GeneratorKind;
  log: (s: string) => void;
}

export async function runShapes(o: CompareOptions): Promise<ShapeRuns[]> {
  const out: ShapeRuns[] = o.shapes.map((shape) => ({ shape, keng: [], bare: [] }));
  for (let round = 0; round < o.rounds; round++) {
    for (const r of out) {
      const { devices, window } = r.shape;
      const keng = async (): Promise<void> => {
        o.log(`--- round ${round + 1}/${o.rounds}: Keng (${o.store}), ${devices} x ${window} ---`);
        const k = await runThroughput({ ...o, devices, window, log: o.log });
        r.keng.push(k);
        o.log(`Keng ${devices} x ${window}: ${fmt(k.msgsPerSec)} msg/s acked, PUBACK p50 ${fmt(k.latencyMs.p50, 1)} / p99 ${fmt(k.latencyMs.p99, 1)} ms, ` +
          `stored ${fmt(k.verify.storedReadings)} / acked ${fmt(k.verify.ackedReadings)} readings`);
      };
      const bare = async (): Promise<void> => {
        if (!o.baseline) return;
        o.log(`--- round ${round + 1}/${o.rounds}: bare aedes, ${devices} x ${window} ---`);
        const b = await runBare({ ...o, devices, window, log: o.log });
        r.bare.push(b);
        o.log(`bare aedes ${devices} x ${window}: ${fmt(b.msgsPerSec)} msg/s acked, PUBACK p50 ${fmt(b.latencyMs.p50, 1)} / p99 ${fmt(b.latencyMs.p99, 1)} ms`);
      };
      if (round % 2 === 0) { await keng(); await bare(); } else { await bare(); await keng(); }
    }
  }
  return out;
}

/** "median (min–max)" of several runs, or the one value. */
function spread(xs: number[], digits = 0, unit = ''): string {
  if (xs.length === 0) return 'n/a';
  if (xs.length === 1) return fmt(xs[0], digits) + unit;
  const [lo, mid, hi] = percentiles(xs, [0, 50, 100]) as [number, number, number];
  return `${fmt(mid, digits)}${unit} (${fmt(lo, digits)}–${fmt(hi, digits)})`;
}

export interface CompareRow {
  shape: string; kengMsgsPerSec: number[]; bareMsgsPerSec: number[]; ratios: number[];
  kengP50: number[]; kengP99: number[]; bareP50: number[]; bareP99: number[]; stored: number; acked: number;
  /** Commit-sized write + fdatasync on the data directory's disk before each Keng run (disk-sync.ts), ms. */
  diskSyncMs: number[];
  /** Broker (main) thread CPU per acknowledged message, µs (load-run.ts brokerUsPerMsg). */
  kengBrokerUs: number[]; bareBrokerUs: number[];
  /** Machine CPU taken by the hypervisor during each run, % of all cores (proc.ts stealPct). */
  kengStealPct: number[]; bareStealPct: number[];
}

export function compareRows(runs: ShapeRuns[]): CompareRow[] {
  return runs.map(({ shape, keng, bare }) => ({
    shape: `${shape.devices} × ${shape.window}`,
    kengMsgsPerSec: keng.map((k) => k.msgsPerSec),
    bareMsgsPerSec: bare.map((b) => b.msgsPerSec),
    ratios: keng.flatMap((k, i) => (bare[i] ? [k.msgsPerSec / bare[i]!.msgsPerSec] : [])),
    kengP50: keng.map((k) => k.latencyMs.p50), kengP99: keng.map((k) => k.latencyMs.p99),
    bareP50: bare.map((b) => b.latencyMs.p50), bareP99: bare.map((b) => b.latencyMs.p99),
    stored: keng.reduce((s, k) => s + k.verify.storedReadings, 0),
    acked: keng.reduce((s, k) => s + k.verify.ackedReadings, 0),
    diskSyncMs: keng.map((k) => k.diskSync.p50Ms),
    kengBrokerUs: keng.flatMap((k) => (k.brokerUsPerMsg === null ? [] : [k.brokerUsPerMsg])),
    bareBrokerUs: bare.flatMap((b) => (b.brokerUsPerMsg === null ? [] : [b.brokerUsPerMsg])),
    kengStealPct: keng.flatMap((k) => (k.stealPct === null ? [] : [k.stealPct])),
    bareStealPct: bare.flatMap((b) => (b.stealPct === null ? [] : [b.stealPct])),
  }));
}

/** The comparison as a Markdown table (it goes into the README as printed). */
export function compareTable(rows: CompareRow[], store: string): string {
  const head = ['shape (devices × in flight)', `Keng (${store}) acked/s`, 'bare aedes acked/s', 'ratio',
    'Keng PUBACK p50 / p99', 'bare PUBACK p50 / p99', 'Keng stored / acked readings', 'disk sync p50',
    'broker thread CPU per message, Keng / bare', 'CPU stolen by the hypervisor, Keng / bare run'];
  const lines = rows.map((r) => [
    r.shape, spread(r.kengMsgsPerSec), spread(r.bareMsgsPerSec), spread(r.ratios, 2) + (r.ratios.length ? '×' : ''),
    `${spread(r.kengP50, 1)} / ${spread(r.kengP99, 1)} ms`,
    r.bareP50.length ? `${spread(r.bareP50, 1)} / ${spread(r.bareP99, 1)} ms` : 'n/a',
    `${fmt(r.stored)} / ${fmt(r.acked)}`,
    spread(r.diskSyncMs, 2, ' ms'),
    `${spread(r.kengBrokerUs, 1)} / ${r.bareBrokerUs.length ? spread(r.bareBrokerUs, 1) : 'n/a'} µs`,
    `${r.kengStealPct.length ? spread(r.kengStealPct, 0, ' %') : 'n/a'} / ${r.bareStealPct.length ? spread(r.bareStealPct, 0, ' %') : 'n/a'}`,
  ]);
  const row = (cells: string[]): string => `| ${cells.join(' | ')} |`;
  return [row(head), row(head.map(() => '---')), ...lines.map(row)].join('\n');
}

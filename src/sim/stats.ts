/** Latency recording and percentiles (nearest-rank), shared by the simulator and the benchmark. */

/** Nearest-rank percentile of an ascending-sorted array; NaN when empty. p in [0, 100]. */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile out of range: ${p}`);
  const rank = Math.max(1, Math.ceil((p / 100) * n));
  return sorted[Math.min(rank, n) - 1]!;
}

export function percentiles(values: ArrayLike<number>, ps: number[]): number[] {
  const sorted = Float64Array.from(values as ArrayLike<number>).sort();
  return ps.map((p) => percentileSorted(sorted, p));
}

/** Growable array of latency samples (ms). */
export class LatencyRecorder {
  private buf: Float64Array;
  private n = 0;

  constructor(initialCapacity = 1 << 16) {
    this.buf = new Float64Array(Math.max(16, initialCapacity));
  }

  get count(): number {
    return this.n;
  }

  record(ms: number): void {
    if (this.n === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = ms;
  }

  /** A copy of the samples (e.g. to transfer from a worker thread). */
  samples(): Float64Array {
    return this.buf.slice(0, this.n);
  }

  merge(samples: ArrayLike<number>): void {
    for (let i = 0; i < samples.length; i++) this.record(samples[i]!);
  }

  summary(): { count: number; p50: number; p90: number; p99: number; max: number } {
    const sorted = this.samples().sort();
    return {
      count: this.n,
      p50: percentileSorted(sorted, 50),
      p90: percentileSorted(sorted, 90),
      p99: percentileSorted(sorted, 99),
      max: this.n ? sorted[this.n - 1]! : NaN,
    };
  }

  reset(): void {
    this.n = 0;
  }
}

/** Counters a simulation reports. */
export interface SimCounters {
  connected: number;
  connecting: number;
  sent: number;
  acked: number;
  errors: number;
  rpcAnswered: number;
  backlogged: number;
  reconnects: number;
}

export function emptyCounters(): SimCounters {
  return { connected: 0, connecting: 0, sent: 0, acked: 0, errors: 0, rpcAnswered: 0, backlogged: 0, reconnects: 0 };
}

/**
 * Exponential back-off between `retryMinMs` and `retryMaxMs` (settings influx.*), with
 * "equal jitter": the n-th consecutive failure waits a random time in
 * [base/2, base] where base = min(max, min·2ⁿ), never below min. There is no
 * give-up time: the forwarder retries forever. `random` is injectable for tests.
 */
export class Backoff {
  private failures = 0;

  constructor(private readonly minMs: number, private readonly maxMs: number,
    private readonly random: () => number = Math.random) {
    if (maxMs < minMs) this.maxMs = minMs;
  }

  /** Consecutive failures so far. */
  get attempts(): number { return this.failures; }

  /** Delay before the next attempt after one more failure. */
  next(): number {
    const base = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.failures, 52));
    this.failures++;
    const d = base / 2 + this.random() * (base / 2);
    return Math.round(Math.min(this.maxMs, Math.max(this.minMs, d)));
  }

  reset(): void { this.failures = 0; }
}

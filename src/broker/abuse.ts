/**
 * Spec device-protocol.md "Access rules": "repeated abuse disconnects the
 * device". More than `limit` refused publishes within `windowMs` (60 s) trip
 * the counter. A ring of the last limit+1 refusal times: no allocation after
 * the first refusal, O(1) per refusal.
 */
export const ABUSE_WINDOW_MS = 60_000;

export class AbuseCounter {
  private ring: number[] | null = null;
  private next = 0;
  private count = 0;

  constructor(private readonly limit: number, private readonly windowMs = ABUSE_WINDOW_MS) {}

  /** Record one refusal at `now`; true when more than `limit` refusals fall within the window. */
  hit(now: number): boolean {
    const size = this.limit + 1;
    const ring = this.ring ?? (this.ring = new Array<number>(size).fill(0));
    ring[this.next] = now;
    this.next = (this.next + 1) % size;
    if (this.count < size) this.count++;
    if (this.count < size) return false;
    // The oldest of the last limit+1 refusals is the slot we write next.
    const oldest = ring[this.next]!;
    return now - oldest < this.windowMs;
  }

  /** Forget the history (after a disconnect for abuse). */
  reset(): void {
    this.count = 0;
    this.next = 0;
  }

  /** True when no refusal happened within the window (the state can be forgotten). */
  isIdle(now: number): boolean {
    if (this.count === 0 || !this.ring) return true;
    const newest = this.ring[(this.next + this.ring.length - 1) % this.ring.length]!;
    return now - newest >= this.windowMs;
  }
}

/** At most one call per `intervalMs` returns true (one warn per device per minute). */
export class WarnGate {
  private lastAt = -Infinity;
  constructor(private readonly intervalMs = 60_000) {}
  allow(now: number): boolean {
    if (now - this.lastAt < this.intervalMs) return false;
    this.lastAt = now;
    return true;
  }
}

/**
 * The self-fence of a cluster node (docs/cluster.md "Node leases"): until when this node's lease is SURELY valid,
 * on this process's monotonic clock, so that a node cut from PostgreSQL (or paused) stops acting as the holder of its
 * devices before the other nodes can treat it as dead (sweep its sessions, adopt its RPC commands).
 *
 * - At each successful renewal the deadline becomes: the monotonic time when the renewal was SENT + leaseMs − the
 *   margin. PostgreSQL sets lease_until = its now + leaseMs, and its now is after the send, so the lease on
 *   PostgreSQL's clock ends after this deadline (the clocks run at the same rate; node clocks are never compared).
 * - Past the deadline without a renewal the node is FENCED, until a renewal succeeds again: valid() is false. It is
 *   computed at each call from the clock (a paused process knows it at once when it resumes, before any timer);
 *   a timer at the deadline only delivers the `fenced` event (close the device connections, /readyz 503).
 * - Before the first renewal valid() is false too (nothing starts before it: NodeLeases.start() renews first).
 *
 * Embedded mode has no fence: nothing asks (the wiring passes no check).
 */
import { performance } from 'node:perf_hooks';
import type { Counter, Gauge } from 'prom-client';
import type { Logger } from '../core/logger.js';
import { counterOn, gaugeOn, type Metrics } from '../core/metrics.js';

/** What the parts that act for this node's devices ask (RPC publishes, session claims, orphan adoption). */
export interface LeaseFencePort {
  /** True while this node's lease is surely valid (monotonic clock); false once fenced. */
  valid(): boolean;
}

/**
 * The default margin: a fifth of the lease (2 s of the default 10 s lease, renewed every 2 s: fenced after about four
 * renewals in a row failed). The deadline is already early by the renewal's round trip; the margin covers what happens
 * between a check of valid() and its effect: a publish that passed the check before its bytes leave (the socket write,
 * a GC pause on a loaded node), the `fenced` timer firing late on a busy event loop before the device connections close
 * and /readyz fails, and clock-rate differences (ppm, negligible). Smaller than leaseMs − renewMs, so a healthy node
 * (one renewal per renewMs) is never fenced between two renewals.
 */
export function defaultFenceMargin(leaseMs: number): number {
  return Math.round(leaseMs / 5);
}

export interface LeaseFenceOptions {
  /** How long a lease lasts after a renewal (PostgreSQL's clock): NodeLeaseTuning.leaseMs. */
  leaseMs: number;
  /** Taken off the deadline (see defaultFenceMargin). */
  marginMs: number;
  logger: Logger;
  metrics?: Pick<Metrics, 'registry'>;
  /** Monotonic milliseconds (default performance.now; tests: a fake clock). */
  now?: () => number;
  /** Tests with a fake clock: no timer (the test calls valid()). */
  timers?: boolean;
}

export type FenceListener = (fenced: boolean) => void;

export class LeaseFence implements LeaseFencePort {
  private readonly now: () => number;
  private deadline: number | null = null;
  private fenced = false;
  private fencedAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly listeners = new Set<FenceListener>();
  private readonly m: { fences: Counter; state: Gauge };

  constructor(private readonly o: LeaseFenceOptions) {
    this.now = o.now ?? (() => performance.now());
    const r = o.metrics?.registry;
    this.m = {
      fences: counterOn(r, 'keng_cluster_lease_fences_total', 'Times this node fenced itself: no renewal of its lease in time, so it stopped sending commands and holding devices'),
      state: gaugeOn(r, 'keng_cluster_lease_fenced', 'Whether this node is fenced now (1: no lease renewal in time) or not (0)'),
    };
  }

  /** The monotonic time to give renewed() for a renewal sent now. */
  mark(): number { return this.now(); }

  /** A renewal sent at `sentAt` (mark()) succeeded: the new deadline; unfences. */
  renewed(sentAt: number): void {
    const deadline = sentAt + this.o.leaseMs - this.o.marginMs;
    // A slow renewal answering after a later one: the deadline never moves back.
    if (this.deadline === null || deadline > this.deadline) this.deadline = deadline;
    if (this.fenced && this.now() < this.deadline) {
      this.fenced = false;
      this.m.state.set(0);
      this.o.logger.info({ fencedForMs: Math.round(this.now() - this.fencedAt) }, 'node lease renewed: unfenced, sending commands and accepting devices again');
      this.emit(false);
    }
    this.arm();
  }

  valid(): boolean {
    const ok = this.deadline !== null && this.now() < this.deadline;
    if (!ok && !this.fenced && this.deadline !== null) this.fence();
    return ok;
  }

  /** True once fenced, until a renewal (false before the first renewal: nothing runs yet). */
  isFenced(): boolean {
    this.valid();
    return this.fenced;
  }

  /** Milliseconds until the deadline (negative: past it); null before the first renewal. */
  remainingMs(): number | null {
    return this.deadline === null ? null : Math.round(this.deadline - this.now());
  }

  /** Called with true when fenced, false when unfenced (synchronously; a throwing listener is logged). */
  onChange(fn: FenceListener): () => void {
    this.listeners.add(fn);
    return () => { this.listeners.delete(fn); };
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private fence(): void {
    this.fenced = true;
    this.fencedAt = this.now();
    this.m.fences.inc();
    this.m.state.set(1);
    this.o.logger.warn({ lateMs: Math.round(this.fencedAt - this.deadline!), leaseMs: this.o.leaseMs, marginMs: this.o.marginMs },
      'node lease not renewed in time: fenced (no command is sent, device connections are closed and refused, /readyz 503) until a renewal succeeds');
    this.emit(true);
  }

  private emit(fenced: boolean): void {
    for (const fn of this.listeners) {
      try { fn(fenced); } catch (err) { this.o.logger.error({ err }, 'lease fence listener failed'); }
    }
  }

  private arm(): void {
    if (this.o.timers === false || this.deadline === null) return;
    if (this.timer) clearTimeout(this.timer);
    // Node schedules timers from the event loop's cached time, which lags this clock by the turn under way, so the
    // timer can fire before the deadline: then it is set again, or the `fenced` event would wait for a valid() call.
    this.timer = setTimeout(() => { this.timer = null; if (this.valid()) this.arm(); }, Math.max(0, this.deadline - this.now()) + 1);
    this.timer.unref();
  }
}

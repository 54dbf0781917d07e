/**
 * The retention loop of the stores that keep readings themselves (embedded, PostgreSQL):
 * readings older than `telemetry.retentionDays` are deleted a minute after start, then every
 * hour. One pass at a time (runNow() during a pass returns that pass); a pass deletes chunk by
 * chunk through the store's `step`, yielding to the event loop between chunks so queued writes
 * run, and ends early once stop() has begun.
 */
import type { Clock, Timers } from '../../core/clock.js';
import type { Logger } from '../../core/logger.js';

export const PRUNE_INTERVAL_MS = 3_600_000;
const PRUNE_FIRST_DELAY_MS = 60_000;
const DAY_MS = 86_400_000;

/** One chunk of a pass: rows deleted, where the next chunk starts, and whether the pass is done. Null: the store is not running. */
export type PruneStep = (cutoff: number, cursor: number) => Promise<{ deleted: number; cursor: number; done: boolean } | null>;

export class RetentionLoop {
  private timer: unknown = null;
  private pass: Promise<number> | null = null;
  private stopping = false;

  constructor(private readonly o: {
    retentionDays: number; clock: Pick<Clock, 'now'>; timers: Timers; logger: Pick<Logger, 'info' | 'error'>; step: PruneStep;
  }) {}

  start(): void {
    this.stopping = false;
    this.schedule(PRUNE_FIRST_DELAY_MS);
  }

  /** Delete readings older than the retention now, chunk by chunk. Returns rows deleted. */
  runNow(): Promise<number> {
    if (this.pass) return this.pass;
    const cutoff = this.o.clock.now() - this.o.retentionDays * DAY_MS;
    this.pass = (async () => {
      let cursor = 0;
      let total = 0;
      while (!this.stopping) {
        const r = await this.o.step(cutoff, cursor);
        if (r === null) break;
        total += r.deleted; cursor = r.cursor;
        if (r.done) break;
        await new Promise((resolve) => setImmediate(resolve)); // let writes interleave
      }
      if (total) this.o.logger.info({ deleted: total, cutoff }, 'telemetry retention pruned old readings');
      return total;
    })().finally(() => { this.pass = null; });
    return this.pass;
  }

  /** No new pass; waits for the one under way (it stops at its next chunk). */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer !== null) { this.o.timers.clearTimeout(this.timer); this.timer = null; }
    await this.pass?.catch(() => 0);
  }

  private schedule(ms: number): void {
    if (this.stopping) return;
    this.timer = this.o.timers.setTimeout(() => {
      this.timer = null;
      this.runNow().catch((err: unknown) => this.o.logger.error({ err }, 'telemetry retention failed'))
        .finally(() => this.schedule(PRUNE_INTERVAL_MS));
    }, ms);
  }
}

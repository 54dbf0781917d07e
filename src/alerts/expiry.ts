/**
 * `expires` passing ends an open alert as `expired`: one timer for the next expiry, re-timed
 * after every raise and every sweep; alerts that expired while Keng was down end at start.
 *
 * Separate from AlertService because it is the one path no person starts: a timer with its own
 * lifecycle, acting as `system`.
 */
import type { Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import type { AlertRecords } from './records.js';
import type { AlertRepo } from './repo.js';

/** The longest a timer waits (setTimeout's limit is ~24.8 days). */
const MAX_TIMER_MS = 6 * 3600_000;

export interface AlertExpiryDeps {
  /** The started service's repo (null once stopped). */
  repo: () => AlertRepo | null;
  records: AlertRecords;
  clock: Clock;
  logger: Logger;
}

export class AlertExpiry {
  private timer: NodeJS.Timeout | null = null;
  /** The sweep under way (one at a time: a timer firing during a sweep joins it). */
  private running: Promise<void> | null = null;

  constructor(private readonly d: AlertExpiryDeps) {}

  /** Ends open alerts whose expiry has come, then times the next one. Never rejects (logged). */
  sweep(): Promise<void> {
    this.running ??= this.sweepOnce().catch((err: unknown) => {
      this.d.logger.error({ err }, 'alert expiry sweep failed; retried at the next expiry or raise');
    }).finally(() => { this.running = null; });
    return this.running;
  }

  private async sweepOnce(): Promise<void> {
    const repo = this.d.repo();
    if (!repo) return;
    const now = this.d.clock.now();
    const rec = this.d.records;
    for (const a of await repo.due(now)) {
      const next = rec.end(a, 'expired', undefined, 'expired');
      // Guarded: approved, cancelled or expired meanwhile (another node sweeps too) is left alone.
      await rec.step(async (s) => {
        if (!(await repo.transition(s.trx, next, { states: [a.state] }))) return;
        await rec.audit(s, 'system', 'alert.expire', a.id, { state: a.state }, { state: 'expired' });
        s.after(() => {
          rec.changed(next, 'expired');
          this.d.logger.info({ alertId: a.id }, 'alert expired');
        });
      });
    }
    await this.arm();
  }

  /** Times the sweep for the next expiry (call after an alert is raised). */
  async arm(): Promise<void> {
    const repo = this.d.repo();
    if (!repo) return;
    const next = await repo.nextExpiry();
    if (this.d.repo() !== repo) return; // stopped meanwhile
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (next === undefined) return;
    this.timer = setTimeout(() => { this.timer = null; void this.sweep(); }, Math.min(MAX_TIMER_MS, Math.max(0, next - this.d.clock.now())));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Resolves when no sweep is under way. */
  async idle(): Promise<void> {
    await this.running;
  }
}

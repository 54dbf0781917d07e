/**
 * Cancelling alerts, by the cancel route or a CAP `Cancel` message: in one step (records.ts) each
 * cancelled alert's broadcast is stopped (or, before it played, its prefetch withdrawn), the alert
 * saved and audited; after the commit the cancellation notice plays where the alert played.
 *
 * Separate from AlertService because cancelling is a path of its own through the executor
 * (stop, then a second emergency broadcast) that both the route and a Cancel message take.
 */
import { Errors } from '../core/errors.js';
import type { Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import type { BroadcastExecutor } from '../broadcast/execution/index.js';
import type { Caller } from '../broadcast/targets.js';
import type { MediaLibrary } from '../media/index.js';
import { newId } from '../rpc/ids.js';
import { ANNOUNCEMENT_LANG, announcementContent, cancellationAnnouncement } from './announcement.js';
import type { CapAlert } from './cap/index.js';
import { auditView, headlineOf, type AlertRecords, type Step } from './records.js';
import type { AlertRepo } from './repo.js';
import { FINAL_ALERT_STATES, type Alert, type AlertReach, type AlertServiceOptions } from './types.js';

export interface AlertCancellationDeps {
  /** The started service's repo (throws when not started). */
  repo: () => AlertRepo;
  records: AlertRecords;
  media: Pick<MediaLibrary, 'synthesizeSequence'>;
  executor: Pick<BroadcastExecutor, 'startBroadcast' | 'stopBroadcast' | 'preload' | 'getStored' | 'withdrawPrefetch'>;
  options: AlertServiceOptions;
  clock: Clock;
  logger: Logger;
}

export class AlertCancellation {
  constructor(private readonly d: AlertCancellationDeps) {}

  /** Cancels one open alert (checked by the caller): stopped everywhere, then the notice where it played. */
  async cancel(c: Caller, a: Alert, reason: string): Promise<Alert> {
    if (a.broadcastId) await this.d.executor.preload(a.broadcastId);
    const next = await this.d.records.step(async (s) => {
      // Decided on what was read before the await: again, in the transaction (two cancels at once cancel once).
      const current = await this.d.repo().get(a.id, s.trx);
      const done = current && !FINAL_ALERT_STATES.has(current.state) ? await this.writes(s, c, current, reason) : undefined;
      if (!done) throw Errors.CONFLICT(`alert "${a.id}" is already ${current && FINAL_ALERT_STATES.has(current.state) ? current.state : 'gone'}`);
      s.after(() => this.cancelled(done, c));
      return done;
    });
    await this.playNotice(c, next);
    return next;
  }

  /** A CAP `Cancel` message: recorded as an ended alert of its own; the open alerts it references are cancelled. */
  async applyMessage(c: Caller, cap: CapAlert, reach: AlertReach, referenced: Alert[], expiresAt: number): Promise<Alert> {
    if (referenced.length === 0) throw Errors.UNPROCESSABLE('a Cancel message must reference the alerts it cancels (references)');
    const rec = this.d.records;
    const now = this.d.clock.now();
    const msg: Alert = {
      id: newId('al', now), cap, state: 'ended', areas: reach.areas, devices: reach.devices, expiresAt,
      createdBy: c.principal.id, createdAt: now, playedAtOnce: false, endedBy: c.principal.id, endedAt: now, endReason: 'applied', updatedAt: now,
    };
    for (const r of referenced) if (r.broadcastId) await this.d.executor.preload(r.broadcastId);
    const cancelled = await rec.step(async (s) => {
      if (!(await this.d.repo().insert(s.trx, msg))) throw Errors.CONFLICT(`an alert with identifier "${cap.identifier}" already exists`);
      await rec.audit(s, c, 'alert.create', msg.id, undefined, auditView(msg));
      const out: Alert[] = [];
      for (const read of referenced) {
        const r = await this.d.repo().get(read.id, s.trx); // as it is now: one cancelled meanwhile is left as it is
        if (!r || FINAL_ALERT_STATES.has(r.state)) continue;
        const x = await this.writes(s, c, r, `cancelled by ${cap.identifier}`);
        if (x) out.push(x);
      }
      s.after(() => { for (const x of out) this.cancelled(x, c); });
      return out;
    });
    await Promise.all(cancelled.map((x) => this.playNotice(c, x)));
    return msg;
  }

  /**
   * Stops an alert's broadcast, in the caller's transaction when the executor holds it (preload it first); a failure
   * is logged, never thrown (the alert ends either way).
   */
  stopBroadcast(s: Step, id: string): void {
    const fail = (err: unknown): void => { this.d.logger.error({ err, broadcastId: id }, 'could not stop an alert broadcast'); };
    try { s.capture(() => this.d.executor.stopBroadcast(id)).catch(fail); } catch (err) { fail(err); }
  }

  /**
   * The writes of a cancellation (inside the caller's step): the alert, if it is still as read (guarded; undefined
   * when another step came first), its broadcast stopped, the audit record.
   */
  private async writes(s: Step, c: Caller, a: Alert, reason: string): Promise<Alert | undefined> {
    const next = this.d.records.end(a, 'cancelled', c.principal.id, reason);
    if (!(await this.d.repo().transition(s.trx, next, { states: [a.state] }))) return undefined;
    if (a.broadcastId) this.stopBroadcast(s, a.broadcastId);
    else if (a.mediaId !== undefined) { const m = a.mediaId; void s.capture(() => this.d.executor.withdrawPrefetch(m)); } // cancelled before it played
    await this.d.records.audit(s, c, 'alert.cancel', a.id, { state: a.state }, { state: next.state, reason });
    return next;
  }

  /** After a cancellation's commit (an after-commit callback of its step): the live feed and the log. */
  private cancelled(a: Alert, c: Caller): void {
    this.d.records.changed(a, 'cancelled', c.principal.id);
    this.d.logger.info({ alertId: a.id, by: c.principal.id, reason: a.endReason }, 'alert cancelled');
  }

  private async playNotice(c: Caller, a: Alert): Promise<void> {
    const b = a.broadcastId ? await this.d.executor.getStored(a.broadcastId) : undefined;
    if (!b) return;
    try {
      const media = await this.d.media.synthesizeSequence(cancellationAnnouncement(a.cap, { toneSec: this.d.options.toneSec }), ANNOUNCEMENT_LANG,
        { createdBy: c.principal.id, name: `Hủy cảnh báo: ${headlineOf(a.cap)}`.slice(0, 120), areas: a.areas });
      const now = this.d.clock.now();
      await this.d.executor.startBroadcast({
        id: `${a.broadcastId!}-cancel`.slice(0, 128), priority: 'emergency', volume: this.d.options.volume,
        targets: b.targets.map((t) => t.deviceId), notAfter: now + this.d.options.cancelNoticeValiditySec * 1000,
        media: announcementContent(media),
      });
    } catch (err) {
      // The alert is stopped and recorded as cancelled either way; only the spoken notice is missing.
      this.d.logger.error({ err, alertId: a.id }, 'the cancellation notice could not be played');
    }
  }
}

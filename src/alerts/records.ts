/**
 * How every step of an alert's life is recorded: the state-store writes in one durable
 * transaction (events queued by them go out once it is committed), the audit record, and the
 * 'alert.changed' event of the live feed.
 *
 * Two ways to write, both all-or-nothing (docs/design/state-window.md §5 step 4.3 moves both onto `trx`):
 * `tx` for a step that starts or stops no broadcast (its own transaction on the embedded store), and
 * `txWithBroadcasts` for one that does: a synchronous unit of the state window, so the alert rows, the
 * audit records and the broadcasts, targets and commands the step starts or stops commit together.
 *
 * Separate from AlertService because raising, deciding, cancelling and expiring (cancellation.ts,
 * expiry.ts) all record the same way: one place for it keeps them from drifting apart.
 */
import type { Clock } from '../core/clock.js';
import type { EventBus } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import type { AuditRecorder } from '../audit/log.js';
import type { Caller } from '../broadcast/targets.js';
import type { StateDb } from '../storage/state/index.js';
import type { CapAlert } from './cap/index.js';
import type { Alert, AlertState } from './types.js';

export interface AlertRecordsDeps {
  stateDb: StateDb;
  bus: Pick<EventBus, 'emit'>;
  audit: AuditRecorder;
  logger: Logger;
  clock: Clock;
  /**
   * Runs synchronous state-store writes in the state window's transaction (StateWindow.unitSync, wire.ts
   * `durable`): what they start (commands, broadcasts) commits with them. Absent: their own transaction.
   */
  batch?: <T>(fn: () => T) => Promise<T>;
}

export class AlertRecords {
  /** Events of the writes of the transaction being run, sent once it is committed. */
  private current: Array<() => void> | null = null;

  constructor(private readonly d: AlertRecordsDeps) {}

  /**
   * One transaction of its own on the embedded store, durable before it returns; events queued by the writes
   * (afterTx) go out once it is. For steps that start or stop no broadcast.
   */
  tx<T>(fn: () => T): T {
    const after: Array<() => void> = [];
    const v = this.run(fn, after);
    for (const f of after) f();
    return v;
  }

  /**
   * One transaction with the broadcasts, targets and commands `fn` starts or stops (a synchronous unit of the
   * state window), resolving once it is committed; events queued by the writes (afterTx) go out then. When `fn`
   * throws, nothing of it is stored and the promise rejects.
   */
  async txWithBroadcasts<T>(fn: () => T): Promise<T> {
    const after: Array<() => void> = [];
    const v = this.d.batch ? await this.d.batch(() => this.run(fn, after)) : this.run(fn, after);
    for (const f of after) f();
    return v;
  }

  private run<T>(fn: () => T, after: Array<() => void>): T {
    const outer = this.current;
    this.current = after;
    try {
      return this.d.stateDb.db.transaction(fn)();
    } catch (err) {
      after.length = 0;
      throw err;
    } finally {
      this.current = outer;
    }
  }

  /** Runs `f` once the transaction being run (tx(), txWithBroadcasts()) is committed; dropped if it fails. */
  afterTx(f: () => void): void {
    if (this.current) this.current.push(f);
    else f();
  }

  audit(c: Caller | 'system', action: string, id: string, before: unknown, after: unknown): void {
    try {
      this.d.audit.recordSync({
        actor: c === 'system' ? 'system' : c.principal, ...(c !== 'system' && c.ip !== undefined ? { ip: c.ip } : {}), action,
        target: `alert:${id}`, ...(before !== undefined ? { before } : {}), ...(after !== undefined ? { after } : {}),
      });
    } catch (err) {
      this.d.logger.error({ err, action, id }, 'audit record failed');
    }
  }

  changed(a: Alert, change: string, by?: string): void {
    const cap = a.cap;
    this.d.bus.emit('alert.changed', {
      alertId: a.id, identifier: cap.identifier, state: a.state, change, status: cap.status, msgType: cap.msgType,
      severity: cap.severity, urgency: cap.urgency, event: cap.event, headline: headlineOf(cap), areas: a.areas,
      ...(a.broadcastId ? { broadcastId: a.broadcastId } : {}), ...(by !== undefined ? { by } : {}), at: this.d.clock.now(),
    });
  }

  /** The alert ended now (final `state`), by `by` (none: the system) for `reason`. */
  end(a: Alert, state: AlertState, by: string | undefined, reason: string): Alert {
    const now = this.d.clock.now();
    return { ...a, state, ...(by !== undefined ? { endedBy: by } : {}), endedAt: now, endReason: reason, updatedAt: now };
  }
}

/** What the audit log keeps of a raised alert (not the whole CAP text). */
export function auditView(a: Alert): Record<string, unknown> {
  const cap = a.cap;
  return {
    identifier: cap.identifier, status: cap.status, msgType: cap.msgType, severity: cap.severity, urgency: cap.urgency,
    event: cap.event, headline: headlineOf(cap), areas: a.areas, devices: a.devices.length, expires: cap.expires, state: a.state,
  };
}

/** CAP's headline is optional (§3.2.2); the event type names the alert without one. */
export function headlineOf(cap: Pick<CapAlert, 'headline' | 'event'>): string {
  return cap.headline?.trim() || cap.event;
}

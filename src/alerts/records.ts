/**
 * How every step of an alert's life is recorded: the state-store writes in one durable
 * transaction (events queued by them go out once it is committed), the audit record, and the
 * 'alert.changed' event of the live feed.
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
  /** Runs state-store writes as one durable commit (GroupCommit.runDurably); default: as they come. */
  batch?: <T>(fn: () => T) => T;
}

export class AlertRecords {
  /** Events of writes inside the current transaction, sent once it is committed. */
  private readonly afterCommit: Array<() => void> = [];

  constructor(private readonly d: AlertRecordsDeps) {}

  /**
   * One transaction inside the state store's group commit, durable before it
   * returns; events queued by the writes (afterCommit) go out once it is.
   * Never nested: the group commit's own commit would end an outer transaction.
   */
  tx<T>(fn: () => T): T {
    const db = this.d.stateDb.db;
    const run = (): T => db.transaction(fn)();
    try {
      return this.d.batch ? this.d.batch(run) : run();
    } catch (err) {
      this.afterCommit.length = 0;
      throw err;
    } finally {
      for (const f of this.afterCommit.splice(0)) f();
    }
  }

  /** Runs `f` once the current transaction (tx()) is committed; dropped if it fails. */
  afterTx(f: () => void): void {
    this.afterCommit.push(f);
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

/**
 * How every step of an alert's life is recorded: one unit of the node's state window
 * (src/storage/state/window.ts) holding the alert rows, the audit entry and whatever the step starts
 * or stops (the broadcasts, targets and commands the executor adds to the window while the unit runs
 * join it through `Step.capture`), committed together or not at all; then the 'alert.changed' event of the live feed.
 *
 * The window's rules hold in every step: await only `trx` inside (text-to-speech, media and broadcast
 * reads happen before), conflicts decided by guarded UPDATEs (repo.ts), events and memory effects in
 * `after`. A step runs as a savepoint unit: when it fails (a conflict, the audit append) only its own
 * writes and what it added are undone, and the other writes of the window commit.
 *
 * Separate from AlertService because raising, deciding, cancelling and expiring (cancellation.ts,
 * expiry.ts) all record the same way: one place for it keeps them from drifting apart.
 */
import type { Transaction } from 'kysely';
import type { Clock } from '../core/clock.js';
import type { EventBus } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import type { AuditInput, AuditRecorder } from '../audit/log.js';
import type { Caller } from '../broadcast/targets.js';
import type { After, StateWindow } from '../storage/state/window.js';
import type { CapAlert } from './cap/index.js';
import type { Alert, AlertState } from './types.js';

export interface AlertRecordsDeps {
  /** The node's state window (the one the broadcast executor writes to). */
  window: StateWindow;
  bus: Pick<EventBus, 'emit'>;
  audit: AuditRecorder;
  logger: Logger;
  clock: Clock;
}

/**
 * What a step's function gets: the window's transaction, its after-commit registration, and `capture`: what the
 * executor adds to the window inside it (a broadcast started or stopped, decided from memory at once) joins the
 * step's transaction.
 */
export interface Step { trx: Transaction<unknown>; after: After; capture<T>(fn: () => T): T }

export class AlertRecords {
  constructor(private readonly d: AlertRecordsDeps) {}

  /**
   * One step: `fn` as a savepoint unit of the state window, made due at once (an API reply waits for it);
   * resolves after the commit with what `fn` returned, rejects (nothing of it stored) when it threw.
   */
  step<T>(fn: (s: Step) => Promise<T>): Promise<T> {
    const w = this.d.window;
    return w.durable(w.unit((trx, after) => fn({ trx, after, capture: (f) => w.capture(f) }), { savepoint: true }));
  }

  /** Appends the audit entry of a step, in its transaction (a failure fails the step). */
  async audit(s: Step, c: Caller | 'system', action: string, id: string, before: unknown, after: unknown): Promise<void> {
    const entry: AuditInput = {
      actor: c === 'system' ? 'system' : c.principal, ...(c !== 'system' && c.ip !== undefined ? { ip: c.ip } : {}), action,
      target: `alert:${id}`, ...(before !== undefined ? { before } : {}), ...(after !== undefined ? { after } : {}),
    };
    await this.d.audit.record(entry, s.trx);
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

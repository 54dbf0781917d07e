/**
 * What a rule's episode does beyond judging readings: its state written to the state store (the
 * episode before its alert is raised, so a crash in between is found again by recover()), its
 * alert raised through AlertService as the rule's system caller, or rejected when the condition
 * ends while it still waits for approval; every step audited and announced on the bus
 * ('alert.rule').
 *
 * Separate from the engine (engine.ts) because the engine decides *when* a rule fires or clears
 * from device tracks and timers, while this owns the episode's persistence and its effects on the
 * alerts, which the engine reaches only through this class.
 */
import { Errors } from '../../core/errors.js';
import type { Clock } from '../../core/clock.js';
import type { AlertRuleEvent, EventBus } from '../../core/events.js';
import type { Logger } from '../../core/logger.js';
import type { AuditRecorder } from '../../audit/log.js';
import type { AlertService } from '../service.js';
import type { AreaChains } from './areas.js';
import { pastClear, type DeviceTrack } from './condition.js';
import { staleAfterMs, type AlertRule, type RuleFiringState } from './model.js';
import { firingNote, ruleAlert, ruleCaller } from './raise.js';

/** Readings named in a live event (a province-wide rule may have hundreds of devices). */
const MAX_EVENT_READINGS = 20;
export const CONDITION_ENDED = 'condition ended';

/** A rule as the engine holds it: the rule, its episode and its devices' tracks. */
export interface RuleSlot { rule: AlertRule; state: RuleFiringState; tracks: Map<string, DeviceTrack> }

type Readings = Array<{ deviceId: string; value: number }>;

export interface RuleEpisodesDeps {
  alerts: Pick<AlertService, 'create' | 'get' | 'reject' | 'list'>;
  /** Writes a rule's episode durably. */
  saveState(s: RuleFiringState): void;
  areas: AreaChains;
  bus: Pick<EventBus, 'emit'>;
  audit: AuditRecorder;
  logger: Logger;
  clock: Clock;
  /** CAP sender of the alerts (config alerts.sender). */
  sender: string;
}

export class RuleEpisodes {
  private readonly log: Logger;

  constructor(private readonly d: RuleEpisodesDeps) {
    this.log = d.logger;
  }

  /**
   * Episodes whose alert was being raised when Keng stopped: the alert is
   * looked up by the identifier chosen for it; if it was never stored, the
   * episode did not happen and the rule starts again from its devices.
   */
  recover(slots: Iterable<RuleSlot>): void {
    for (const r of slots) {
      const s = r.state;
      if (!s.firing || s.alertId !== undefined || s.lastError !== undefined || s.identifier === undefined) continue;
      const caller = this.caller(r.rule);
      const found = this.d.alerts.list(caller, { from: (s.firingSince ?? 0) - 60_000 }).find((a) => a.cap.identifier === s.identifier);
      r.state = found ? { ...s, alertId: found.id } : withoutEpisode(s);
      this.d.saveState(r.state);
      this.log.warn({ ruleId: r.rule.id, alertId: found?.id }, found ? 'rule episode recovered after a restart' : 'rule alert was not raised before the restart; the rule starts again');
    }
  }

  /** Raises the alert of an episode already written; `current()` says whether the episode is still this one. */
  async raise(r: RuleSlot, readings: Readings, identifier: string, now: number, current: () => boolean): Promise<void> {
    const rule = r.rule;
    const caller = this.caller(rule);
    try {
      const made = ruleAlert(rule, { now, identifier, sender: this.d.sender, areaName: (c) => this.d.areas.name(c), note: firingNote(rule, readings) });
      if (!made.ok) throw Errors.UNPROCESSABLE(made.errors.map((e) => `${e.field}: ${e.message}`).join('; '));
      const alert = await this.d.alerts.create(caller, made.cap, made.reach);
      if (current()) {
        r.state = { ...r.state, alertId: alert.id };
        this.save(r);
      }
      this.audit(rule, 'alert-rule.fire', { alertId: alert.id, alertState: alert.state, readings });
      this.notify(rule, 'fired', readings, { alertId: alert.id, alertState: alert.state });
      this.log.info({ ruleId: rule.id, alertId: alert.id, state: alert.state, devices: readings.length }, 'alert rule fired');
    } catch (err) {
      const error = (err as Error).message ?? String(err);
      if (current()) {
        r.state = { ...r.state, lastError: error };
        this.save(r);
      }
      this.audit(rule, 'alert-rule.fire', { error, readings });
      this.notify(rule, 'failed', readings, { error });
      this.log.error({ err, ruleId: rule.id }, 'alert rule fired but its alert could not be raised');
    }
  }

  /** The condition ended: a pending alert is turned down, an active one stays with the people who approved it. */
  clear(r: RuleSlot): void {
    const now = this.d.clock.now();
    const rule = r.rule;
    const prev = r.state;
    // Rejected before the clearing is written: a crash in between clears (and finds the alert rejected) again.
    const alertState = prev.alertId !== undefined ? this.rejectPending(rule, prev.alertId) : undefined;
    r.state = lastEpisode(prev, now);
    this.save(r);
    const staleMs = staleAfterMs(rule);
    const readings = [...r.tracks]
      .filter(([, t]) => t.lastTs + staleMs > now && pastClear(rule.op, t.value, rule.clearThreshold))
      .map(([deviceId, t]) => ({ deviceId, value: t.value }));
    const extra = { ...(prev.alertId !== undefined ? { alertId: prev.alertId } : {}), ...(alertState !== undefined ? { alertState } : {}) };
    this.audit(rule, 'alert-rule.clear', { ...extra, firingSince: prev.firingSince, reason: CONDITION_ENDED });
    this.notify(rule, 'cleared', readings, extra);
    this.log.info({ ruleId: rule.id, ...extra }, 'alert rule cleared');
  }

  /** The rule stopped watching (disabled, moved, deleted) in an episode: the episode ends as it is. */
  end(r: RuleSlot, reason: string, persist = true): void {
    const prev = r.state;
    r.state = lastEpisode(prev, this.d.clock.now());
    if (persist) this.save(r);
    const extra = prev.alertId !== undefined ? { alertId: prev.alertId } : {};
    this.audit(r.rule, 'alert-rule.clear', { ...extra, firingSince: prev.firingSince, reason });
    this.notify(r.rule, 'cleared', [], extra);
  }

  /** The state of the rule's alert after rejecting it if it still waits for approval; undefined when it cannot be read. */
  private rejectPending(rule: AlertRule, alertId: string): string | undefined {
    const caller = this.caller(rule);
    try {
      const a = this.d.alerts.get(caller, alertId);
      if (a.state !== 'pending_approval') return a.state;
      return this.d.alerts.reject(caller, alertId, CONDITION_ENDED).state;
    } catch (err) {
      this.log.warn({ err, ruleId: rule.id, alertId }, 'alert rule: its alert could not be read or rejected');
      return undefined;
    }
  }

  private caller(rule: AlertRule) {
    return ruleCaller(rule, (code) => this.d.areas.covers(rule.area, code));
  }

  private save(r: RuleSlot): void {
    try {
      this.d.saveState(r.state);
    } catch (err) {
      this.log.error({ err, ruleId: r.rule.id }, 'alert rule state could not be written');
    }
  }

  private audit(rule: AlertRule, action: string, after: Record<string, unknown>): void {
    try {
      this.d.audit.recordSync({ actor: this.caller(rule).principal, action, target: `alert-rule:${rule.id}`, after });
    } catch (err) {
      this.log.error({ err, action, ruleId: rule.id }, 'audit record failed');
    }
  }

  private notify(rule: AlertRule, change: AlertRuleEvent['change'], readings: AlertRuleEvent['readings'], extra: Partial<AlertRuleEvent>): void {
    try {
      this.d.bus.emit('alert.rule', {
        ruleId: rule.id, name: rule.name, area: rule.area, change, field: rule.field, readings: readings.slice(0, MAX_EVENT_READINGS),
        ...extra, at: this.d.clock.now(),
      });
    } catch (err) {
      this.log.error({ err, ruleId: rule.id }, 'alert rule event listener failed');
    }
  }
}

/** The state without a current episode (firing, its start, its error). */
export function withoutEpisode(s: RuleFiringState): RuleFiringState {
  return {
    ruleId: s.ruleId, firing: false,
    ...(s.lastClearedAt !== undefined ? { lastClearedAt: s.lastClearedAt } : {}),
  };
}

/** The state once an episode is over: what it raised and when, for the cooldown and for people. */
function lastEpisode(s: RuleFiringState, clearedAt: number): RuleFiringState {
  return {
    ruleId: s.ruleId, firing: false, lastClearedAt: clearedAt,
    ...(s.lastFiredAt !== undefined ? { lastFiredAt: s.lastFiredAt } : {}),
    ...(s.identifier !== undefined ? { identifier: s.identifier } : {}),
    ...(s.alertId !== undefined ? { alertId: s.alertId } : {}),
  };
}

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
import type { AuditInput } from '../../audit/log.js';
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

/** How a firing ended: its alert raised (or its failure recorded), another node's episode found, or not written. */
export type FireOutcome = 'raised' | 'taken' | 'failed';

export interface RuleEpisodesDeps {
  alerts: Pick<AlertService, 'create' | 'get' | 'reject' | 'list'>;
  /**
   * Writes a rule's episode and/or an audit entry in one unit of the state window; resolves after the commit.
   * `claim`: the episode is written only if the stored one is not firing. Resolves false when the episode was
   * not written (claimed already, or the rule is gone).
   */
  persist(s: RuleFiringState | null, audit: AuditInput | null, claim?: boolean): Promise<boolean>;
  /** The stored episode of a rule. */
  stored(ruleId: string): Promise<RuleFiringState | undefined>;
  areas: AreaChains;
  bus: Pick<EventBus, 'emit'>;
  logger: Logger;
  clock: Clock;
  /** CAP sender of the alerts (config alerts.sender). */
  sender: string;
}

export class RuleEpisodes {
  private readonly log: Logger;
  /** Per rule, its episode's writes and effects, one after the other (a clearing written before the next firing). */
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(private readonly d: RuleEpisodesDeps) {
    this.log = d.logger;
  }

  /** Whether writes or effects of the rule's episode are under way. */
  busy(ruleId: string): boolean { return this.chains.has(ruleId); }

  /** Resolves when what was queued for the rule (every rule: no id) so far is done. */
  async idle(ruleId?: string): Promise<void> {
    if (ruleId !== undefined) await this.chains.get(ruleId);
    else await Promise.allSettled([...this.chains.values()]);
  }

  /**
   * Episodes whose alert was being raised when Keng stopped: the alert is
   * looked up by the identifier chosen for it; if it was never stored, the
   * episode did not happen and the rule starts again from its devices.
   */
  async recover(slots: Iterable<RuleSlot>): Promise<void> {
    for (const r of slots) {
      const s = r.state;
      if (!s.firing || s.alertId !== undefined || s.lastError !== undefined || s.identifier === undefined) continue;
      const caller = this.caller(r.rule);
      const found = (await this.d.alerts.list(caller, { from: (s.firingSince ?? 0) - 60_000 })).find((a) => a.cap.identifier === s.identifier);
      r.state = found ? { ...s, alertId: found.id } : withoutEpisode(s);
      await this.save(r.rule.id, r.state, null);
      this.log.warn({ ruleId: r.rule.id, alertId: found?.id }, found ? 'rule episode recovered after a restart' : 'rule alert was not raised before the restart; the rule starts again');
    }
  }

  /**
   * A firing decided in memory (`r.state`, identifier `identifier`): its episode is written (claimed: another node
   * may have fired this rule already; its episode is then taken over and nothing is raised), then its alert raised.
   * `current()` says whether the episode is still this one.
   */
  fire(r: RuleSlot, readings: Readings, identifier: string, now: number, current: () => boolean): Promise<FireOutcome> {
    const firing = r.state;
    return this.queue(r.rule.id, async (): Promise<FireOutcome> => {
      let claimed: boolean;
      try {
        claimed = await this.d.persist(firing, null, true);
      } catch (err) {
        // Without its episode on disk a restart could raise the alert twice: better not now, and again at the next reading.
        if (current()) r.state = withoutEpisode(r.state);
        this.log.error({ err, ruleId: r.rule.id }, 'alert rule could not record its firing; not raising its alert');
        return 'failed';
      }
      if (!claimed) {
        const stored = await this.d.stored(r.rule.id).catch(() => undefined);
        if (current()) r.state = stored ?? withoutEpisode(r.state);
        this.log.info({ ruleId: r.rule.id, alertId: stored?.alertId }, 'alert rule: its episode was started elsewhere (another node); not raising');
        return 'taken';
      }
      await this.raise(r, readings, identifier, now, current);
      return 'raised';
    });
  }

  /** Raises the alert of an episode already written; `current()` says whether the episode is still this one. */
  private async raise(r: RuleSlot, readings: Readings, identifier: string, now: number, current: () => boolean): Promise<void> {
    const rule = r.rule;
    const caller = this.caller(rule);
    let alert;
    try {
      const made = ruleAlert(rule, { now, identifier, sender: this.d.sender, areaName: (c) => this.d.areas.name(c), note: firingNote(rule, readings) });
      if (!made.ok) throw Errors.UNPROCESSABLE(made.errors.map((e) => `${e.field}: ${e.message}`).join('; '));
      alert = await this.d.alerts.create(caller, made.cap, made.reach);
    } catch (err) {
      const error = (err as Error).message ?? String(err);
      if (current()) r.state = { ...r.state, lastError: error };
      await this.save(rule.id, current() ? r.state : null, this.auditEntry(rule, 'alert-rule.fire', { error, readings }));
      this.notify(rule, 'failed', readings, { error });
      this.log.error({ err, ruleId: rule.id }, 'alert rule fired but its alert could not be raised');
      return;
    }
    if (current()) r.state = { ...r.state, alertId: alert.id };
    await this.save(rule.id, current() ? r.state : null, this.auditEntry(rule, 'alert-rule.fire', { alertId: alert.id, alertState: alert.state, readings }));
    this.notify(rule, 'fired', readings, { alertId: alert.id, alertState: alert.state });
    this.log.info({ ruleId: rule.id, alertId: alert.id, state: alert.state, devices: readings.length }, 'alert rule fired');
  }

  /** The condition ended: a pending alert is turned down, an active one stays with the people who approved it. */
  clear(r: RuleSlot): void {
    const now = this.d.clock.now();
    const rule = r.rule;
    const prev = r.state;
    r.state = lastEpisode(prev, now);
    const cleared = r.state;
    const staleMs = staleAfterMs(rule);
    const readings = [...r.tracks]
      .filter(([, t]) => t.lastTs + staleMs > now && pastClear(rule.op, t.value, rule.clearThreshold))
      .map(([deviceId, t]) => ({ deviceId, value: t.value }));
    void this.queue(rule.id, async () => {
      // Rejected before the clearing is written: a crash in between clears (and finds the alert rejected) again.
      const alertState = prev.alertId !== undefined ? await this.rejectPending(rule, prev.alertId) : undefined;
      const extra = { ...(prev.alertId !== undefined ? { alertId: prev.alertId } : {}), ...(alertState !== undefined ? { alertState } : {}) };
      await this.save(rule.id, cleared, this.auditEntry(rule, 'alert-rule.clear', { ...extra, firingSince: prev.firingSince, reason: CONDITION_ENDED }));
      this.notify(rule, 'cleared', readings, extra);
      this.log.info({ ruleId: rule.id, ...extra }, 'alert rule cleared');
    });
  }

  /** The rule stopped watching (disabled, moved, deleted) in an episode: the episode ends as it is. */
  end(r: RuleSlot, reason: string, persist = true): void {
    const prev = r.state;
    r.state = lastEpisode(prev, this.d.clock.now());
    const ended = r.state;
    const rule = r.rule;
    void this.queue(rule.id, async () => {
      const extra = prev.alertId !== undefined ? { alertId: prev.alertId } : {};
      await this.save(rule.id, persist ? ended : null, this.auditEntry(rule, 'alert-rule.clear', { ...extra, firingSince: prev.firingSince, reason }));
      this.notify(rule, 'cleared', [], extra);
    });
  }

  /** Runs `fn` after what is queued for the rule; never rejects the chain (a failure is `fn`'s to log). */
  private queue<T>(ruleId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(ruleId) ?? Promise.resolve();
    const p = prev.then(fn);
    const tail = p.catch((err: unknown) => { this.log.error({ err, ruleId }, 'alert rule: an episode step failed'); });
    this.chains.set(ruleId, tail);
    void tail.then(() => { if (this.chains.get(ruleId) === tail) this.chains.delete(ruleId); });
    return p;
  }

  /** The state of the rule's alert after rejecting it if it still waits for approval; undefined when it cannot be read. */
  private async rejectPending(rule: AlertRule, alertId: string): Promise<string | undefined> {
    const caller = this.caller(rule);
    try {
      const a = await this.d.alerts.get(caller, alertId);
      if (a.state !== 'pending_approval') return a.state;
      return (await this.d.alerts.reject(caller, alertId, CONDITION_ENDED)).state;
    } catch (err) {
      this.log.warn({ err, ruleId: rule.id, alertId }, 'alert rule: its alert could not be read or rejected');
      return undefined;
    }
  }

  private caller(rule: AlertRule) {
    return ruleCaller(rule, (code) => this.d.areas.covers(rule.area, code));
  }

  /** Writes the episode (null: not) and the audit entry (null: none) together; a failure is logged. */
  private async save(ruleId: string, s: RuleFiringState | null, audit: AuditInput | null): Promise<void> {
    try {
      await this.d.persist(s, audit);
    } catch (err) {
      this.log.error({ err, ruleId, action: audit?.action }, 'alert rule state could not be written');
    }
  }

  private auditEntry(rule: AlertRule, action: string, after: Record<string, unknown>): AuditInput {
    return { actor: this.caller(rule).principal, action, target: `alert-rule:${rule.id}`, after };
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

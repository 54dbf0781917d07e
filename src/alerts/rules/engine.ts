/**
 * Runs the alert rules on the readings as they become durable ('telemetry'
 * events): per rule, a track per device (condition.ts), one timer for the
 * next instant something can change without a reading (a device reaching
 * forSec, falling silent, a cooldown ending), and the rule's episode.
 *
 * Episode: a rule *fires* when at least minDevices of its devices count
 * (in condition for forSec, not silent) and its cooldown is over: it raises
 * its alert through AlertService.create as the system caller "rule:<id>" (an
 * Actual alert then waits for a person's approval). It *clears* when every
 * device still reporting is back past the clear threshold (at least one must
 * report: a rule whose devices all fall silent stays firing, since silence is
 * no evidence that the water went down): a pending alert is then rejected
 * ("condition ended"); an active one is left to the people who approved it.
 * Cooldown: no new firing within cooldownSec after the last firing or
 * clearing. One alert per episode: a rejected or expired alert is not raised
 * again while the condition lasts.
 *
 * The episode is in the state store (written before the alert is raised, so
 * a crash in between is found again at start); device tracks are in memory
 * only and start again from the next readings after a restart, an episode
 * under way then clearing no earlier than staleAfter later (clearNotBefore).
 *
 * This file judges (tracks, tallies, timers: when a rule fires or clears);
 * episodes.ts carries it out (the episode's state, its alert, audit, events).
 */
import { randomBytes } from 'node:crypto';
import type { Timers } from '../../core/clock.js';
import type { TelemetryEvent } from '../../core/events.js';
import type { Logger } from '../../core/logger.js';
import type { Device } from '../../devices/types.js';
import { forgetSilent, observe, tally } from './condition.js';
import { RuleEpisodes, type RuleEpisodesDeps, type RuleSlot } from './episodes.js';
import { staleAfterMs, type AlertRule, type RuleFiringState } from './model.js';

/** Injectable timers (src/core/clock.ts): tests drive the engine with fake time. */
export { realTimers, type Timers } from '../../core/clock.js';

/** The longest a timer waits (setTimeout's limit is ~24.8 days); it re-arms when it fires. */
const MAX_TIMER_MS = 6 * 3600_000;
export { CONDITION_ENDED } from './episodes.js';

export interface RuleEngineDeps extends RuleEpisodesDeps {
  devices: { getDevice(id: string): Pick<Device, 'area' | 'kind' | 'enabled'> | undefined };
  timers: Timers;
}

/** One device as a rule sees it (GET /api/v1/alert-rules/{id}). */
export interface RuleDeviceView { deviceId: string; value: number; ts: number; inCondition: boolean; since?: number }

interface Runtime extends RuleSlot {
  timer: unknown;
  timerAt: number | null;
  /** Its alert is being raised (text-to-speech takes a while): it is judged again once that is done. */
  raising: boolean;
  /**
   * An episode whose device tracks were lost (restart, rule changed) clears
   * no earlier than this: every device still reporting has had staleAfter to
   * be heard, so one gauge back to normal does not end it while another,
   * not heard yet, may still be high.
   */
  clearNotBefore: number;
}

export class RuleEngine {
  private readonly rules = new Map<string, Runtime>();
  private readonly byField = new Map<string, Runtime[]>();
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;
  private readonly log: Logger;
  private readonly episodes: RuleEpisodes;

  constructor(private readonly d: RuleEngineDeps) {
    this.log = d.logger;
    this.episodes = new RuleEpisodes(d);
  }

  /** The stored rules and episodes (at start). */
  load(rules: readonly AlertRule[], states: readonly RuleFiringState[]): void {
    const byId = new Map(states.map((s) => [s.ruleId, s]));
    for (const rule of rules) {
      const r = this.put(rule, byId.get(rule.id) ?? { ruleId: rule.id, firing: false });
      this.tracksLost(r);
    }
  }

  /** Episodes whose alert was being raised when Keng stopped: found again, or started over (episodes.ts). */
  recover(): Promise<void> {
    return this.episodes.recover([...this.rules.values()]);
  }

  /** Stops the timers and waits for alerts being raised (their episode is written before the store closes). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const r of this.rules.values()) this.disarm(r);
    await Promise.allSettled([...this.inFlight]);
    await this.episodes.idle();
  }

  /** Resolves when the episode writes and effects queued so far for the rule (every rule: no id) are done. */
  idle(ruleId?: string): Promise<void> {
    return this.episodes.idle(ruleId);
  }

  add(rule: AlertRule): void {
    this.put(rule, { ruleId: rule.id, firing: false });
  }

  /**
   * A changed rule. Device tracks start again when what is measured or how it
   * is judged changed; moving the rule to another area or disabling it ends
   * its episode (its alert, if any, stays with the people handling it).
   */
  update(rule: AlertRule, local = true): void {
    const r = this.rules.get(rule.id);
    if (!r) { this.add(rule); return; }
    const prev = r.rule;
    // A change made on another node (local false): that node wrote the episode's end.
    if (local && r.state.firing && (prev.area !== rule.area || !rule.enabled)) {
      this.episodes.end(r, prev.area !== rule.area ? 'rule moved to another area' : 'rule disabled');
    }
    const judged = ['area', 'kind', 'field', 'aggregate', 'op', 'threshold', 'clearThreshold', 'staleAfterSec'] as const;
    const reset = !rule.enabled || judged.some((k) => prev[k] !== rule[k]);
    this.unindex(r);
    r.rule = rule;
    this.index(r);
    if (reset) {
      r.tracks.clear();
      this.tracksLost(r);
    }
    this.disarm(r);
    this.evaluate(r);
  }

  /** A deleted rule: its episode ends; its alert, if any, stays. */
  remove(id: string, local = true): void {
    const r = this.rules.get(id);
    if (!r) return;
    if (local && r.state.firing) this.episodes.end(r, 'rule deleted', false);
    this.disarm(r);
    this.unindex(r);
    this.rules.delete(id);
  }

  /**
   * Cluster mode: the rules and episodes as stored, changed by other nodes. New rules are added with their
   * episode, changed ones updated and deleted ones removed without writing anything (the node that made the
   * change wrote its audit entries and episode ends); an episode started or ended elsewhere is taken over
   * when this node has nothing of its own under way for the rule.
   */
  sync(rules: readonly AlertRule[], states: readonly RuleFiringState[]): void {
    if (this.stopped) return;
    const byId = new Map(states.map((s) => [s.ruleId, s]));
    const seen = new Set<string>();
    for (const rule of rules) {
      seen.add(rule.id);
      const stored = byId.get(rule.id) ?? { ruleId: rule.id, firing: false };
      const r = this.rules.get(rule.id);
      if (!r) { this.tracksLost(this.put(rule, stored)); continue; }
      if (r.rule.updatedAt !== rule.updatedAt) this.update(rule, false);
      if (r.raising || this.episodes.busy(rule.id) || sameEpisode(r.state, stored)) continue;
      r.state = stored;
      this.tracksLost(r);
      this.disarm(r);
      this.evaluate(r);
    }
    for (const id of [...this.rules.keys()]) if (!seen.has(id)) this.remove(id, false);
  }

  state(id: string): RuleFiringState | undefined { return this.rules.get(id)?.state; }

  /** The devices the rule currently hears from, by id. */
  devices(id: string): RuleDeviceView[] {
    const r = this.rules.get(id);
    if (!r) return [];
    const now = this.d.clock.now();
    forgetSilent(r.tracks, now, r.rule);
    return [...r.tracks].sort(([a], [b]) => a.localeCompare(b)).map(([deviceId, t]) => ({
      deviceId, value: t.value, ts: t.lastTs, inCondition: t.inCondition, ...(t.since !== null ? { since: t.since } : {}),
    }));
  }

  /** Bus listener: never throws (it runs inside the ingest's post-commit step). */
  readonly onTelemetry = (e: TelemetryEvent): void => {
    if (this.stopped) return;
    try {
      for (const field in e.values) {
        const list = this.byField.get(field);
        if (list === undefined) continue;
        const v = e.values[field];
        if (typeof v !== 'number' || !Number.isFinite(v)) continue;
        for (const r of list) this.reading(r, e, v);
      }
    } catch (err) {
      this.log.error({ err, deviceId: e.deviceId }, 'alert rules: a reading could not be judged');
    }
  };

  /**
   * Bus listener: a device moved out of a rule's area, disabled or deleted
   * stops counting at once (not only once it falls silent); one that stays
   * keeps its track (a renamed gauge keeps its duration).
   */
  readonly onDeviceChanged = (e: { deviceId: string; change: string }): void => {
    if (this.stopped || e.change === 'created') return;
    try {
      const d = this.d.devices.getDevice(e.deviceId);
      for (const r of this.rules.values()) {
        if (!r.tracks.has(e.deviceId)) continue;
        const stays = d !== undefined && d.enabled && this.d.areas.covers(r.rule.area, d.area) && (r.rule.kind === undefined || d.kind === r.rule.kind);
        if (stays) continue;
        r.tracks.delete(e.deviceId);
        this.evaluate(r);
      }
    } catch (err) {
      this.log.error({ err, deviceId: e.deviceId }, 'alert rules: a device change could not be applied');
    }
  };

  // ------------------------------------------------------------ judging

  private reading(r: Runtime, e: TelemetryEvent, v: number): void {
    const rule = r.rule;
    if (!rule.enabled || (rule.kind !== undefined && e.kind !== rule.kind) || !this.d.areas.covers(rule.area, e.area)) return;
    // A device clock ahead of ours must not make it count before its time.
    const ts = Math.min(e.ts, this.d.clock.now());
    if (observe(r.tracks, e.deviceId, ts, v, rule, r.state.firing)) this.evaluate(r);
  }

  private evaluate(r: Runtime): void {
    if (this.stopped || r.raising || !r.rule.enabled) return;
    const now = this.d.clock.now();
    const rule = r.rule;
    const t = tally(r.tracks, now, rule);
    let wake: number | undefined;
    if (!r.state.firing) {
      if (t.counting.length >= rule.minDevices) {
        const until = this.cooldownEnd(r);
        if (until <= now) { this.fire(r, t.counting); return; }
        wake = until;
      } else {
        wake = t.nextDue;
      }
    } else if (t.fresh > 0 && t.inCondition.length === 0) {
      if (now >= r.clearNotBefore) { this.episodes.clear(r); this.evaluate(r); return; }
      wake = r.clearNotBefore;
    } else {
      // A device in condition falling silent can leave only devices that say it is over.
      wake = t.nextStale;
    }
    this.arm(r, wake);
  }

  private cooldownEnd(r: Runtime): number {
    const last = Math.max(r.state.lastFiredAt ?? -Infinity, r.state.lastClearedAt ?? -Infinity);
    return last + r.rule.cooldownSec * 1000;
  }

  // ------------------------------------------------------------ firing and clearing

  private fire(r: Runtime, counting: string[]): void {
    const now = this.d.clock.now();
    const rule = r.rule;
    const readings = counting.sort().map((id) => ({ deviceId: id, value: r.tracks.get(id)!.value }));
    const identifier = `${rule.id}.${now.toString(36)}`;
    r.state = {
      ruleId: rule.id, firing: true, firingSince: now, identifier, lastFiredAt: now,
      ...(r.state.lastClearedAt !== undefined ? { lastClearedAt: r.state.lastClearedAt } : {}),
    };
    this.disarm(r);
    r.raising = true;
    // The episode may end while the alert is raised (rule deleted, disabled, moved): then it is not written back.
    const current = (): boolean => this.rules.get(rule.id) === r && r.state.identifier === identifier;
    // Written (claimed) first, then raised (episodes.ts); a firing that could not be written waits for the next reading.
    const p: Promise<void> = this.episodes.fire(r, readings, identifier, now, current).then((outcome) => {
      r.raising = false;
      if (outcome !== 'failed' && this.rules.get(rule.id) === r) this.evaluate(r);
    }, () => { r.raising = false; }).finally(() => { this.inFlight.delete(p); });
    this.inFlight.add(p);
  }

  // ------------------------------------------------------------ plumbing

  private put(rule: AlertRule, state: RuleFiringState): Runtime {
    const r: Runtime = { rule, state, tracks: new Map(), timer: null, timerAt: null, raising: false, clearNotBefore: -Infinity };
    this.rules.set(rule.id, r);
    this.index(r);
    return r;
  }

  /** The devices' tracks are gone (restart, rule changed): an episode under way waits for them to be heard again. */
  private tracksLost(r: Runtime): void {
    r.clearNotBefore = r.state.firing ? this.d.clock.now() + staleAfterMs(r.rule) : -Infinity;
  }

  private index(r: Runtime): void {
    const list = this.byField.get(r.rule.field);
    if (list) list.push(r); else this.byField.set(r.rule.field, [r]);
  }

  private unindex(r: Runtime): void {
    const list = this.byField.get(r.rule.field);
    if (!list) return;
    const rest = list.filter((x) => x !== r);
    if (rest.length) this.byField.set(r.rule.field, rest); else this.byField.delete(r.rule.field);
  }

  /**
   * Times the next judgement. A timer already due earlier is kept: it wakes
   * early, judges, and re-arms (cheaper than re-timing at every reading).
   */
  private arm(r: Runtime, at: number | undefined): void {
    if (at === undefined || this.stopped) return;
    if (r.timer !== null && r.timerAt !== null && r.timerAt <= at) return;
    this.disarm(r);
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, at - this.d.clock.now()));
    r.timerAt = at;
    r.timer = this.d.timers.setTimeout(() => {
      r.timer = null;
      r.timerAt = null;
      forgetSilent(r.tracks, this.d.clock.now(), r.rule);
      this.evaluate(r);
    }, delay);
  }

  private disarm(r: Runtime): void {
    if (r.timer !== null) this.d.timers.clearTimeout(r.timer);
    r.timer = null;
    r.timerAt = null;
  }
}

function sameEpisode(a: RuleFiringState, b: RuleFiringState): boolean {
  return a.firing === b.firing && a.identifier === b.identifier && a.alertId === b.alertId && a.lastFiredAt === b.lastFiredAt
    && a.lastClearedAt === b.lastClearedAt && a.lastError === b.lastError;
}

/** `ar_<ms base36><12 hex>`: short, time-ordered, URL-safe. */
export function newRuleId(now: number): string {
  return `ar_${now.toString(36)}${randomBytes(6).toString('hex')}`;
}

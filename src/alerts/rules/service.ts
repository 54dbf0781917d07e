/**
 * AlertRules: the alert rules as a part of Keng (started after AlertService,
 * whose alerts they raise) and their management for the API. A rule belongs
 * to its area: a caller sees and changes the rules of its areas only (others
 * are 404), creates rules in its areas only (403), and every change is
 * audited (alert-rule.create / update / delete). The engine (engine.ts) does
 * the watching.
 */
import { Errors, withDetails } from '../../core/errors.js';
import type { Clock } from '../../core/clock.js';
import type { EventBus } from '../../core/events.js';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import type { AuditRecorder } from '../../audit/log.js';
import type { Caller } from '../../broadcast/targets.js';
import type { StateDb } from '../../storage/state/index.js';
import { AreaChains, type AreaLookup } from './areas.js';
import { RuleEngine, newRuleId, realTimers, type RuleDeviceView, type RuleEngineDeps, type Timers } from './engine.js';
import type { AlertRule, AlertRuleSpec, RuleFiringState } from './model.js';
import { AlertRuleRepo } from './repo.js';
import { ruleBodyError, validateRuleBody, validateRulePatch } from './validate.js';

export interface AlertRulesDeps {
  stateDb: StateDb;
  registry: AreaLookup & RuleEngineDeps['devices'];
  alerts: RuleEngineDeps['alerts'];
  bus: Pick<EventBus, 'on' | 'emit'>;
  audit: AuditRecorder;
  logger: Logger;
  clock: Clock;
  /** Default: real timers (unref'd). */
  timers?: Timers;
  /** CAP sender of the alerts (config alerts.sender). */
  sender: string;
}

/** A rule with where it stands now. */
export interface AlertRuleView {
  rule: AlertRule;
  state: RuleFiringState;
  /** The devices it hears from (not silent), with their values. */
  devices: RuleDeviceView[];
}

export class AlertRules implements Component {
  readonly name = 'alert-rules';
  private repo: AlertRuleRepo | null = null;
  private engine: RuleEngine | null = null;
  private off: Array<() => void> = [];
  private readonly areas: AreaChains;
  private readonly log: Logger;

  constructor(private readonly d: AlertRulesDeps) {
    this.areas = new AreaChains(d.registry);
    this.log = d.logger;
  }

  async start(): Promise<void> {
    const repo = new AlertRuleRepo(this.d.stateDb.db);
    const engine = new RuleEngine({
      alerts: this.d.alerts, areas: this.areas, devices: this.d.registry, bus: this.d.bus, audit: this.d.audit, logger: this.log, clock: this.d.clock,
      timers: this.d.timers ?? realTimers, sender: this.d.sender,
      saveState: (s) => this.write(() => repo.saveState(s, this.d.clock.now())),
    });
    engine.load(repo.list(), repo.states());
    engine.recover();
    this.repo = repo;
    this.engine = engine;
    this.off.push(this.d.bus.on('telemetry', engine.onTelemetry), this.d.bus.on('device.changed', engine.onDeviceChanged));
  }

  async stop(): Promise<void> {
    for (const off of this.off.splice(0)) off();
    await this.engine?.stop();
    this.engine = null;
    this.repo = null;
  }

  /** The rules of the caller's areas, oldest first. */
  list(c: Caller): AlertRuleView[] {
    return this.requireRepo().list().filter((r) => c.inScope(r.area)).map((r) => this.view(r));
  }

  /** 404 when unknown or outside the caller's areas. */
  get(c: Caller, id: string): AlertRuleView {
    return this.view(this.visible(c, id));
  }

  create(c: Caller, body: unknown): AlertRuleView {
    const now = this.d.clock.now();
    const v = validateRuleBody(body, now);
    if (!v.ok) throw ruleBodyError(v.errors);
    this.checkArea(c, v.value.area);
    const rule: AlertRule = { ...v.value, id: newRuleId(now), createdBy: c.principal.id, createdAt: now, updatedAt: now };
    const repo = this.requireRepo();
    this.write(() => {
      repo.insert(rule);
      repo.saveState({ ruleId: rule.id, firing: false }, now);
      this.audit(c, 'alert-rule.create', rule.id, undefined, rule);
    });
    this.requireEngine().add(rule);
    this.log.info({ ruleId: rule.id, area: rule.area, field: rule.field, by: c.principal.id }, 'alert rule created');
    return this.view(rule);
  }

  update(c: Caller, id: string, patch: unknown): AlertRuleView {
    const prev = this.visible(c, id);
    const now = this.d.clock.now();
    const v = validateRulePatch(specOf(prev), patch, now);
    if (!v.ok) throw ruleBodyError(v.errors);
    if (v.value.area !== prev.area) this.checkArea(c, v.value.area);
    const next: AlertRule = { ...v.value, id, createdBy: prev.createdBy, createdAt: prev.createdAt, updatedAt: now };
    this.write(() => {
      this.requireRepo().update(next);
      this.audit(c, 'alert-rule.update', id, prev, next);
    });
    // After the commit: the engine writes an ended episode in a commit of its own.
    this.requireEngine().update(next);
    return this.view(next);
  }

  /** The rule goes; an alert it raised stays with the people handling it. */
  delete(c: Caller, id: string): void {
    const prev = this.visible(c, id);
    this.write(() => {
      this.requireRepo().delete(id);
      this.audit(c, 'alert-rule.delete', id, prev, undefined);
    });
    this.requireEngine().remove(id);
  }

  // ------------------------------------------------------------ internals

  private visible(c: Caller, id: string): AlertRule {
    const r = this.requireRepo().get(id);
    if (!r || !c.inScope(r.area)) throw Errors.NOT_FOUND(`Alert rule "${id}"`);
    return r;
  }

  /** 422 for an unknown area, 403 for one outside the caller's areas. */
  private checkArea(c: Caller, area: string): void {
    if (!this.areas.exists(area)) throw withDetails(Errors.UNPROCESSABLE(`area "${area}" does not exist`), [{ field: 'area', message: 'unknown area' }]);
    if (!c.inScope(area)) throw withDetails(Errors.FORBIDDEN(`area "${area}" is outside your areas`), { field: 'area' });
  }

  private view(rule: AlertRule): AlertRuleView {
    const engine = this.requireEngine();
    return { rule, state: engine.state(rule.id) ?? { ruleId: rule.id, firing: false }, devices: engine.devices(rule.id) };
  }

  /**
   * One transaction of its own on the embedded store, durable before it returns (a rule's writes start no
   * broadcast: alerts are raised and rejected outside it, through AlertService).
   */
  private write<T>(fn: () => T): T {
    return this.d.stateDb.db.transaction(fn)();
  }

  private audit(c: Caller, action: string, id: string, before: unknown, after: unknown): void {
    try {
      this.d.audit.recordSync({
        actor: c.principal, ...(c.ip !== undefined ? { ip: c.ip } : {}), action, target: `alert-rule:${id}`,
        ...(before !== undefined ? { before } : {}), ...(after !== undefined ? { after } : {}),
      });
    } catch (err) {
      this.log.error({ err, action, id }, 'audit record failed');
    }
  }

  private requireRepo(): AlertRuleRepo {
    if (!this.repo) throw Errors.NOT_READY('alert rules are not started');
    return this.repo;
  }

  private requireEngine(): RuleEngine {
    if (!this.engine) throw Errors.NOT_READY('alert rules are not started');
    return this.engine;
  }
}

/** The user-given part of a rule (what a PATCH is merged into). */
function specOf(r: AlertRule): AlertRuleSpec {
  const { id: _id, createdBy: _by, createdAt: _at, updatedAt: _up, ...spec } = r;
  return spec;
}

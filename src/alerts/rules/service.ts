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
import type { AuditInput, AuditRecorder } from '../../audit/log.js';
import type { Caller } from '../../broadcast/targets.js';
import type { Db } from '../../storage/sql/db.js';
import type { After, StateWindow } from '../../storage/state/window.js';
import type { Transaction } from 'kysely';
import { AreaChains, type AreaLookup } from './areas.js';
import { RuleEngine, newRuleId, realTimers, type RuleDeviceView, type RuleEngineDeps, type Timers } from './engine.js';
import type { AlertRule, AlertRuleSpec, RuleFiringState } from './model.js';
import { AlertRuleRepo } from './repo.js';
import { ruleBodyError, validateRuleBody, validateRulePatch } from './validate.js';

export interface AlertRulesDeps {
  /** The node's state window: every change and episode is a unit of it, with its audit entry. */
  window: StateWindow;
  /** The database that window writes to (where the rules are; read outside the units). */
  windowDb: Db<unknown>;
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
  /**
   * Cluster mode: other nodes change rules too; the engine re-reads them this often (0 or absent: never, the
   * embedded store has no other writer).
   */
  resyncMs?: number;
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
  private resync: ReturnType<typeof setInterval> | null = null;
  private resyncing: Promise<void> | null = null;
  private readonly areas: AreaChains;
  private readonly log: Logger;

  constructor(private readonly d: AlertRulesDeps) {
    this.areas = new AreaChains(d.registry);
    this.log = d.logger;
  }

  async start(): Promise<void> {
    const repo = new AlertRuleRepo(this.d.windowDb);
    const engine = new RuleEngine({
      alerts: this.d.alerts, areas: this.areas, devices: this.d.registry, bus: this.d.bus, logger: this.log, clock: this.d.clock,
      timers: this.d.timers ?? realTimers, sender: this.d.sender,
      persist: (s, audit, claim) => this.step(async (trx) => {
        const written = s ? await repo.saveState(trx, s, this.d.clock.now(), claim) : true;
        if (audit && written) await this.audit(trx, audit);
        return written;
      }),
      stored: (id) => repo.state(id),
    });
    // The engine judges every reading synchronously: it holds the rules and their episodes in memory.
    engine.load(await repo.list(), await repo.states());
    this.repo = repo;
    this.engine = engine;
    await engine.recover();
    this.off.push(this.d.bus.on('telemetry', engine.onTelemetry), this.d.bus.on('device.changed', engine.onDeviceChanged));
    if (this.d.resyncMs) {
      this.resync = setInterval(() => { this.resyncing ??= this.reload().finally(() => { this.resyncing = null; }); }, this.d.resyncMs);
      this.resync.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.resync) clearInterval(this.resync);
    this.resync = null;
    await this.resyncing;
    for (const off of this.off.splice(0)) off();
    await this.engine?.stop();
    this.engine = null;
    this.repo = null;
  }

  /** The rules of the caller's areas, oldest first. */
  async list(c: Caller): Promise<AlertRuleView[]> {
    return (await this.requireRepo().list()).filter((r) => c.inScope(r.area)).map((r) => this.view(r));
  }

  /** 404 when unknown or outside the caller's areas. */
  async get(c: Caller, id: string): Promise<AlertRuleView> {
    return this.view(await this.visible(c, id));
  }

  async create(c: Caller, body: unknown): Promise<AlertRuleView> {
    const now = this.d.clock.now();
    const v = validateRuleBody(body, now);
    if (!v.ok) throw ruleBodyError(v.errors);
    this.checkArea(c, v.value.area);
    const rule: AlertRule = { ...v.value, id: newRuleId(now), createdBy: c.principal.id, createdAt: now, updatedAt: now };
    const repo = this.requireRepo();
    await this.step(async (trx, after) => {
      await repo.insert(trx, rule);
      await repo.saveState(trx, { ruleId: rule.id, firing: false }, now);
      await this.audit(trx, this.entry(c, 'alert-rule.create', rule.id, undefined, rule));
      after(() => this.engine?.add(rule));
    });
    this.log.info({ ruleId: rule.id, area: rule.area, field: rule.field, by: c.principal.id }, 'alert rule created');
    return this.view(rule);
  }

  async update(c: Caller, id: string, patch: unknown): Promise<AlertRuleView> {
    const prev = await this.visible(c, id);
    const now = this.d.clock.now();
    const v = validateRulePatch(specOf(prev), patch, now);
    if (!v.ok) throw ruleBodyError(v.errors);
    if (v.value.area !== prev.area) this.checkArea(c, v.value.area);
    const next: AlertRule = { ...v.value, id, createdBy: prev.createdBy, createdAt: prev.createdAt, updatedAt: now };
    await this.step(async (trx, after) => {
      if (!(await this.requireRepo().update(trx, next))) throw Errors.NOT_FOUND(`Alert rule "${id}"`);
      await this.audit(trx, this.entry(c, 'alert-rule.update', id, prev, next));
      // After the commit: the engine writes an ended episode in a unit of its own.
      after(() => this.engine?.update(next));
    });
    await this.requireEngine().idle(id);
    return this.view(next);
  }

  /** The rule goes; an alert it raised stays with the people handling it. */
  async delete(c: Caller, id: string): Promise<void> {
    const prev = await this.visible(c, id);
    await this.step(async (trx, after) => {
      if (!(await this.requireRepo().delete(trx, id))) throw Errors.NOT_FOUND(`Alert rule "${id}"`);
      await this.audit(trx, this.entry(c, 'alert-rule.delete', id, prev, undefined));
      after(() => this.engine?.remove(id));
    });
    await this.requireEngine().idle(id);
  }

  // ------------------------------------------------------------ internals

  /**
   * Cluster mode: rules created, changed or deleted on another node, and episodes started there, reach this
   * node's engine here (that node wrote their audit entries and episode ends: nothing is written here).
   */
  private async reload(): Promise<void> {
    const repo = this.repo;
    const engine = this.engine;
    if (!repo || !engine) return;
    try {
      const [rules, states] = [await repo.list(), await repo.states()];
      if (this.engine === engine) engine.sync(rules, states);
    } catch (err) {
      this.log.warn({ err }, 'alert rules could not be re-read; retried at the next interval');
    }
  }

  private async visible(c: Caller, id: string): Promise<AlertRule> {
    const r = await this.requireRepo().get(id);
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
   * One savepoint unit of the state window, made due at once; resolves after the commit (a rule's writes start no
   * broadcast: alerts are raised and rejected outside it, through AlertService).
   */
  private step<T>(fn: (trx: Transaction<unknown>, after: After) => Promise<T>): Promise<T> {
    const w = this.d.window;
    return w.durable(w.unit(fn, { savepoint: true }));
  }

  /** In the unit's transaction: a failure fails the unit (recorded and audited together, or neither). */
  private async audit(trx: Transaction<unknown>, e: AuditInput): Promise<void> {
    await this.d.audit.record(e, trx);
  }

  private entry(c: Caller, action: string, id: string, before: unknown, after: unknown): AuditInput {
    return {
      actor: c.principal, ...(c.ip !== undefined ? { ip: c.ip } : {}), action, target: `alert-rule:${id}`,
      ...(before !== undefined ? { before } : {}), ...(after !== undefined ? { after } : {}),
    };
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

/** Alert rules and their episodes in the state store (tables of migrations.ts). */
import type { SqliteDatabase } from '../../storage/state/db.js';
import type { AlertRule, AlertRuleSpec, RuleFiringState } from './model.js';

interface RuleRow {
  id: string;
  name: string;
  area: string;
  enabled: number;
  spec_json: string;
  created_by: string;
  created_at: number;
  updated_at: number;
}

interface StateRow {
  rule_id: string;
  firing: number;
  firing_since: number | null;
  identifier: string | null;
  alert_id: string | null;
  last_fired_at: number | null;
  last_cleared_at: number | null;
  last_error: string | null;
  updated_at: number;
}

type StoredSpec = Omit<AlertRuleSpec, 'name' | 'area' | 'enabled'>;

function toRule(r: RuleRow): AlertRule {
  const spec = JSON.parse(r.spec_json) as StoredSpec;
  return { ...spec, id: r.id, name: r.name, area: r.area, enabled: r.enabled === 1, createdBy: r.created_by, createdAt: r.created_at, updatedAt: r.updated_at };
}

function toRow(a: AlertRule): RuleRow {
  const { id, name, area, enabled, createdBy, createdAt, updatedAt, ...spec } = a;
  return { id, name, area, enabled: enabled ? 1 : 0, spec_json: JSON.stringify(spec satisfies StoredSpec), created_by: createdBy, created_at: createdAt, updated_at: updatedAt };
}

function toState(r: StateRow): RuleFiringState {
  return {
    ruleId: r.rule_id, firing: r.firing === 1,
    ...(r.firing_since !== null ? { firingSince: r.firing_since } : {}),
    ...(r.identifier !== null ? { identifier: r.identifier } : {}),
    ...(r.alert_id !== null ? { alertId: r.alert_id } : {}),
    ...(r.last_fired_at !== null ? { lastFiredAt: r.last_fired_at } : {}),
    ...(r.last_cleared_at !== null ? { lastClearedAt: r.last_cleared_at } : {}),
    ...(r.last_error !== null ? { lastError: r.last_error } : {}),
  };
}

export class AlertRuleRepo {
  constructor(private readonly db: SqliteDatabase) {}

  insert(a: AlertRule): void {
    this.db.prepare(`INSERT INTO alert_rules (id, name, area, enabled, spec_json, created_by, created_at, updated_at)
      VALUES (@id, @name, @area, @enabled, @spec_json, @created_by, @created_at, @updated_at)`).run(toRow(a));
  }

  update(a: AlertRule): void {
    this.db.prepare(`UPDATE alert_rules SET name = @name, area = @area, enabled = @enabled, spec_json = @spec_json, updated_at = @updated_at
      WHERE id = @id`).run(toRow(a));
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM alert_rules WHERE id = ?').run(id).changes > 0;
  }

  get(id: string): AlertRule | undefined {
    const r = this.db.prepare('SELECT * FROM alert_rules WHERE id = ?').get(id) as RuleRow | undefined;
    return r ? toRule(r) : undefined;
  }

  /** Oldest first. */
  list(): AlertRule[] {
    return (this.db.prepare('SELECT * FROM alert_rules ORDER BY created_at, id').all() as RuleRow[]).map(toRule);
  }

  states(): RuleFiringState[] {
    return (this.db.prepare('SELECT * FROM alert_rule_state').all() as StateRow[]).map(toState);
  }

  saveState(s: RuleFiringState, now: number): void {
    this.db.prepare(`
      INSERT INTO alert_rule_state (rule_id, firing, firing_since, identifier, alert_id, last_fired_at, last_cleared_at, last_error, updated_at)
      VALUES (@rule_id, @firing, @firing_since, @identifier, @alert_id, @last_fired_at, @last_cleared_at, @last_error, @updated_at)
      ON CONFLICT(rule_id) DO UPDATE SET firing = excluded.firing, firing_since = excluded.firing_since, identifier = excluded.identifier,
        alert_id = excluded.alert_id, last_fired_at = excluded.last_fired_at, last_cleared_at = excluded.last_cleared_at,
        last_error = excluded.last_error, updated_at = excluded.updated_at`).run({
      rule_id: s.ruleId, firing: s.firing ? 1 : 0, firing_since: s.firingSince ?? null, identifier: s.identifier ?? null,
      alert_id: s.alertId ?? null, last_fired_at: s.lastFiredAt ?? null, last_cleared_at: s.lastClearedAt ?? null,
      last_error: s.lastError ?? null, updated_at: now,
    });
  }
}

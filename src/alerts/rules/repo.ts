/**
 * Alert rules and their episodes in the state store (tables of migrations.ts, pg-schema.ts), through the `Db`
 * port (the embedded SQLite store or PostgreSQL). Writes take the caller's transaction (a unit of the state
 * window, with its audit entry); JSON is decoded here, not in SQL.
 */
import { sql } from 'kysely';
import type { Db } from '../../storage/sql/db.js';
import type { Q } from '../repo.js';
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
  return { ...spec, id: r.id, name: r.name, area: r.area, enabled: Number(r.enabled) === 1, createdBy: r.created_by, createdAt: Number(r.created_at), updatedAt: Number(r.updated_at) };
}

function toRow(a: AlertRule): RuleRow {
  const { id, name, area, enabled, createdBy, createdAt, updatedAt, ...spec } = a;
  return { id, name, area, enabled: enabled ? 1 : 0, spec_json: JSON.stringify(spec satisfies StoredSpec), created_by: createdBy, created_at: createdAt, updated_at: updatedAt };
}

function toState(r: StateRow): RuleFiringState {
  return {
    ruleId: r.rule_id, firing: Number(r.firing) === 1,
    ...(r.firing_since !== null ? { firingSince: Number(r.firing_since) } : {}),
    ...(r.identifier !== null ? { identifier: r.identifier } : {}),
    ...(r.alert_id !== null ? { alertId: r.alert_id } : {}),
    ...(r.last_fired_at !== null ? { lastFiredAt: Number(r.last_fired_at) } : {}),
    ...(r.last_cleared_at !== null ? { lastClearedAt: Number(r.last_cleared_at) } : {}),
    ...(r.last_error !== null ? { lastError: r.last_error } : {}),
  };
}

const RULE_COLUMNS = sql.raw('id, name, area, enabled, spec_json, created_by, created_at, updated_at');
const STATE_COLUMNS = sql.raw('rule_id, firing, firing_since, identifier, alert_id, last_fired_at, last_cleared_at, last_error, updated_at');

export class AlertRuleRepo {
  private readonly q: Q;

  /** `db`: the Db the state window writes to (reads outside a unit go to its Kysely). */
  constructor(private readonly db: Pick<Db<unknown>, 'kysely' | 'dialect'>) {
    this.q = db.kysely;
  }

  async insert(trx: Q, a: AlertRule): Promise<void> {
    const r = toRow(a);
    await sql`INSERT INTO alert_rules (${RULE_COLUMNS})
      VALUES (${r.id}, ${r.name}, ${r.area}, ${r.enabled}, ${r.spec_json}, ${r.created_by}, ${r.created_at}, ${r.updated_at})`.execute(trx);
  }

  /** False when the rule is gone (deleted meanwhile, on another node). */
  async update(trx: Q, a: AlertRule): Promise<boolean> {
    const r = toRow(a);
    const res = await sql<{ id: string }>`UPDATE alert_rules SET name = ${r.name}, area = ${r.area}, enabled = ${r.enabled}, spec_json = ${r.spec_json},
      updated_at = ${r.updated_at} WHERE id = ${r.id} RETURNING id`.execute(trx);
    return res.rows.length === 1;
  }

  async delete(trx: Q, id: string): Promise<boolean> {
    return (await sql<{ id: string }>`DELETE FROM alert_rules WHERE id = ${id} RETURNING id`.execute(trx)).rows.length === 1;
  }

  async get(id: string, q: Q = this.q): Promise<AlertRule | undefined> {
    const r = (await sql<RuleRow>`SELECT ${RULE_COLUMNS} FROM alert_rules WHERE id = ${id}`.execute(q)).rows[0];
    return r ? toRule(r) : undefined;
  }

  /** Oldest first. */
  async list(q: Q = this.q): Promise<AlertRule[]> {
    return (await sql<RuleRow>`SELECT ${RULE_COLUMNS} FROM alert_rules ORDER BY created_at, id`.execute(q)).rows.map(toRule);
  }

  async states(q: Q = this.q): Promise<RuleFiringState[]> {
    return (await sql<StateRow>`SELECT ${STATE_COLUMNS} FROM alert_rule_state ORDER BY rule_id`.execute(q)).rows.map(toState);
  }

  async state(ruleId: string, q: Q = this.q): Promise<RuleFiringState | undefined> {
    const r = (await sql<StateRow>`SELECT ${STATE_COLUMNS} FROM alert_rule_state WHERE rule_id = ${ruleId}`.execute(q)).rows[0];
    return r ? toState(r) : undefined;
  }

  /**
   * Writes a rule's episode. `onlyIfIdle`: only when the stored episode is not firing (a new firing claims the
   * episode: of two nodes seeing the condition, one raises the alert); false when it was not written (firing
   * already, or the rule is gone).
   */
  async saveState(trx: Q, s: RuleFiringState, now: number, onlyIfIdle = false): Promise<boolean> {
    const v = {
      firing: s.firing ? 1 : 0, firing_since: s.firingSince ?? null, identifier: s.identifier ?? null, alert_id: s.alertId ?? null,
      last_fired_at: s.lastFiredAt ?? null, last_cleared_at: s.lastClearedAt ?? null, last_error: s.lastError ?? null,
    };
    // The rule may be gone (deleted meanwhile): nothing to write then (no foreign-key error, which would abort a
    // PostgreSQL transaction). On PostgreSQL the rule row is held until the commit, so it cannot go in between.
    const lock = this.db.dialect === 'postgres' ? sql` FOR KEY SHARE` : sql``;
    if ((await sql`SELECT 1 AS x FROM alert_rules WHERE id = ${s.ruleId}${lock}`.execute(trx)).rows.length === 0) return false;
    const res = await sql<{ rule_id: string }>`
      INSERT INTO alert_rule_state (${STATE_COLUMNS})
      VALUES (${s.ruleId}, ${v.firing}, ${v.firing_since}, ${v.identifier}, ${v.alert_id}, ${v.last_fired_at}, ${v.last_cleared_at}, ${v.last_error}, ${now})
      ON CONFLICT (rule_id) DO UPDATE SET firing = excluded.firing, firing_since = excluded.firing_since, identifier = excluded.identifier,
        alert_id = excluded.alert_id, last_fired_at = excluded.last_fired_at, last_cleared_at = excluded.last_cleared_at,
        last_error = excluded.last_error, updated_at = excluded.updated_at
        ${onlyIfIdle ? sql`WHERE alert_rule_state.firing = 0` : sql``}
      RETURNING rule_id`.execute(trx);
    return res.rows.length === 1;
  }
}

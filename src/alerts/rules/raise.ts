/**
 * What a firing rule hands to AlertService.create: the caller it acts as and
 * the CAP alert made from its template.
 *
 * The caller is a system principal "rule:<id>" scoped to the rule's area: the
 * alert is checked against that area like any operator's, and its creator is
 * the rule, so any person with rights over the area may approve it (the two
 * people of a real alert are then the rule and that person).
 */
import type { Principal } from '../../auth/types.js';
import type { Caller } from '../../broadcast/targets.js';
import { areaHints, newCapAlert, validateAlertBody, type AlertBody, type CapAlert, type FieldError } from '../cap/index.js';
import type { AlertReach } from '../types.js';
import type { AlertRule, AlertRuleSpec } from './model.js';

/** Principal id of a rule (the alert's createdBy, the audit log's actor). */
export const ruleActorId = (ruleId: string): string => `rule:${ruleId}`;

export function ruleCaller(rule: Pick<AlertRule, 'id' | 'area'>, inArea: (area: string) => boolean): Caller {
  // role operator, not admin: an admin principal is every area's, whatever its `areas` say (auth/policy.ts).
  const principal: Principal = { kind: 'system', id: ruleActorId(rule.id), role: 'operator', areas: [rule.area] };
  return { principal, inScope: inArea };
}

/** The JSON alert body of a rule's template (what `POST /api/v1/alerts` would take). */
export function alertBodyOf(rule: AlertRuleSpec, now: number, note?: string): AlertBody {
  const t = rule.alert;
  return {
    status: t.status, msgType: 'Alert', event: t.event, severity: t.severity, urgency: t.urgency, certainty: t.certainty,
    headline: t.headline,
    ...(t.description !== undefined ? { description: t.description } : {}),
    ...(t.instruction !== undefined ? { instruction: t.instruction } : {}),
    ...(t.category !== undefined ? { category: t.category } : {}),
    ...(t.repeat !== undefined ? { repeat: t.repeat } : {}),
    ...(note !== undefined ? { note } : {}),
    areas: [rule.area],
    expires: now + t.expiresAfterSec * 1000,
  };
}

export interface RuleAlertOptions {
  now: number;
  identifier: string;
  /** CAP sender (config alerts.sender). */
  sender: string;
  areaName?: (code: string) => string | undefined;
  /** What the devices said, for the CAP note (staff read it; it is not spoken). */
  note?: string;
}

/** The rule's alert, or the field errors that keep it from being one. */
export function ruleAlert(rule: AlertRuleSpec, o: RuleAlertOptions): { ok: true; cap: CapAlert; reach: AlertReach } | { ok: false; errors: FieldError[] } {
  const v = validateAlertBody(alertBodyOf(rule, o.now, o.note), { now: o.now, ...(o.areaName ? { areaName: o.areaName } : {}) });
  if (!v.ok) return v;
  const cap = newCapAlert(v.value, { identifier: o.identifier, sender: o.sender, sent: o.now });
  return { ok: true, cap, reach: { areas: areaHints(cap).areaCodes, devices: [] } };
}

const NOTE_MAX = 1000;

/** "Cảnh báo tự động theo quy tắc …": the rule and the readings that made it fire. */
export function firingNote(rule: Pick<AlertRule, 'name' | 'field'>, readings: ReadonlyArray<{ deviceId: string; value: number }>): string {
  const values = readings.map((r) => `${r.deviceId} ${formatValue(r.value)}`).join(', ');
  const s = `Cảnh báo tự động theo quy tắc "${rule.name}": ${rule.field} ${values}`;
  return s.length <= NOTE_MAX ? s : `${s.slice(0, NOTE_MAX - 1)}…`;
}

export function formatValue(v: number): string {
  return Number.isInteger(v) ? String(v) : String(Math.round(v * 100) / 100);
}

/**
 * Rule bodies checked and normalised (defaults applied), every field error
 * at once. Besides the schema (model.ts): the clear threshold must lie on the
 * "back" side of the threshold, and the template must make a valid CAP alert
 * (checked by making one, so the rule cannot fail at the moment it fires for
 * a reason known today).
 */
import { Errors, withDetails, type KengError } from '../../core/errors.js';
import { shapeErrors, type FieldError } from '../../core/schema.js';
import { hasNonXmlChar, type Validation } from '../cap/index.js';
import {
  AlertRuleBodyShape, AlertRulePatchShape, DEFAULT_COOLDOWN_SEC, DEFAULT_EXPIRES_AFTER_SEC, type AlertRuleSpec, type RuleAlertTemplate,
} from './model.js';
import { ruleAlert } from './raise.js';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Check a `POST /api/v1/alert-rules` body. */
export function validateRuleBody(input: unknown, now: number): Validation<AlertRuleSpec> {
  const errors = shapeErrors(AlertRuleBodyShape, input);
  if (errors.length > 0 || !isObject(input)) return { ok: false, errors };
  const b = input as unknown as AlertRuleSpec & { alert: RuleAlertTemplate };
  const spec: AlertRuleSpec = {
    name: b.name.trim(), area: b.area, field: b.field, aggregate: b.aggregate ?? 'value', op: b.op,
    threshold: b.threshold, clearThreshold: b.clearThreshold ?? b.threshold,
    forSec: b.forSec ?? 0, minDevices: b.minDevices ?? 1, cooldownSec: b.cooldownSec ?? DEFAULT_COOLDOWN_SEC,
    alert: template(b.alert), enabled: b.enabled ?? true,
  };
  if (b.kind !== undefined) spec.kind = b.kind;
  if (b.staleAfterSec !== undefined) spec.staleAfterSec = b.staleAfterSec;

  const above = spec.op === '>' || spec.op === '>=';
  if (above && spec.clearThreshold > spec.threshold) {
    errors.push({ field: 'clearThreshold', message: `must be at or below threshold (${spec.threshold}) for a "${spec.op}" rule: the value falls back past it to clear` });
  }
  if (!above && spec.clearThreshold < spec.threshold) {
    errors.push({ field: 'clearThreshold', message: `must be at or above threshold (${spec.threshold}) for a "${spec.op}" rule: the value rises back past it to clear` });
  }
  if (hasNonXmlChar(spec.name)) errors.push({ field: 'name', message: 'contains a control character that CAP (XML) cannot carry' });
  const trial = ruleAlert(spec, { now, identifier: 'trial', sender: 'trial' });
  if (!trial.ok) for (const e of trial.errors) errors.push({ field: templateField(e.field), message: e.message });
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value: spec };
}

/**
 * Check a `PATCH` body against the rule it changes: the patch's fields
 * replace the rule's (`alert` field by field; null removes an optional
 * field), then the whole rule is checked as a new one would be.
 */
export function validateRulePatch(prev: AlertRuleSpec, patch: unknown, now: number): Validation<AlertRuleSpec> {
  const errors = shapeErrors(AlertRulePatchShape, patch);
  if (errors.length > 0 || !isObject(patch)) return { ok: false, errors };
  const merged: Record<string, unknown> = { ...prev, alert: { ...prev.alert } };
  for (const [k, v] of Object.entries(patch)) {
    if (k === 'alert') continue;
    if (v === null) delete merged[k]; else merged[k] = v;
  }
  if (isObject(patch.alert)) {
    const alert = merged.alert as Record<string, unknown>;
    for (const [k, v] of Object.entries(patch.alert)) {
      if (v === null) delete alert[k]; else alert[k] = v;
    }
  }
  return validateRuleBody(merged, now);
}

/** The 400 error for a rule body's field errors (details = the list). */
export function ruleBodyError(errors: FieldError[]): KengError {
  const summary = errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)).join('; ');
  return withDetails(Errors.VALIDATION(summary), errors);
}

function template(t: RuleAlertTemplate): RuleAlertTemplate {
  const out: RuleAlertTemplate = {
    status: t.status ?? 'Actual', event: t.event.trim(), severity: t.severity, urgency: t.urgency, certainty: t.certainty,
    headline: t.headline.trim(), expiresAfterSec: t.expiresAfterSec ?? DEFAULT_EXPIRES_AFTER_SEC,
  };
  if (t.description !== undefined) out.description = t.description.trim();
  if (t.instruction !== undefined) out.instruction = t.instruction.trim();
  if (t.category !== undefined) out.category = [...t.category];
  if (t.repeat !== undefined) out.repeat = t.repeat;
  return out;
}

/** A field of the trial alert body as the rule body names it. */
function templateField(field: string): string {
  if (field.startsWith('areas')) return 'area';
  if (field === 'expires') return 'alert.expiresAfterSec';
  return field ? `alert.${field}` : 'alert';
}

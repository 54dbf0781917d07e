/**
 * Alert rules: a threshold on one telemetry field of the devices of an area
 * that, held long enough by enough devices, raises an alert on that area
 * (docs/alerts.md "Sensor-triggered warnings").
 *
 * The TypeBox schemas below are both what the API publishes in OpenAPI and
 * what the service checks bodies with (every field error at once, as the
 * alert and schedule bodies do). What a schema cannot say is checked in
 * validate.ts: the side of the clear threshold, and that the alert template
 * makes a valid CAP alert.
 */
import { Type, type TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { StringEnum } from '../../core/schema.js';
import type { DeviceKind } from '../../devices/types.js';
import {
  AREA_CODE_PATTERN, CAP_CATEGORIES, CAP_CERTAINTIES, CAP_SEVERITIES, CAP_URGENCIES, KENG_STATUSES, MAX_REPEAT, MIN_REPEAT, TEXT_LIMITS,
  type CapCategory, type CapCertainty, type CapSeverity, type CapStatus, type CapUrgency,
} from '../cap/index.js';

export const RULE_OPS = ['>', '>=', '<', '<='] as const;
export type RuleOp = (typeof RULE_OPS)[number];
/**
 * value: each reading as it is (a water level).
 * rate_per_hour: the sum of the device's readings of the last hour, for
 * gauges that report the rain fallen since their previous message (as
 * Keng's simulator sends rain_mm); a gauge that sends 0 when it is dry keeps
 * the sum current (it is recomputed at each reading).
 */
export const RULE_AGGREGATES = ['value', 'rate_per_hour'] as const;
export type RuleAggregate = (typeof RULE_AGGREGATES)[number];
export const DEVICE_KINDS = ['sensor', 'speaker', 'gateway'] as const satisfies readonly DeviceKind[];

export const RULE_LIMITS = {
  name: 120, forSec: 86_400, minDevices: 1000, cooldownSec: 7 * 86_400, staleAfterSec: 7 * 86_400,
  expiresAfterSec: 7 * 86_400, minExpiresAfterSec: 60, minStaleAfterSec: 10,
} as const;
export const DEFAULT_COOLDOWN_SEC = 3600;
export const DEFAULT_EXPIRES_AFTER_SEC = 6 * 3600;
/**
 * A device stops counting after max(2 × forSec, this) without a reading,
 * unless the rule sets staleAfterSec: long enough for gauges that report
 * every 10 minutes, with some delay.
 */
export const MIN_DEFAULT_STALE_SEC = 900;

/** What the alert a rule raises says (the CAP fields a commune sets; areas and expiry come from the rule). */
export interface RuleAlertTemplate {
  /** Actual: waits for a person's approval like any real alert; Exercise and Test play at once. */
  status: CapStatus;
  event: string;
  severity: CapSeverity;
  urgency: CapUrgency;
  certainty: CapCertainty;
  headline: string;
  description?: string;
  instruction?: string;
  category?: CapCategory[];
  /** The alert expires this long after it is raised. */
  expiresAfterSec: number;
  repeat?: number;
}

/** A rule as the user gives it, defaults applied. */
export interface AlertRuleSpec {
  name: string;
  /** The area it watches (with its villages) and warns. */
  area: string;
  /** Only devices of this kind; absent: any. */
  kind?: DeviceKind;
  field: string;
  aggregate: RuleAggregate;
  op: RuleOp;
  threshold: number;
  /** Hysteresis: a device in condition leaves it only once its value is past this (below it for > and >=, above it for < and <=). */
  clearThreshold: number;
  /** How long each device must stay in condition before it counts. */
  forSec: number;
  /** How many devices of the area must count at once. */
  minDevices: number;
  /** No new alert from this rule within this long after it fired or cleared. */
  cooldownSec: number;
  /** A device without a reading for this long stops counting; absent: max(2 × forSec, 900 s). */
  staleAfterSec?: number;
  alert: RuleAlertTemplate;
  enabled: boolean;
}

export interface AlertRule extends AlertRuleSpec {
  id: string;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
}

/** What survives a restart of a rule's episode (table alert_rule_state). */
export interface RuleFiringState {
  ruleId: string;
  /** In an episode: fired and not yet cleared. */
  firing: boolean;
  firingSince?: number;
  /** CAP identifier of the episode's alert, chosen before it is raised (finds it again after a crash). */
  identifier?: string;
  alertId?: string;
  lastFiredAt?: number;
  lastClearedAt?: number;
  /** Why the episode's alert could not be raised. */
  lastError?: string;
}

export function staleAfterMs(r: Pick<AlertRuleSpec, 'forSec' | 'staleAfterSec'>): number {
  return (r.staleAfterSec ?? Math.max(2 * r.forSec, MIN_DEFAULT_STALE_SEC)) * 1000;
}

// ---------------------------------------------------------------- schemas

const oneOf = (values: readonly string[]) => `must be one of: ${values.join(', ')}`;
const text = (max: number, description: string) => Type.String({
  minLength: 1, maxLength: max, pattern: '\\S', description, 'x-message': `must be 1-${max} characters, not only spaces`,
});
const int = (min: number, max: number, description: string, extra: Record<string, unknown> = {}) => Type.Integer({
  minimum: min, maximum: max, description, 'x-message': `must be an integer ${min}-${max}`, ...extra,
});
const nullable = (s: TSchema) => Type.Union([s, Type.Null()], { description: `${(s as { description?: string }).description ?? ''} (null removes it)`.trim() });

const templateProps = {
  status: StringEnum(KENG_STATUSES, {
    default: 'Actual', description: 'Actual (default): waits for a person\'s approval like any real alert; Exercise and Test play at once',
    'x-message': oneOf(KENG_STATUSES),
  }),
  event: text(TEXT_LIMITS.event, 'The kind of event, e.g. "Lũ"'),
  severity: StringEnum(CAP_SEVERITIES, { 'x-message': oneOf(CAP_SEVERITIES) }),
  urgency: StringEnum(CAP_URGENCIES, { 'x-message': oneOf(CAP_URGENCIES) }),
  certainty: StringEnum(CAP_CERTAINTIES, { 'x-message': oneOf(CAP_CERTAINTIES) }),
  headline: text(TEXT_LIMITS.headline, 'Short title, read aloud first'),
  description: text(TEXT_LIMITS.description, 'What is happening'),
  instruction: text(TEXT_LIMITS.instruction, 'What people should do'),
  category: Type.Array(StringEnum(CAP_CATEGORIES, { 'x-message': oneOf(CAP_CATEGORIES) }), {
    minItems: 1, maxItems: CAP_CATEGORIES.length, uniqueItems: true, description: 'CAP categories, e.g. ["Met"]; default ["Safety"]',
    'x-message': 'must be a list of distinct CAP categories',
  }),
  expiresAfterSec: int(RULE_LIMITS.minExpiresAfterSec, RULE_LIMITS.expiresAfterSec, 'The alert expires this long after it is raised', { default: DEFAULT_EXPIRES_AFTER_SEC }),
  repeat: int(MIN_REPEAT, MAX_REPEAT, 'How many times the message plays'),
};

export const RuleAlertTemplateSchema = Type.Object({
  ...templateProps,
  status: Type.Optional(templateProps.status),
  description: Type.Optional(templateProps.description),
  instruction: Type.Optional(templateProps.instruction),
  category: Type.Optional(templateProps.category),
  expiresAfterSec: Type.Optional(templateProps.expiresAfterSec),
  repeat: Type.Optional(templateProps.repeat),
}, {
  additionalProperties: false, description: 'The alert the rule raises on its area (CAP fields; areas and expiry come from the rule)',
  'x-message': { type: 'must be a JSON object' },
});

const ruleProps = {
  name: text(RULE_LIMITS.name, 'For people, e.g. "Mực nước sông Tân Lập"'),
  area: Type.String({ pattern: AREA_CODE_PATTERN, description: 'The area it watches (with its villages) and warns', 'x-message': 'not a valid area code' }),
  kind: StringEnum(DEVICE_KINDS, { description: 'Only devices of this kind (default: any)', 'x-message': oneOf(DEVICE_KINDS) }),
  field: Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_]{0,63}$', description: 'The telemetry field, e.g. water_level_cm, rain_mm', 'x-message': 'not a valid field name' }),
  aggregate: StringEnum(RULE_AGGREGATES, {
    default: 'value', 'x-message': oneOf(RULE_AGGREGATES),
    description: 'value: each reading; rate_per_hour: sum of the device\'s readings of the last hour (rain gauges that report the rain since their previous message)',
  }),
  op: StringEnum(RULE_OPS, { description: 'The condition: value op threshold', 'x-message': oneOf(RULE_OPS) }),
  threshold: Type.Number({ description: 'A device enters the condition when its value passes this', 'x-message': 'must be a number' }),
  clearThreshold: Type.Number({
    description: 'Hysteresis: a device leaves the condition only once its value is past this (below it for > and >=, above it for < and <=); default: threshold',
    'x-message': 'must be a number',
  }),
  forSec: int(0, RULE_LIMITS.forSec, 'How long each device must stay in condition before it counts', { default: 0 }),
  minDevices: int(1, RULE_LIMITS.minDevices, 'How many devices of the area must count at once (several devices agreeing)', { default: 1 }),
  cooldownSec: int(0, RULE_LIMITS.cooldownSec, 'No new alert from this rule within this long after it fired or cleared', { default: DEFAULT_COOLDOWN_SEC }),
  staleAfterSec: int(RULE_LIMITS.minStaleAfterSec, RULE_LIMITS.staleAfterSec, 'A device without a reading for this long stops counting (default: max(2 × forSec, 900))'),
  enabled: Type.Boolean({ default: true, 'x-message': 'must be true or false' }),
};

/** `POST /api/v1/alert-rules`. */
export const AlertRuleBodySchema = Type.Object({
  name: ruleProps.name,
  area: ruleProps.area,
  kind: Type.Optional(ruleProps.kind),
  field: ruleProps.field,
  aggregate: Type.Optional(ruleProps.aggregate),
  op: ruleProps.op,
  threshold: ruleProps.threshold,
  clearThreshold: Type.Optional(ruleProps.clearThreshold),
  forSec: Type.Optional(ruleProps.forSec),
  minDevices: Type.Optional(ruleProps.minDevices),
  cooldownSec: Type.Optional(ruleProps.cooldownSec),
  staleAfterSec: Type.Optional(ruleProps.staleAfterSec),
  alert: RuleAlertTemplateSchema,
  enabled: Type.Optional(ruleProps.enabled),
}, {
  additionalProperties: false,
  description: 'A sensor rule: raises an alert on its area when enough devices pass a threshold long enough (docs/alerts.md)',
  'x-message': { type: 'must be a JSON object' },
});

/** `PATCH /api/v1/alert-rules/{id}`: the fields that change; `alert` is merged field by field; null removes an optional field. */
export const AlertRulePatchSchema = Type.Object({
  name: Type.Optional(ruleProps.name),
  area: Type.Optional(ruleProps.area),
  kind: Type.Optional(nullable(ruleProps.kind)),
  field: Type.Optional(ruleProps.field),
  aggregate: Type.Optional(ruleProps.aggregate),
  op: Type.Optional(ruleProps.op),
  threshold: Type.Optional(ruleProps.threshold),
  clearThreshold: Type.Optional(ruleProps.clearThreshold),
  forSec: Type.Optional(ruleProps.forSec),
  minDevices: Type.Optional(ruleProps.minDevices),
  cooldownSec: Type.Optional(ruleProps.cooldownSec),
  staleAfterSec: Type.Optional(nullable(ruleProps.staleAfterSec)),
  alert: Type.Optional(Type.Object({
    status: Type.Optional(templateProps.status),
    event: Type.Optional(templateProps.event),
    severity: Type.Optional(templateProps.severity),
    urgency: Type.Optional(templateProps.urgency),
    certainty: Type.Optional(templateProps.certainty),
    headline: Type.Optional(templateProps.headline),
    description: Type.Optional(nullable(templateProps.description)),
    instruction: Type.Optional(nullable(templateProps.instruction)),
    category: Type.Optional(nullable(templateProps.category)),
    expiresAfterSec: Type.Optional(templateProps.expiresAfterSec),
    repeat: Type.Optional(nullable(templateProps.repeat)),
  }, { additionalProperties: false, description: 'Template fields to change', 'x-message': { type: 'must be a JSON object' } })),
  enabled: Type.Optional(ruleProps.enabled),
}, {
  additionalProperties: false, minProperties: 1, description: 'The fields of the rule to change',
  'x-message': { type: 'must be a JSON object', minProperties: 'nothing to change' },
});

export const AlertRuleBodyShape = Compile(AlertRuleBodySchema);
export const AlertRulePatchShape = Compile(AlertRulePatchSchema);

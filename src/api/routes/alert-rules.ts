/**
 * Sensor rules that raise alerts (OpenAPI at /docs, tag alerts; docs/alerts.md
 * "Sensor-triggered warnings"). Reading needs alerts.read, changing
 * alerts.write, both within the rule's area: rules elsewhere are 404. Thin:
 * AlertRules checks bodies (every field error at once), scope and audits.
 */
import { Type, type Static } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { formatTime } from '../../core/time.js';
import {
  AlertRuleBodySchema, AlertRulePatchSchema, DEVICE_KINDS, RULE_AGGREGATES, RULE_OPS, RuleAlertTemplateSchema, type AlertRules, type AlertRuleView,
} from '../../alerts/rules/index.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, Described, StringEnum, Time, errorResponses } from '../schemas.js';
import { callerOf, checkedByService } from './schedules.js';

export interface AlertRuleRouteOptions { ctx: RouteContext; rules: AlertRules }

const RuleState = Type.Object({
  firing: Type.Boolean({ description: 'In an episode: fired, and not every device is back past the clear threshold yet' }),
  firingSince: Type.Optional(Time),
  alertId: Type.Optional(Type.String({ description: 'The alert of the current (or last) episode' })),
  lastFiredAt: Type.Optional(Time),
  lastClearedAt: Type.Optional(Time),
  cooldownUntil: Type.Optional(Type.String({ description: 'No new alert from this rule before this time' })),
  lastError: Type.Optional(Type.String({ description: 'Why the current episode\'s alert could not be raised' })),
});

const RuleDevice = Type.Object({
  deviceId: Type.String(),
  value: Type.Number({ description: 'The value judged: the last reading, or the sum of the last hour for rate_per_hour' }),
  ts: Time,
  inCondition: Type.Boolean(),
  since: Type.Optional(Type.String({ description: 'In condition since' })),
});

const AlertRuleDto = Type.Object({
  id: Type.String(),
  name: Type.String(),
  area: Type.String(),
  kind: Type.Optional(StringEnum(DEVICE_KINDS)),
  field: Type.String(),
  aggregate: StringEnum(RULE_AGGREGATES),
  op: StringEnum(RULE_OPS),
  threshold: Type.Number(),
  clearThreshold: Type.Number(),
  forSec: Type.Integer(),
  minDevices: Type.Integer(),
  cooldownSec: Type.Integer(),
  staleAfterSec: Type.Optional(Type.Integer()),
  alert: RuleAlertTemplateSchema,
  enabled: Type.Boolean(),
  createdBy: Type.String(),
  createdAt: Time,
  updatedAt: Time,
  state: RuleState,
  devices: Type.Array(RuleDevice, { description: 'The devices the rule hears from (not silent)' }),
});
type AlertRuleDtoT = Static<typeof AlertRuleDto>;

const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128, description: 'Alert rule id' }) });

export const alertRuleRoutes: FastifyPluginAsyncTypebox<AlertRuleRouteOptions> = async (app, { ctx, rules }) => {
  const { policy, tz, clock } = ctx;
  const dto = (v: AlertRuleView) => alertRuleDto(v, tz, clock.now());

  app.post('/alert-rules', {
    validatorCompiler: checkedByService,
    schema: {
      tags: ['alerts'], summary: 'Create a sensor rule that raises an alert', security: [{ bearer: [] }], body: AlertRuleBodySchema,
      description: 'When at least minDevices devices of the area have had field op threshold for forSec, the rule raises its alert on the area '
        + '(an Actual alert waits for a person\'s approval); when every device still reporting is back past clearThreshold, a pending alert is rejected. See docs/alerts.md.',
      response: { 201: Described(AlertRuleDto, 'The rule'), ...errorResponses(...AUTH_ERRORS, 422, 503) },
    },
  }, async (req, reply) => {
    policy.assert(principalOf(req), 'alerts.write');
    const v = await rules.create(callerOf(req, ctx), req.body);
    reply.status(201).header('location', `/api/v1/alert-rules/${encodeURIComponent(v.rule.id)}`);
    return dto(v);
  });

  app.get('/alert-rules', {
    schema: {
      tags: ['alerts'], summary: 'The sensor rules of your areas, oldest first', security: [{ bearer: [] }],
      response: { 200: Type.Array(AlertRuleDto), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'alerts.read');
    return (await rules.list(callerOf(req, ctx))).map(dto);
  });

  app.get('/alert-rules/:id', {
    schema: {
      tags: ['alerts'], summary: 'One sensor rule, with where it stands', security: [{ bearer: [] }], params: IdParams,
      response: { 200: AlertRuleDto, ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'alerts.read');
    return dto(await rules.get(callerOf(req, ctx), req.params.id));
  });

  app.patch('/alert-rules/:id', {
    validatorCompiler: checkedByService,
    schema: {
      tags: ['alerts'], summary: 'Change a sensor rule (thresholds, timing, template, enable/disable)', security: [{ bearer: [] }],
      params: IdParams, body: AlertRulePatchSchema,
      description: 'Disabling a rule or moving it to another area ends its episode; an alert it raised stays as it is.',
      response: { 200: AlertRuleDto, ...errorResponses(...AUTH_ERRORS, 404, 422, 503) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'alerts.write');
    return dto(await rules.update(callerOf(req, ctx), (req.params as { id: string }).id, req.body));
  });

  app.delete('/alert-rules/:id', {
    schema: {
      tags: ['alerts'], summary: 'Delete a sensor rule', security: [{ bearer: [] }], params: IdParams,
      description: 'An alert the rule raised stays as it is.',
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req, reply) => {
    policy.assert(principalOf(req), 'alerts.write');
    await rules.delete(callerOf(req, ctx), req.params.id);
    return reply.status(204).send(null);
  });
};

function alertRuleDto(v: AlertRuleView, tz: string, now: number): AlertRuleDtoT {
  const t = (ms: number) => formatTime(ms, tz);
  const { rule: r, state: s } = v;
  const last = Math.max(s.lastFiredAt ?? -Infinity, s.lastClearedAt ?? -Infinity);
  const cooldownUntil = last + r.cooldownSec * 1000;
  return {
    id: r.id, name: r.name, area: r.area, ...(r.kind !== undefined ? { kind: r.kind } : {}), field: r.field, aggregate: r.aggregate, op: r.op,
    threshold: r.threshold, clearThreshold: r.clearThreshold, forSec: r.forSec, minDevices: r.minDevices, cooldownSec: r.cooldownSec,
    ...(r.staleAfterSec !== undefined ? { staleAfterSec: r.staleAfterSec } : {}),
    alert: r.alert, enabled: r.enabled, createdBy: r.createdBy, createdAt: t(r.createdAt), updatedAt: t(r.updatedAt),
    state: {
      firing: s.firing,
      ...(s.firingSince !== undefined && s.firing ? { firingSince: t(s.firingSince) } : {}),
      ...(s.alertId !== undefined ? { alertId: s.alertId } : {}),
      ...(s.lastFiredAt !== undefined ? { lastFiredAt: t(s.lastFiredAt) } : {}),
      ...(s.lastClearedAt !== undefined ? { lastClearedAt: t(s.lastClearedAt) } : {}),
      ...(!s.firing && Number.isFinite(cooldownUntil) && cooldownUntil > now ? { cooldownUntil: t(cooldownUntil) } : {}),
      ...(s.lastError !== undefined ? { lastError: s.lastError } : {}),
    },
    devices: v.devices.map((d) => ({
      deviceId: d.deviceId, value: d.value, ts: t(d.ts), inCondition: d.inCondition, ...(d.since !== undefined ? { since: t(d.since) } : {}),
    })),
  };
}

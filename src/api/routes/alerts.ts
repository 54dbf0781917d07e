/**
 * Emergency alerts (OpenAPI at /docs, tag alerts; docs/alerts.md): raise
 * from JSON or CAP 1.2 XML, approve (a second person), reject, cancel, read
 * as JSON or CAP XML, the admin's play-at-once policy, and the public CAP
 * Atom feed. Routes are thin: the CAP module reads and writes the messages,
 * AlertService decides.
 */
import { Type, type Static } from 'typebox';
import type { FastifyInstance } from 'fastify';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Errors } from '../../core/errors.js';
import { formatCapTime, formatTime } from '../../core/time.js';
import { newId } from '../../rpc/ids.js';
import type { Alert, AlertService } from '../../alerts/index.js';
import {
  ALERT_STATES, AlertBodySchema, CAP_MEDIA_TYPE, DEFAULT_FEED_PATH, alertBodyError, areaHints, atomFeed, formatReference, newCapAlert, parseCapXml,
  resolveReach, toAlertJson, validateAlertBody, writeCapXml,
} from '../../alerts/index.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, Described, StringEnum, Time, TimeInput, errorResponses } from '../schemas.js';
import { callerOf, checkedByService } from './schedules.js';
import { parseTime } from '../../core/time.js';

export interface AlertRouteOptions { ctx: RouteContext; alerts: AlertService }

const AlertView = Type.Object({
  id: Type.String({ description: 'Keng\'s id of the alert (URLs)' }),
  identifier: Type.String({ description: 'CAP identifier' }),
  reference: Type.String({ description: 'How an Update or Cancel names this alert in `references`: "sender,identifier,sent" (CAP 1.2 §3.2.1)' }),
  state: StringEnum(ALERT_STATES),
  areas: Type.Array(Type.String(), { description: 'Areas it covers (rights and views)' }),
  devices: Type.Optional(Type.Array(Type.String(), { description: 'For an alert given by polygons/circles: the loudspeakers inside them, the only ones it sounds on' })),
  broadcastId: Type.Optional(Type.String({ description: 'The emergency broadcast that plays it' })),
  createdBy: Type.String(), createdAt: Time,
  approvedBy: Type.Optional(Type.String()), approvedAt: Type.Optional(Time),
  playedAtOnce: Type.Boolean({ description: 'Played before approval under the play-at-once policy (approvedBy is then the confirmation)' }),
  endedBy: Type.Optional(Type.String()), endedAt: Type.Optional(Time), endReason: Type.Optional(Type.String()),
  replacedBy: Type.Optional(Type.String()),
  cap: Type.Record(Type.String(), Type.Unknown(), { description: 'The CAP fields (JSON form of the body)' }),
}, { additionalProperties: true });

type AlertDto = Static<typeof AlertView>;

const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 160, description: 'Alert id (with `.cap.xml` for the CAP 1.2 XML form)' }) });
const Reason = Type.Object({ reason: Type.Optional(Type.String({ maxLength: 500 })) });
const Policy = Type.Object({
  playAtOnce: Type.Array(StringEnum(['Extreme', 'Severe'] as const), {
    uniqueItems: true, description: 'Severities whose Actual + Immediate alerts play as soon as raised, approval following as confirmation',
  }),
}, { additionalProperties: false });

const CAP_XML_SUFFIX = '.cap.xml';

/** An absent body, or `{"reason"?: string}`. */
function checkReason(data: unknown): { value: { reason?: string } } | { error: Error } {
  if (data === undefined || data === null) return { value: {} };
  const r = (data as { reason?: unknown }).reason;
  if (typeof data !== 'object' || Array.isArray(data) || (r !== undefined && (typeof r !== 'string' || r.length > 500))) {
    return { error: Errors.VALIDATION('the body, when given, is {"reason": "at most 500 characters"}') };
  }
  return { value: r === undefined ? {} : { reason: r } };
}

export const alertRoutes: FastifyPluginAsyncTypebox<AlertRouteOptions> = async (app, { ctx, alerts }) => {
  const { policy, tz, clock, registry, config } = ctx;
  const dto = (a: Alert) => alertDto(a, tz);

  // A CAP message arrives as text; it is read by the CAP module (safe XML), not by a generic body parser.
  for (const type of [CAP_MEDIA_TYPE, 'application/xml', 'text/xml']) {
    app.addContentTypeParser(type, { parseAs: 'string', bodyLimit: 256 * 1024 }, (_req, body, done) => done(null, body));
  }

  app.post('/alerts', {
    validatorCompiler: checkedByService,
    schema: {
      tags: ['alerts'], summary: 'Raise an alert (JSON or CAP 1.2 XML)', security: [{ bearer: [] }], body: AlertBodySchema,
      consumes: ['application/json', CAP_MEDIA_TYPE],
      querystring: Type.Object({ areas: Type.Optional(Type.String({ maxLength: 4000, description: 'Area codes (comma-separated) for a CAP message that names neither keng:area geocodes nor shapes' })) }),
      description: 'An Actual alert waits for a second person\'s approval (state pending_approval); Exercise and Test play at once. '
        + `With Content-Type ${CAP_MEDIA_TYPE} the body is a CAP 1.2 message: DOCTYPE, entities and XInclude are refused (400). See docs/alerts.md.`,
      response: { 201: Described(AlertView, 'The alert'), ...errorResponses(...AUTH_ERRORS, 409, 413, 415, 422, 503) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'alerts.write');
    const c = callerOf(req, ctx);
    const now = clock.now();
    const queryAreas = (req.query.areas ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    let created: Alert;
    if (typeof req.body === 'string') {
      const parsed = parseCapXml(req.body);
      created = await alerts.create(c, parsed.alert, resolveReach(registry, parsed.hints, queryAreas));
    } else {
      const v = validateAlertBody(req.body, { now, areaName: (code) => registry.getArea(code)?.name });
      if (!v.ok) throw alertBodyError(v.errors);
      const cap = newCapAlert(v.value, { identifier: newId('cap', now), sender: config.alerts.sender, sent: now });
      created = await alerts.create(c, cap, resolveReach(registry, areaHints(cap)));
    }
    reply.status(201).header('location', `/api/v1/alerts/${encodeURIComponent(created.id)}`);
    return dto(created);
  });

  app.get('/alerts', {
    schema: {
      tags: ['alerts'], summary: 'Alerts touching your areas, newest first', security: [{ bearer: [] }],
      querystring: Type.Object({
        state: Type.Optional(Type.String({ maxLength: 200, description: 'States, comma-separated, e.g. pending_approval,active' })),
        from: Type.Optional(TimeInput), to: Type.Optional(TimeInput), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
      }),
      response: { 200: Type.Array(AlertView), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'alerts.read');
    const q = req.query;
    const states = q.state?.split(',').map((s) => s.trim()).filter(Boolean);
    for (const s of states ?? []) if (!(ALERT_STATES as readonly string[]).includes(s)) throw Errors.VALIDATION(`unknown state "${s}"; one of ${ALERT_STATES.join(', ')}`);
    return (await alerts.list(callerOf(req, ctx), {
      ...(states?.length ? { states: states as Alert['state'][] } : {}),
      ...(q.from !== undefined ? { from: parseTime(q.from, 'from') } : {}),
      ...(q.to !== undefined ? { to: parseTime(q.to, 'to') } : {}),
      ...(q.limit !== undefined ? { limit: q.limit } : {}),
    })).map(dto);
  });

  app.get('/alerts/policy', {
    schema: {
      tags: ['alerts'], summary: 'The play-at-once policy', security: [{ bearer: [] }],
      response: { 200: Policy, ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'alerts.read');
    return alerts.policy();
  });

  app.put('/alerts/policy', {
    schema: {
      tags: ['alerts'], summary: 'Set the play-at-once policy (admin)', security: [{ bearer: [] }], body: Policy,
      response: { 200: Policy, ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    const p = principalOf(req);
    if (p.role !== 'admin') throw Errors.FORBIDDEN('only an admin sets which alerts may play before approval');
    return alerts.setPolicy(callerOf(req, ctx), req.body);
  });

  app.get('/alerts/:id', {
    schema: {
      tags: ['alerts'], summary: 'One alert; `/alerts/{id}.cap.xml` gives it as CAP 1.2 XML', security: [{ bearer: [] }], params: IdParams,
      produces: ['application/json', CAP_MEDIA_TYPE],
      response: { 200: Described(AlertView, 'The alert (JSON), or its CAP 1.2 XML'), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req, reply) => {
    policy.assert(principalOf(req), 'alerts.read');
    const raw = req.params.id;
    const xml = raw.endsWith(CAP_XML_SUFFIX);
    const a = await alerts.get(callerOf(req, ctx), xml ? raw.slice(0, -CAP_XML_SUFFIX.length) : raw);
    if (!xml) return dto(a);
    // A string is sent as it is (the JSON schema of the 200 reply serializes objects only).
    return reply.type(`${CAP_MEDIA_TYPE}; charset=utf-8`).send(writeCapXml(a.cap, { tz }) as unknown as AlertDto);
  });

  for (const action of ['approve', 'reject', 'cancel'] as const) {
    app.post(`/alerts/:id/${action}`, {
      // The body is optional (a bare POST approves): checked here rather than by fastify, which refuses an absent body.
      validatorCompiler: ({ httpPart }) => (data: unknown) => (httpPart === 'body' ? checkReason(data) : { value: data }),
      schema: {
        tags: ['alerts'], security: [{ bearer: [] }], params: IdParams, body: Reason,
        summary: action === 'approve' ? 'Approve (second person) or confirm an alert played at once'
          : action === 'reject' ? 'Turn down a pending alert' : 'Cancel: stop it everywhere and play the cancellation notice',
        response: { 200: AlertView, ...errorResponses(...AUTH_ERRORS, 404, 409) },
      },
    }, async (req) => {
      policy.assert(principalOf(req), 'alerts.write');
      const c = callerOf(req, ctx);
      const reason = req.body?.reason ?? undefined;
      const a = action === 'approve' ? await alerts.approve(c, req.params.id)
        : action === 'reject' ? await alerts.reject(c, req.params.id, reason) : await alerts.cancel(c, req.params.id, reason);
      return dto(a);
    });
  }
};

/**
 * The public CAP Atom feed (no login: public alerts are for everyone, and
 * aggregators pull without credentials). Only Public, Actual, active alerts.
 */
export async function alertFeedRoute(app: FastifyInstance, opts: { ctx: RouteContext; alerts: AlertService }): Promise<void> {
  const { ctx, alerts } = opts;
  app.get(DEFAULT_FEED_PATH, { schema: { tags: ['alerts'], summary: 'Active public alerts as a CAP Atom feed (no login)' } }, async (req, reply) => {
    const active = await alerts.activePublic();
    const ids = new Map(active.map((a) => [a.cap.identifier, a.id]));
    const base = ctx.config.media.publicBaseUrl ?? `${req.protocol}://${req.host}`;
    const body = atomFeed(active.map((a) => a.cap), {
      baseUrl: base, now: ctx.clock.now(), tz: ctx.tz, feedPath: DEFAULT_FEED_PATH,
      capPath: (cap) => `/api/v1/alerts/${encodeURIComponent(ids.get(cap.identifier) ?? cap.identifier)}${CAP_XML_SUFFIX}`,
    });
    return reply.type('application/atom+xml; charset=utf-8').header('cache-control', 'public, max-age=30').send(body);
  });
}

function alertDto(a: Alert, tz: string): AlertDto {
  const t = (ms: number) => formatTime(ms, tz);
  const json = toAlertJson(a.cap, tz);
  return {
    // The CAP fields at the top level, as the fixed API lists them (status, msgType, event, severity, …), and under `cap`.
    ...json,
    id: a.id, identifier: a.cap.identifier, state: a.state, areas: a.areas,
    reference: formatReference({ sender: a.cap.sender, identifier: a.cap.identifier, sent: formatCapTime(a.cap.sent, tz) }),
    ...(a.devices.length ? { devices: a.devices } : {}),
    ...(a.broadcastId ? { broadcastId: a.broadcastId } : {}),
    createdBy: a.createdBy, createdAt: t(a.createdAt),
    ...(a.approvedBy ? { approvedBy: a.approvedBy } : {}), ...(a.approvedAt !== undefined ? { approvedAt: t(a.approvedAt) } : {}),
    playedAtOnce: a.playedAtOnce,
    ...(a.endedBy ? { endedBy: a.endedBy } : {}), ...(a.endedAt !== undefined ? { endedAt: t(a.endedAt) } : {}),
    ...(a.endReason ? { endReason: a.endReason } : {}), ...(a.replacedBy ? { replacedBy: a.replacedBy } : {}),
    cap: { ...json },
  };
}

/**
 * Schedules (OpenAPI at /docs, tag schedules): one-off (`at`)
 * and recurring (5-field cron, in the schedule's time zone) bulletins.
 * The routes are thin: BroadcastService validates, checks targets, overlap
 * and scope, persists, re-plans and audits.
 *
 * Bodies are checked by BroadcastService (every field error at once, with
 * messages written for commune staff), so the TypeBox body schemas below
 * document the shape in OpenAPI and are not enforced by Fastify.
 */
import { Type } from 'typebox';
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Errors } from '../../core/errors.js';
import { formatTime } from '../../core/time.js';
import type { BroadcastService } from '../../broadcast/service.js';
import type { Caller } from '../../broadcast/targets.js';
import { scheduleDto } from '../../broadcast/dto.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, Described, StringEnum, Time, errorResponses } from '../schemas.js';

export interface ScheduleRouteOptions { ctx: RouteContext; service: BroadcastService }

/** The caller of a request: principal, IP and area scope (computed once). */
export function callerOf(req: FastifyRequest, ctx: RouteContext): Caller {
  const principal = principalOf(req);
  const scope = ctx.policy.scope(principal);
  return { principal, ip: req.ip, inScope: (area) => ctx.policy.inScope(principal, area, scope) };
}

/** Body validation is done by the service (see the header comment). */
export const documentOnly = () => (data: unknown) => ({ value: data });

const TimeOrMs = Type.Union([Type.String(), Type.Integer()], { description: 'Validity bound of a recurring schedule: a date YYYY-MM-DD in the schedule\'s zone (startDate: from the start of that day; endDate: to its end), or ISO 8601 with offset, or epoch ms' });

export const Target = Type.Object({
  areas: Type.Optional(Type.Array(Type.String(), { description: 'Area codes; an area includes its villages\' speakers' })),
  devices: Type.Optional(Type.Array(Type.String(), { description: 'Speaker device ids' })),
}, { description: 'Where to play: at least one area or device' });

export const Content = Type.Object({
  mediaId: Type.Optional(Type.String({ description: 'A media library item' })),
  streamUrl: Type.Optional(Type.String({ description: 'An Icecast/HTTP stream relayed as it is (durationSec required)' })),
  ttsText: Type.Optional(Type.String({ description: 'Vietnamese text, rendered once with espeak-ng and stored as a mediaId (503 when the engine is missing)' })),
}, { description: 'Exactly one of mediaId, streamUrl, ttsText' });

const Priority = StringEnum(['normal', 'priority'] as const, { description: 'thông thường / ưu tiên; a priority item goes before normal ones. Emergency is for alerts.' });

const ScheduleFields = {
  name: Type.String({ minLength: 1, maxLength: 200 }),
  target: Target,
  content: Content,
  cron: Type.Optional(Type.String({ description: 'Recurring: 5 fields "m h dom mon dow" in the schedule\'s time zone' })),
  at: Type.Optional(Type.Union([Type.String(), Type.Integer()], { description: 'One-off: when to play, ISO 8601 with offset (e.g. 2026-12-01T06:30:00+07:00) or epoch ms (a date YYYY-MM-DD alone means 00:00 in the schedule\'s zone); not in the past' })),
  timezone: Type.Optional(Type.String({ description: 'IANA zone; default the commune\'s (KENG_TZ, Asia/Ho_Chi_Minh)' })),
  volume: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, default: 70 })),
  priority: Type.Optional(Priority),
  durationSec: Type.Optional(Type.Number({ description: 'Play length; default the media\'s duration; required for streams' })),
  startDate: Type.Optional(TimeOrMs),
  endDate: Type.Optional(TimeOrMs),
  enabled: Type.Optional(Type.Boolean({ default: true })),
};

const NewSchedule = Type.Object(ScheduleFields, {
  description: 'Exactly one of cron (recurring) or at (one-off, not in the past). Overlapping another schedule on the same speaker is 409 unless this one has higher priority.',
});
const SchedulePatch = Type.Partial(Type.Object(ScheduleFields), {
  description: 'Fields to change; target and content are replaced whole; null removes a field (e.g. {"cron": "0 6 * * *", "at": null}).',
});

export const Schedule = Type.Object({
  id: Type.String(),
  name: Type.String(),
  target: Target,
  content: Type.Object({ mediaId: Type.Optional(Type.String()), streamUrl: Type.Optional(Type.String()), ttsText: Type.Optional(Type.String()) }, { description: 'As stored (TTS text is stored as its rendering\'s mediaId)' }),
  cron: Type.Optional(Type.String()),
  at: Type.Optional(Time),
  timezone: Type.String(),
  volume: Type.Integer(),
  priority: Priority,
  durationSec: Type.Optional(Type.Number()),
  startDate: Type.Optional(Time),
  endDate: Type.Optional(Time),
  enabled: Type.Boolean(),
  createdAt: Time,
  updatedAt: Time,
  createdBy: Type.Optional(Type.String()),
  lastFiredAt: Type.Optional(Type.String({ description: 'Planned time of the last occurrence handled (played or missed)' })),
  nextRuns: Type.Array(Time, { description: 'The coming occurrences (up to 5)' }),
});

const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128, description: 'Schedule id' }) });

export const scheduleRoutes: FastifyPluginAsyncTypebox<ScheduleRouteOptions> = async (app, { ctx, service }) => {
  const { policy, tz } = ctx;
  const dto = (s: Parameters<typeof scheduleDto>[0]) => scheduleDto(s, service.nextRuns(s), tz);

  app.post('/schedules', {
    validatorCompiler: documentOnly,
    schema: {
      tags: ['schedules'], summary: 'Create a schedule', security: [{ bearer: [] }], body: NewSchedule,
      response: { 201: Described(Schedule, 'The schedule with its next runs'), ...errorResponses(...AUTH_ERRORS, 409, 422, 503) },
    },
  }, async (req, reply) => {
    policy.assert(principalOf(req), 'schedules.write');
    const s = await service.createSchedule(callerOf(req, ctx), req.body);
    reply.status(201).header('location', `/api/v1/schedules/${encodeURIComponent(s.id)}`);
    return dto(s);
  });

  app.get('/schedules', {
    schema: {
      tags: ['schedules'], summary: 'List schedules', security: [{ bearer: [] }],
      description: 'Schedules whose whole target lies within the caller\'s areas, oldest first.',
      response: { 200: Type.Array(Schedule), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'schedules.read');
    return service.listSchedules(callerOf(req, ctx)).map(dto);
  });

  app.get('/schedules/:id', {
    schema: {
      tags: ['schedules'], summary: 'One schedule', security: [{ bearer: [] }], params: IdParams,
      response: { 200: Schedule, ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'schedules.read');
    return dto(service.getSchedule(callerOf(req, ctx), req.params.id));
  });

  app.patch('/schedules/:id', {
    validatorCompiler: documentOnly,
    schema: {
      tags: ['schedules'], summary: 'Change a schedule (enable/disable, retime, retarget...)', security: [{ bearer: [] }],
      params: IdParams, body: SchedulePatch,
      response: { 200: Schedule, ...errorResponses(...AUTH_ERRORS, 404, 409, 422, 503) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'schedules.write');
    return dto(await service.updateSchedule(callerOf(req, ctx), (req.params as { id: string }).id, req.body));
  });

  app.delete('/schedules/:id', {
    schema: {
      tags: ['schedules'], summary: 'Delete a schedule', security: [{ bearer: [] }], params: IdParams,
      description: 'Future occurrences are cancelled; broadcasts already made stay in the log.',
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req, reply) => {
    policy.assert(principalOf(req), 'schedules.write');
    service.deleteSchedule(callerOf(req, ctx), req.params.id);
    return reply.status(204).send(null);
  });

  app.get('/scheduler', {
    schema: {
      tags: ['schedules'], summary: 'Scheduler state: next occurrence and start jitter (admin)', security: [{ bearer: [] }],
      response: {
        200: Type.Object({
          running: Type.Boolean(),
          nextDue: Type.Optional(Type.Object({ scheduleId: Type.String(), at: Time })),
          jitterMs: Type.Object({ count: Type.Integer(), p50: Type.Number(), p99: Type.Number(), max: Type.Number(), mean: Type.Number() },
            { description: 'Actual minus planned start of on-time occurrences (last 10,000)' }),
        }),
        ...errorResponses(...AUTH_ERRORS),
      },
    },
  }, async (req) => {
    const p = principalOf(req);
    if (p.role !== 'admin') throw Errors.FORBIDDEN(`role ${p.role} may not read the scheduler state`);
    const s = service.scheduler;
    const next = s?.nextDue();
    return {
      running: s !== undefined,
      ...(next ? { nextDue: { scheduleId: next.scheduleId, at: formatTime(next.at, ctx.tz) } } : {}),
      jitterMs: s?.jitterStats() ?? { count: 0, p50: 0, p99: 0, max: 0, mean: 0 },
    };
  });
};

/**
 * Schedules (OpenAPI at /docs, tag schedules): one-off (`at`)
 * and recurring (5-field cron, in the schedule's time zone) bulletins.
 * The routes are thin: BroadcastService validates, checks targets, overlap
 * and scope, persists, re-plans and audits.
 *
 * Bodies are checked by BroadcastService against the body schemas of the
 * domain (src/broadcast/schedule/schema.ts), the same objects published here
 * in OpenAPI: every field error at once, with messages for commune staff.
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
import { NewSchedule, Priority, SchedulePatch, Target } from '../../broadcast/schedule/schema.js';
import { OCCURRENCE_OUTCOMES } from '../../broadcast/schedule/migrations.js';
import { StringEnum } from '../../core/schema.js';
import { AUTH_ERRORS, Described, Time, errorResponses } from '../schemas.js';

export interface ScheduleRouteOptions { ctx: RouteContext; service: BroadcastService }

/** The caller of a request: principal, IP and area scope (computed once). */
export function callerOf(req: FastifyRequest, ctx: RouteContext): Caller {
  const principal = principalOf(req);
  const scope = ctx.policy.scope(principal);
  return { principal, ip: req.ip, inScope: (area) => ctx.policy.inScope(principal, area, scope) };
}

/**
 * Fastify leaves these bodies alone: BroadcastService checks them with the
 * very schema objects given here (so OpenAPI shows what is enforced), after
 * the role check, reporting every field error at once in the service's words.
 */
export const checkedByService = () => (data: unknown) => ({ value: data });

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

const Occurrence = Type.Object({
  plannedAt: Time,
  outcome: Type.Optional(StringEnum(OCCURRENCE_OUTCOMES, { description: 'Absent while the claiming node is starting it' })),
  broadcastId: Type.Optional(Type.String({ description: 'The broadcast it started (broadcast log)' })),
  nodeId: Type.String({ description: 'The node that handled it (its claim won); "upgrade" for the last one handled before these records existed' }),
  claimedAt: Time,
});
const OccurrenceQuery = Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 50 })) });

export const scheduleRoutes: FastifyPluginAsyncTypebox<ScheduleRouteOptions> = async (app, { ctx, service }) => {
  const { policy, tz } = ctx;
  const dto = (s: Parameters<typeof scheduleDto>[0]) => scheduleDto(s, service.nextRuns(s), tz);

  app.post('/schedules', {
    validatorCompiler: checkedByService,
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
    return (await service.listSchedules(callerOf(req, ctx))).map(dto);
  });

  app.get('/schedules/:id', {
    schema: {
      tags: ['schedules'], summary: 'One schedule', security: [{ bearer: [] }], params: IdParams,
      response: { 200: Schedule, ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'schedules.read');
    return dto(await service.getSchedule(callerOf(req, ctx), req.params.id));
  });

  app.patch('/schedules/:id', {
    validatorCompiler: checkedByService,
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
    await service.deleteSchedule(callerOf(req, ctx), req.params.id);
    return reply.status(204).send(null);
  });

  app.get('/schedules/:id/occurrences', {
    schema: {
      tags: ['schedules'], summary: 'What happened to a schedule\'s recent occurrences', security: [{ bearer: [] }],
      params: IdParams, querystring: OccurrenceQuery,
      description: 'Latest first. Each occurrence is handled once, by one node (in cluster mode, the node whose claim won): '
        + 'fired (with the broadcast it started; none when the target had no speakers), missed (Keng was down, it was later than '
        + 'broadcast.missedGraceSec, or the node that claimed it stopped before starting it), failed (starting it raised an error), '
        + 'or no outcome yet (being started). Records older than 90 days are deleted, except each schedule\'s latest.',
      response: { 200: Type.Array(Occurrence), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'schedules.read');
    const list = await service.scheduleOccurrences(callerOf(req, ctx), req.params.id, req.query.limit ?? 50);
    return list.map((o) => ({
      plannedAt: formatTime(o.occurrenceAt, tz), nodeId: o.nodeId, claimedAt: formatTime(o.claimedAt, tz),
      ...(o.outcome !== undefined ? { outcome: o.outcome } : {}), ...(o.broadcastId !== undefined ? { broadcastId: o.broadcastId } : {}),
    }));
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

/**
 * Broadcasts (OpenAPI at /docs, tag broadcasts): play now,
 * list, one broadcast with each speaker's state, stop, and proof of play
 * (the broadcast log as JSON or CSV, and totals per area).
 *
 * Scope (docs/roles.md): operators within their areas (a broadcast is shown
 * with the speakers of their areas only; one with none there is 404),
 * service tokens read only, viewers nothing (403).
 */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ALL_AREAS, type Principal } from '../../auth/types.js';
import { Errors } from '../../core/errors.js';
import type { BroadcastService } from '../../broadcast/service.js';
import { TARGET_STATES, type BroadcastExecutor, type LogQuery } from '../../broadcast/execution/index.js';
import { broadcastDto, logEntryDto, totalsDto } from '../../broadcast/dto.js';
import { scopedCsv, scopedLog, type LogScope } from '../../broadcast/log-export.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, Described, StringEnum, Time, TimeInput, errorResponses } from '../schemas.js';
import { localDate, parseTime } from '../../core/time.js';
import { PlayNow } from '../../broadcast/schedule/schema.js';
import { callerOf, checkedByService } from './schedules.js';

export interface BroadcastRouteOptions { ctx: RouteContext; service: BroadcastService; executor: BroadcastExecutor }


const TargetView = Type.Object({
  deviceId: Type.String(), area: Type.String(),
  state: StringEnum(TARGET_STATES, {
    description: '`unconfirmed`: the speaker accepted but never reported the end of playback (firmware without playback '
      + 'events, e.g. ThingsBoard SDKs) and the content must have ended by now (notAfter + its length + broadcast.playbackReportGraceSec). '
      + 'It may have played; only `completed` is proof of play.',
  }),
  updatedAt: Time, detail: Type.Optional(Type.String()),
});

const BroadcastView = Type.Object({
  id: Type.String(),
  scheduleId: Type.Optional(Type.String()),
  priority: StringEnum(['normal', 'priority', 'emergency'] as const),
  volume: Type.Integer(),
  plannedAt: Time,
  startedAt: Time,
  notAfter: Type.String({ description: 'Speakers do not start after this (offline speakers get the command until then)' }),
  stopRequestedAt: Type.Optional(Time),
  media: Type.Optional(Type.Object({ mediaId: Type.String(), sha256: Type.String(), durationSec: Type.Number(), mime: Type.String() })),
  stream: Type.Optional(Type.Object({ url: Type.String() })),
  durationSec: Type.Optional(Type.Number()),
  counts: Type.Record(Type.String(), Type.Integer(), { description: 'Speakers per state' }),
  targets: Type.Array(TargetView),
});

const LogLine = Type.Object({
  at: Time, deviceAt: Type.Optional(Type.String({ description: 'The speaker\'s own time of a playback event' })),
  broadcastId: Type.Optional(Type.String()), scheduleId: Type.Optional(Type.String()),
  scheduleName: Type.Optional(Type.String({ description: 'The schedule\'s current name (absent once it is deleted)' })),
  mediaId: Type.Optional(Type.String({ description: 'The media file played (absent for a stream)' })),
  mediaName: Type.Optional(Type.String({ description: 'The media file\'s current name (absent once it is deleted)' })),
  deviceId: Type.String(), area: Type.String(),
  state: Type.String({ description: 'A target state, or "missed" (occurrence missed while Keng was down)' }),
  prevState: Type.Optional(Type.String()), detail: Type.Optional(Type.String()), source: Type.String(),
});

const Counts = {
  planned: Type.Integer(), played: Type.Integer(), failed: Type.Integer(), missed: Type.Integer(),
  stopped: Type.Integer(), preempted: Type.Integer(),
  unconfirmed: Type.Integer({ description: 'Accepted, end of playback never reported (no playback events): not proof of play' }),
  inProgress: Type.Integer(),
};
const Totals = Type.Object({
  from: Type.Optional(Time), to: Type.Optional(Time),
  areas: Type.Array(Type.Object({ area: Type.String(), areaName: Type.Optional(Type.String()), ...Counts })),
  total: Type.Object(Counts),
}, { description: 'Speaker-broadcasts per area: planned = played + unconfirmed + failed + missed + stopped + preempted + inProgress' });

const Range = {
  from: Type.Optional(TimeInput), to: Type.Optional(TimeInput),
};
const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128, description: 'Broadcast id' }) });
const Limit = Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 }));

function range(q: { from?: string; to?: string }): { from?: number; to?: number } {
  const from = q.from !== undefined ? parseTime(q.from, 'from') : undefined;
  const to = q.to !== undefined ? parseTime(q.to, 'to') : undefined;
  if (from !== undefined && to !== undefined && from >= to) throw Errors.VALIDATION('"from" must be before "to"');
  return { ...(from !== undefined ? { from } : {}), ...(to !== undefined ? { to } : {}) };
}

/** Top-level areas of a principal for log queries, or 'all'. */
function logScope(p: Principal): LogScope {
  return p.role === 'admin' || p.areas.includes(ALL_AREAS) ? 'all' : p.areas;
}

export const broadcastRoutes: FastifyPluginAsyncTypebox<BroadcastRouteOptions> = async (app, { ctx, service, executor }) => {
  const { policy, tz, registry } = ctx;

  /** `area` of a query must be within the caller's areas (403). */
  const areaParam = (p: Principal, action: 'broadcasts.read', area: string | undefined): void => {
    if (area !== undefined) policy.assert(p, action, area);
    else policy.assert(p, action);
  };

  app.post('/broadcasts', {
    validatorCompiler: checkedByService,
    schema: {
      tags: ['broadcasts'], summary: 'Play now', security: [{ bearer: [] }], body: PlayNow,
      description: '`ttsText` is rendered first (espeak-ng, Vietnamese). Offline speakers get the command when they reconnect '
        + 'until notAfter = now + max(play length, broadcast.offlineValiditySec), otherwise they are marked expired.',
      response: { 201: Described(BroadcastView, 'The broadcast, targets pending/sent/offline'), ...errorResponses(...AUTH_ERRORS, 422, 503) },
    },
  }, async (req, reply) => {
    policy.assert(principalOf(req), 'broadcasts.write');
    const b = await service.playNow(callerOf(req, ctx), req.body);
    reply.status(201).header('location', `/api/v1/broadcasts/${encodeURIComponent(b.id)}`);
    return broadcastDto(b, tz);
  });

  app.get('/broadcasts', {
    schema: {
      tags: ['broadcasts'], summary: 'List broadcasts, newest first', security: [{ bearer: [] }],
      querystring: Type.Object({ ...Range, scheduleId: Type.Optional(Type.String({ maxLength: 128 })), area: Type.Optional(Type.String({ maxLength: 64 })), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })) }),
      response: { 200: Type.Array(BroadcastView), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    const p = principalOf(req);
    const q = req.query;
    areaParam(p, 'broadcasts.read', q.area);
    const c = callerOf(req, ctx);
    const list = await executor.list({ ...range(q), ...(q.scheduleId ? { scheduleId: q.scheduleId } : {}), ...(q.area ? { area: q.area } : {}), ...(q.limit ? { limit: q.limit } : {}) });
    return list.filter((b) => b.targets.some((t) => c.inScope(t.area))).map((b) => broadcastDto(b, tz, c.inScope));
  });

  app.get('/broadcasts/log', {
    schema: {
      tags: ['broadcasts'], summary: 'Proof of play: the broadcast log (nhật ký phát thanh)', security: [{ bearer: [] }],
      description: 'Every state change of every speaker, and occurrences missed while Keng was down, in time order. '
        + '`format=csv` downloads it as CSV (UTF-8 with BOM, opens in Excel with Vietnamese names intact).',
      querystring: Type.Object({
        ...Range, area: Type.Optional(Type.String({ maxLength: 64 })), scheduleId: Type.Optional(Type.String({ maxLength: 128 })),
        deviceId: Type.Optional(Type.String({ maxLength: 64 })), broadcastId: Type.Optional(Type.String({ maxLength: 128 })),
        format: Type.Optional(StringEnum(['json', 'csv'] as const, { default: 'json' })), limit: Limit,
      }),
      response: { 200: Type.Array(LogLine, { description: 'Log lines (JSON); text/csv with format=csv' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    const q = req.query;
    areaParam(p, 'broadcasts.read', q.area);
    const lq: LogQuery = {
      ...range(q), ...(q.area ? { area: q.area } : {}), ...(q.scheduleId ? { scheduleId: q.scheduleId } : {}),
      ...(q.deviceId ? { deviceId: q.deviceId } : {}), ...(q.broadcastId ? { broadcastId: q.broadcastId } : {}), ...(q.limit ? { limit: q.limit } : {}),
    };
    const scope = logScope(p);
    if (q.format === 'csv') {
      const day = localDate(ctx.clock.now(), tz);
      return reply.type('text/csv; charset=utf-8')
        .header('content-disposition', `attachment; filename="nhat-ky-phat-thanh-${day}.csv"`)
        .serializer((x: unknown) => x as string)
        .send(await scopedCsv(executor, registry, lq, scope, tz) as never);
    }
    return (await scopedLog(executor, lq, scope)).map((e) => logEntryDto(e, tz));
  });

  app.get('/broadcasts/totals', {
    schema: {
      tags: ['broadcasts'], summary: 'Proof of play: totals per area (planned, played, failed, missed)', security: [{ bearer: [] }],
      querystring: Type.Object({ ...Range, area: Type.Optional(Type.String({ maxLength: 64 })) }),
      response: { 200: Totals, ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    const p = principalOf(req);
    const q = req.query;
    areaParam(p, 'broadcasts.read', q.area);
    const c = callerOf(req, ctx);
    return totalsDto(await executor.totals({ ...range(q), ...(q.area ? { area: q.area } : {}) }), tz, c.inScope);
  });

  app.get('/broadcasts/:id', {
    schema: {
      tags: ['broadcasts'], summary: 'One broadcast with each speaker\'s state', security: [{ bearer: [] }], params: IdParams,
      response: { 200: BroadcastView, ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'broadcasts.read');
    const c = callerOf(req, ctx);
    const b = await executor.getStored(req.params.id);
    if (!b || !b.targets.some((t) => c.inScope(t.area))) throw Errors.NOT_FOUND(`Broadcast "${req.params.id}"`);
    return broadcastDto(b, tz, c.inScope);
  });

  app.post('/broadcasts/:id/stop', {
    schema: {
      tags: ['broadcasts'], summary: 'Stop a broadcast', security: [{ bearer: [] }], params: IdParams,
      description: 'Sends broadcast.stop to every speaker still sent/accepted/playing (stopped when it confirms); speakers not yet sent are withdrawn.',
      response: { 200: BroadcastView, ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'broadcasts.write');
    return broadcastDto(await service.stopBroadcast(callerOf(req, ctx), req.params.id), tz);
  });
};

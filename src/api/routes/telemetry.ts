/** Telemetry history of one device: raw points, or one aggregate per window. */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Errors, withDetails } from '../../core/errors.js';
import type { HistoryPoint } from '../../storage/telemetry/types.js';
import { principalOf, type RouteContext } from '../context.js';
import { formatTime } from '../../core/time.js';
import { resolveRange } from '../range.js';
import { AUTH_ERRORS, Agg, Described, DeviceIdParams, FIELD_PATTERN, History, TimeInput, errorResponses } from '../schemas.js';
import { visibleDevice } from './devices.js';

const FIELD_RE = new RegExp(FIELD_PATTERN);
export const MAX_FIELDS = 64;

/** "a,b" → ["a","b"] (trimmed, de-duplicated, each a valid field name). */
export function parseFields(raw: string | undefined): string[] {
  if (raw === undefined) return [];
  const fields = [...new Set(raw.split(',').map((f) => f.trim()).filter(Boolean))];
  const bad = fields.filter((f) => !FIELD_RE.test(f));
  if (bad.length || fields.length > MAX_FIELDS) {
    const details = bad.length
      ? bad.slice(0, 10).map((f) => ({ in: 'querystring', field: 'fields', message: `"${f.slice(0, 70)}" is not a field name (${FIELD_PATTERN})` }))
      : [{ in: 'querystring', field: 'fields', message: `at most ${MAX_FIELDS} fields` }];
    throw withDetails(Errors.VALIDATION(details.map((d) => d.message).join('; ')), details);
  }
  return fields;
}

export const telemetryRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const { store, tz, clock, maxPoints } = ctx;

  app.get('/devices/:id/telemetry', {
    schema: {
      tags: ['telemetry'], summary: 'Telemetry history of a device', security: [{ bearer: [] }],
      description: 'Raw points when `every` is absent (at most `limit`; `nextFrom` pages on), otherwise one point per '
        + 'epoch-aligned window with `agg` (default mean). Default window: the last 24 h. Points are in time order. '
        + `At most ${maxPoints} windows per request.`,
      params: DeviceIdParams,
      querystring: Type.Object({
        fields: Type.Optional(Type.String({ maxLength: 4096, description: 'Comma-separated field names; all fields when absent' })),
        from: Type.Optional(TimeInput),
        to: Type.Optional(TimeInput),
        every: Type.Optional(Type.String({ maxLength: 16, description: 'Window: 30s, 5m, 1h, 1d, 1w (min 1s)' })),
        agg: Type.Optional(Agg),
        limit: Type.Optional(Type.Integer({ minimum: 1, maximum: maxPoints, description: `Raw points per page (default ${maxPoints})` })),
      }),
      response: { 200: Described(History, 'Points in time order'), ...errorResponses(...AUTH_ERRORS, 404, 503) },
    },
  }, async (req) => {
    const device = visibleDevice(ctx, principalOf(req), req.params.id, 'telemetry.read');
    const q = req.query;
    const fields = parseFields(q.fields);
    const range = resolveRange({ from: q.from, to: q.to, every: q.every }, clock.now(), maxPoints);
    // A device registered under the id of a deleted one never shows that one's readings.
    if (device.historyFrom !== null && range.from < device.historyFrom) range.from = Math.min(device.historyFrom, range.to);
    if (q.agg !== undefined && range.everyMs === undefined) {
      throw withDetails(Errors.VALIDATION('"agg" needs "every"'), [{ in: 'querystring', field: 'agg', message: 'needs "every"' }]);
    }
    if (range.everyMs !== undefined) {
      const points = await store.query({ deviceId: device.id, fields, from: range.from, to: range.to, everyMs: range.everyMs, agg: q.agg ?? 'mean' });
      return { deviceId: device.id, points: points.map((pt) => shape(pt, tz)) };
    }
    const limit = q.limit ?? maxPoints;
    const points = await store.query({ deviceId: device.id, fields, from: range.from, to: range.to, limit: limit + 1 });
    const page = points.slice(0, limit);
    const more = points.length > limit;
    return {
      deviceId: device.id,
      points: page.map((pt) => shape(pt, tz)),
      ...(more ? { nextFrom: formatTime(page[page.length - 1]!.ts + 1, tz) } : {}),
    };
  });
};

function shape(p: HistoryPoint, tz: string): { ts: string; values: HistoryPoint['values'] } {
  return { ts: formatTime(p.ts, tz), values: p.values };
}

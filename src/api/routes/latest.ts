/**
 * IOC snapshot (OpenAPI at /docs, tag telemetry):
 * `GET /api/v1/telemetry/latest?area=&kind=&format=json|geojson` → every
 * device in the caller's scope with online, lastSeen, location and latest.
 * `format=geojson` returns a GeoJSON FeatureCollection (RFC 7946) for maps:
 * one Point feature per device ([lon, lat]); a device without a location has
 * `geometry: null`, which RFC 7946 §3.2 allows, so it still appears.
 */
import { Type, type Static } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Errors } from '../../core/errors.js';
import { principalOf, type RouteContext } from '../context.js';
import { deviceDto, type DeviceDto } from '../present.js';
import { formatTime } from '../../core/time.js';
import { AUTH_ERRORS, Device, DeviceKind, StringEnum, errorResponses } from '../schemas.js';

const Snapshot = Type.Object({
  generatedAt: Type.String({ description: 'When the snapshot was taken (ISO 8601 with offset)' }),
  count: Type.Integer(),
  devices: Type.Array(Device),
});

const GeoFeature = Type.Object({
  type: Type.Literal('Feature'),
  id: Type.String(),
  geometry: Type.Union([Type.Object({ type: Type.Literal('Point'), coordinates: Type.Array(Type.Number(), { minItems: 2, maxItems: 2 }) }), Type.Null()]),
  properties: Type.Object({}, { additionalProperties: true }),
});
const GeoCollection = Type.Object({
  type: Type.Literal('FeatureCollection'),
  generatedAt: Type.String(),
  features: Type.Array(GeoFeature),
});

function feature(d: DeviceDto): Static<typeof GeoFeature> {
  const { location, ...props } = d;
  return {
    type: 'Feature',
    id: d.id,
    geometry: location ? { type: 'Point', coordinates: [location.lon, location.lat] } : null,
    properties: props,
  };
}

export const latestRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const { registry, policy, tz, clock } = ctx;

  app.get('/telemetry/latest', {
    schema: {
      tags: ['telemetry'], summary: 'Latest values and status of every device in scope (IOC snapshot)', security: [{ bearer: [] }],
      description: 'For dashboards and the IOC: every device within the caller\'s areas with `online`, `lastSeen`, `location` '
        + 'and `latest`. `format=geojson` returns a GeoJSON FeatureCollection (Content-Type application/geo+json) for maps; '
        + 'devices without a location have a null geometry.',
      querystring: Type.Object({
        area: Type.Optional(Type.String({ maxLength: 64, description: 'Area code (its subtree included)' })),
        kind: Type.Optional(DeviceKind),
        format: Type.Optional(StringEnum(['json', 'geojson'] as const, { default: 'json' })),
      }),
      response: { 200: Type.Union([Snapshot, GeoCollection], { description: 'The snapshot: JSON (default) or a GeoJSON FeatureCollection' }), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'telemetry.read');
    const { area, kind, format = 'json' } = req.query;
    if (area !== undefined) {
      // An area outside the caller's scope does not exist for them.
      if (!registry.getArea(area) || !policy.inScope(p, area)) throw Errors.NOT_FOUND(`Area "${area}"`);
    }
    const views = policy.filter(p, registry.views({ area, kind }), (v) => v.area);
    const devices = views.map((v) => deviceDto(v, tz));
    const generatedAt = formatTime(clock.now(), tz);
    if (format === 'geojson') {
      reply.type('application/geo+json; charset=utf-8');
      const geo: Static<typeof GeoCollection> = { type: 'FeatureCollection', generatedAt, features: devices.map(feature) };
      return geo;
    }
    const snapshot: Static<typeof Snapshot> = { generatedAt, count: devices.length, devices };
    return snapshot;
  });
};

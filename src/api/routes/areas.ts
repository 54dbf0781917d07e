/** Areas: a tree province → commune → village. */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { principalOf, type RouteContext } from '../context.js';
import { areaDto } from '../present.js';
import { AUTH_ERRORS, Area, Described, NewArea, errorResponses } from '../schemas.js';

export const areaRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const { registry, policy, tz } = ctx;

  app.post('/areas', {
    schema: {
      tags: ['areas'], summary: 'Create an area', security: [{ bearer: [] }],
      description: 'Admin only. A commune\'s parent is a province, a village\'s parent a commune; a province has no parent '
        + '(409 KENG_ERR_AREA_HIERARCHY otherwise, also for a parent that does not exist).',
      body: NewArea,
      response: { 201: Described(Area, 'The created area'), ...errorResponses(...AUTH_ERRORS, 409, 413, 415) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'areas.write');
    const { code, name, level, parent } = req.body;
    const area = await registry.createArea({ code, name, level, parent: parent ?? null });
    const dto = areaDto(area, tz);
    await ctx.audit.record({ actor: p, ip: req.ip, action: 'area.create', target: `area:${area.code}`, after: dto });
    reply.status(201).header('location', `/api/v1/areas/${encodeURIComponent(area.code)}`);
    return dto;
  });

  app.get('/areas', {
    schema: {
      tags: ['areas'], summary: 'List areas', security: [{ bearer: [] }],
      description: 'The areas within the caller\'s scope. `parent=<code>` lists that area\'s children; `parent=` (empty) the top-level areas.',
      querystring: Type.Object({
        parent: Type.Optional(Type.String({ maxLength: 64, description: 'Only children of this area; empty = top-level areas' })),
      }),
      response: { 200: Type.Array(Area, { description: 'Areas within the caller\'s scope' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    const p = principalOf(req);
    policy.assert(p, 'areas.read');
    let areas = registry.listAreas();
    const parent = req.query.parent;
    if (parent !== undefined) {
      const want = parent === '' ? null : parent;
      areas = areas.filter((a) => (a.parent ?? null) === want);
    }
    return policy.filter(p, areas, (a) => a.code).map((a) => areaDto(a, tz));
  });
};

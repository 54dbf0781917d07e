/** GET /metrics: Prometheus text format. Open by default (firewall it), or behind the bearer token. */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { RouteContext } from '../context.js';
import { bearerAuth } from '../auth-hook.js';
import { errorResponses } from '../schemas.js';

export const metricsRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const secured = ctx.metricsRequireAuth;
  app.get('/metrics', {
    onRequest: secured ? bearerAuth(ctx.authenticator) : undefined,
    schema: {
      tags: ['metrics'], summary: 'Prometheus metrics',
      description: secured
        ? 'Prometheus text exposition format (names in docs/metrics.md). Requires a bearer token.'
        : 'Prometheus text exposition format (names in docs/metrics.md). No token: restrict access at the firewall or reverse proxy.',
      ...(secured ? { security: [{ bearer: [] }] } : {}),
      produces: ['text/plain'],
      response: {
        200: Type.String({ description: 'Prometheus text format 0.0.4' }),
        ...(secured ? errorResponses(401) : {}),
      },
    },
  }, async (_req, reply) => {
    const text = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(text);
  });
};

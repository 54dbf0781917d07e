/**
 * GET /metrics: Prometheus text format. Behind a bearer token of role admin or
 * service (monitoring-access.ts), unless config `http.openMetrics`.
 */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { RouteContext } from '../context.js';
import { requireMonitoring } from '../monitoring-access.js';
import { errorResponses } from '../schemas.js';

export const metricsRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const secured = !ctx.openMetrics;
  app.get('/metrics', {
    onRequest: secured ? requireMonitoring(ctx.authenticator) : undefined,
    // Scrapes are not counted by the HTTP rate limit (a Prometheus on the same address as the operators).
    config: { rateLimit: false },
    schema: {
      tags: ['metrics'], summary: 'Prometheus metrics',
      description: secured
        ? 'Prometheus text exposition format (names in docs/metrics.md). Requires a bearer token of role admin or service '
          + '(an API token of role service for Prometheus: `authorization: {credentials_file: ...}` in its scrape config).'
        : 'Prometheus text exposition format (names in docs/metrics.md). Open (http.openMetrics): restrict access at the firewall or reverse proxy.',
      ...(secured ? { security: [{ bearer: [] }] } : {}),
      produces: ['text/plain'],
      response: {
        200: Type.String({ description: 'Prometheus text format 0.0.4' }),
        ...(secured ? errorResponses(401, 403) : {}),
      },
    },
  }, async (_req, reply) => {
    const text = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(text);
  });
};

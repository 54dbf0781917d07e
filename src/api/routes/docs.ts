/**
 * OpenAPI 3 document generated from the routes' TypeBox schemas, browsable
 * with Swagger UI at /docs (JSON at /docs/json). `registerOpenApi` must run
 * before any route is declared; `registerDocsUi` after.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';

export const DOCS_PREFIX = '/docs';

export const TAGS = [
  { name: 'health', description: 'Liveness and readiness probes (no token)' },
  { name: 'metrics', description: 'Prometheus metrics' },
  { name: 'areas', description: 'Administrative areas: province → commune → village' },
  { name: 'devices', description: 'Field devices: sensors, loudspeakers, gateways' },
  { name: 'telemetry', description: 'Readings history' },
];

const DESCRIPTION = [
  'Control API of Keng, the commune smart-agriculture and public-address controller.',
  '',
  'Every `/api/v1` route needs `Authorization: Bearer <token>` (the admin token, a user session token or an API token).',
  'Times are ISO 8601 with offset on output (in the controller\'s time zone) and ISO 8601 with offset or epoch milliseconds on input.',
  'Every error is `{"error": {"code": "KENG_...", "message": "...", "details"?: ...}}`; codes are listed in docs/errors.md.',
  '',
  'Live updates: socket.io on this port (path `/socket.io`), token as `auth: {"token"}`; `subscribe` with `{"devices"?, "areas"?}`, events `telemetry`, `status`, `broadcast`; `auth: {"token", "batch": true}` gets `telemetry.batch` arrays (docs/live-feed.md).',
].join('\n');

export async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Keng control API', version, description: DESCRIPTION, license: { name: 'Apache-2.0' } },
      tags: TAGS,
      components: {
        securitySchemes: {
          bearer: {
            type: 'http', scheme: 'bearer',
            description: 'The admin token (KENG_ADMIN_TOKEN or <data>/admin-token), a session token from POST /api/v1/auth/login, or an API token',
          },
        },
      },
    },
    refResolver: {
      // Shared schemas keep their $id as their component name (#/components/schemas/ErrorReply).
      buildLocalReference: (json, _base, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`),
    },
  });
}

/** Swagger UI at /docs. Its own CSP, minus upgrade-insecure-requests (Keng is often served over plain HTTP on a LAN). */
export async function registerDocsUi(app: FastifyInstance): Promise<void> {
  await app.register(swaggerUi, {
    routePrefix: DOCS_PREFIX,
    staticCSP: true,
    transformStaticCSP: (header: string) => header
      .replace(/\s*upgrade-insecure-requests;?/g, '')
      .replace(/ validator\.swagger\.io/g, ''),
    uiConfig: { deepLinking: true, persistAuthorization: false, validatorUrl: null },
  });
}

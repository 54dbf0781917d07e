/**
 * API tokens for machines (OpenAPI at /docs, tag accounts): admins
 * only (policy: tokens.read / tokens.write). The token is shown once, in the
 * 201 reply; listings carry metadata only.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { Errors } from '../../core/errors.js';
import type { Accounts } from '../../auth/accounts.js';
import type { ApiToken } from '../../auth/api-tokens.js';
import { principalOf, type RouteContext } from '../context.js';
import { formatTime, formatTimeOrNull, parseTime } from '../../core/time.js';
import { AUTH_ERRORS, Described, errorResponses } from '../schemas.js';
import { CreatedToken, NewToken, TokenIdParams, TokenMeta } from './account-schemas.js';

export function tokenDto(t: ApiToken, tz: string) {
  return {
    id: t.id, name: t.name, role: t.role, areas: t.areas, createdBy: t.createdBy,
    createdAt: formatTime(t.createdAt, tz), expiresAt: formatTimeOrNull(t.expiresAt, tz),
    lastUsedAt: formatTimeOrNull(t.lastUsedAt, tz), revoked: t.revokedAt !== null, revokedAt: formatTimeOrNull(t.revokedAt, tz),
  };
}

export const tokenRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext; accounts: Accounts }> = async (app, { ctx, accounts }) => {
  const { policy, tz } = ctx;

  app.post('/tokens', {
    schema: {
      tags: ['accounts'], summary: 'Create an API token (admin)', security: [{ bearer: [] }],
      description: 'For machines such as the IOC (role `service` with the province\'s area). The `token` (kengt_…) is shown only in this reply.',
      body: NewToken,
      response: { 201: Described(CreatedToken, 'The token (shown only here) and its metadata'), ...errorResponses(...AUTH_ERRORS, 413, 415, 422) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'tokens.write');
    const b = req.body;
    const areas = accounts.users.normaliseAreas(b.role, b.areas ?? []);
    if (!policy.canGrant(p, b.role, areas)) throw Errors.FORBIDDEN(`role ${p.role} may not create a token with role ${b.role} in these areas`);
    const expiresAt = b.expiresAt === undefined ? null : parseTime(b.expiresAt, 'expiresAt');
    const { token, meta } = await accounts.tokens.create({ name: b.name, role: b.role, areas, expiresAt }, { actor: p, ip: req.ip });
    reply.status(201).header('cache-control', 'no-store');
    return { ...tokenDto(meta, tz), token };
  });

  app.get('/tokens', {
    schema: {
      tags: ['accounts'], summary: 'List API tokens (admin; metadata only)', security: [{ bearer: [] }],
      response: { 200: Type.Array(TokenMeta, { description: 'Every token, revoked ones included' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'tokens.read');
    return (await accounts.tokens.list()).map((t) => tokenDto(t, tz));
  });

  app.delete('/tokens/:id', {
    schema: {
      tags: ['accounts'], summary: 'Revoke an API token (admin)', security: [{ bearer: [] }],
      params: TokenIdParams,
      response: { 204: Type.Null({ description: 'Revoked (it stops working at once; on the other nodes of a cluster within 5 s)' }), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'tokens.write');
    await accounts.tokens.revoke(req.params.id, { actor: p, ip: req.ip });
    return reply.status(204).send(null);
  });
};

/**
 * Login and logout (docs/roles.md). Login is the one /api/v1 route
 * without a bearer token: `loginRoutes` is registered outside the auth hook,
 * `sessionRoutes` inside it.
 *
 * Brute force (auth/login-guard.ts, docs/roles.md "Logging in"): per-address
 * and per-username failures give a growing delay (429 KENG_ERR_RATE_LIMITED
 * with Retry-After, no password check during the delay) and 10 failures lock
 * the username for a while (423 KENG_ERR_ACCOUNT_LOCKED with Retry-After)
 * unless an admin unlocks it earlier. Unknown usernames and wrong passwords
 * get the same reply after the same work.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { Errors } from '../../core/errors.js';
import { parseBearer } from '../../auth/chain.js';
import type { Accounts } from '../../auth/accounts.js';
import type { LoginError } from '../../auth/login.js';
import { principalOf, type RouteContext } from '../context.js';
import { formatTime } from '../../core/time.js';
import { AUTH_ERRORS, Described, errorResponses } from '../schemas.js';
import { LoginBody, LoginReply, Me } from './account-schemas.js';

type Opts = { ctx: RouteContext; accounts: Accounts };

export const loginRoutes: FastifyPluginAsyncTypebox<Opts> = async (app, { ctx, accounts }) => {
  app.post('/auth/login', {
    schema: {
      tags: ['accounts'], summary: 'Log in: username and password → session token',
      description: 'Returns an opaque session token valid for 12 hours from login (fixed, not extended by use). '
        + 'Wrong username or password: 401 KENG_ERR_LOGIN_FAILED. After a failure the next attempt must wait '
        + '(1, 2, 4 … 60 s per username; per client address after 5 failures, up to 5 min): 429 KENG_ERR_RATE_LIMITED with Retry-After. '
        + 'After 10 failures in a row the account is locked for 15 min (longer when it happens again, up to 24 h): '
        + '423 KENG_ERR_ACCOUNT_LOCKED with Retry-After, until then or until an admin unlocks it. The last usable admin '
        + 'account is locked only for the addresses that failed. Addresses the user logged in from recently are not held up '
        + 'by failures from elsewhere (docs/roles.md, "Logging in").',
      body: LoginBody,
      response: { 200: Described(LoginReply, 'The session'), ...errorResponses(400, 401, 413, 415, 423, 429) },
    },
  }, async (req, reply) => {
    try {
      const r = await accounts.login.login(req.body.username, req.body.password, req.ip);
      reply.header('cache-control', 'no-store');
      return { token: r.token, expiresAt: formatTime(r.expiresAt, ctx.tz), username: r.principal.id, role: r.principal.role, areas: r.principal.areas };
    } catch (err) {
      const s = (err as LoginError).retryAfterSec;
      if (s !== undefined) reply.header('retry-after', String(s));
      throw err;
    }
  });
};

export const sessionRoutes: FastifyPluginAsyncTypebox<Opts> = async (app, { accounts }) => {
  app.post('/auth/logout', {
    schema: {
      tags: ['accounts'], summary: 'Log out: revoke the current session token', security: [{ bearer: [] }],
      description: 'Only for session tokens (400 KENG_ERR_NOT_A_SESSION for the admin token or an API token).',
      response: { 204: Type.Null({ description: 'The session token no longer works' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    const token = parseBearer(req.headers.authorization);
    if (p.kind !== 'user' || !token || !(await accounts.login.logout(token, req.ip))) throw Errors.NOT_A_SESSION('use DELETE /api/v1/tokens/{id} for API tokens');
    return reply.status(204).send(null);
  });

  app.get('/auth/me', {
    schema: {
      tags: ['accounts'], summary: 'Who am I: the caller\'s kind, id, role and areas', security: [{ bearer: [] }],
      response: { 200: Described(Me, 'The authenticated principal'), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    const p = principalOf(req);
    // Keng's own principals (a sensor rule raising an alert) act inside the server: none comes with a bearer token.
    if (p.kind === 'system') throw Errors.UNAUTHENTICATED();
    return { kind: p.kind, id: p.id, role: p.role, areas: p.areas };
  });
};

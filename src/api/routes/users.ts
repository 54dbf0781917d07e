/**
 * Users (OpenAPI at /docs, tag accounts): admins manage everyone; an
 * operator manages viewers within the operator's areas (policy.canGrant) and
 * sees only those; anyone may change their own password with
 * `currentPassword`. A user outside what the caller may manage is 404, and
 * creating one with a name taken outside it is the generic 409
 * KENG_ERR_USERNAME_UNAVAILABLE (docs/roles.md, "Usernames").
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { Errors } from '../../core/errors.js';
import type { Accounts } from '../../auth/accounts.js';
import { guardRefusal, type LoginError } from '../../auth/login.js';
import type { Principal } from '../../auth/types.js';
import type { User as UserRec } from '../../auth/users.js';
import { principalOf, type RouteContext } from '../context.js';
import { formatTime, formatTimeOrNull } from '../../core/time.js';
import { AUTH_ERRORS, Described, errorResponses } from '../schemas.js';
import { NewUser, User, UserPatch, UsernameParams } from './account-schemas.js';

export function userDto(u: UserRec, tz: string) {
  return {
    username: u.username, role: u.role, areas: u.areas, disabled: u.disabled,
    locked: u.lockedAt !== null, lockedAt: formatTimeOrNull(u.lockedAt, tz), lockedUntil: formatTimeOrNull(u.lockedUntil, tz),
    createdAt: formatTime(u.createdAt, tz), updatedAt: formatTime(u.updatedAt, tz), createdBy: u.createdBy,
  };
}

export const userRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext; accounts: Accounts }> = async (app, { ctx, accounts }) => {
  const { policy, tz } = ctx;
  const { users } = accounts;
  /** May `p` see and manage `u`? Admin: everyone. Operator: viewers wholly within its scope. */
  const manages = (p: Principal, u: UserRec): boolean => policy.can(p, 'users.read') && policy.canGrant(p, u.role, u.areas);
  const target = async (p: Principal, username: string): Promise<UserRec> => {
    const u = await users.get(username);
    if (!u || !manages(p, u)) throw Errors.NOT_FOUND(`User "${username}"`);
    return u;
  };

  app.post('/users', {
    schema: {
      tags: ['accounts'], summary: 'Create a user', security: [{ bearer: [] }],
      description: 'Admins create any role; an operator may create viewers within the operator\'s own areas. '
        + 'Password: at least 10 characters, no space at either end, not the username, and not easy to guess '
        + '(strength 3 of 4 or more); else 400 KENG_ERR_WEAK_PASSWORD saying why. Admins get areas ["*"]. '
        + 'A username is unique in the installation: 409 KENG_ERR_USER_EXISTS when the caller can see the user that has it, '
        + '409 KENG_ERR_USERNAME_UNAVAILABLE for a reserved name or one taken outside what the caller manages.',
      body: NewUser,
      response: { 201: Described(User, 'The created user'), ...errorResponses(...AUTH_ERRORS, 409, 413, 415, 422) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'users.write');
    const b = req.body;
    const areas = b.areas ?? [];
    if (!policy.canGrant(p, b.role, b.role === 'admin' ? ['*'] : areas)) throw Errors.FORBIDDEN(`role ${p.role} may not create an account with role ${b.role} in these areas`);
    const u = await users.create({ username: b.username, password: b.password, role: b.role, areas }, { actor: p, ip: req.ip }, (x) => manages(p, x));
    reply.status(201).header('location', `/api/v1/users/${encodeURIComponent(u.username)}`);
    return userDto(u, tz);
  });

  app.get('/users', {
    schema: {
      tags: ['accounts'], summary: 'List users', security: [{ bearer: [] }],
      description: 'Admins see every user; an operator the viewers within its areas.',
      response: { 200: Type.Array(User, { description: 'Users the caller manages' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    const p = principalOf(req);
    policy.assert(p, 'users.read');
    return (await users.list()).filter((u) => manages(p, u)).map((u) => userDto(u, tz));
  });

  app.patch('/users/:username', {
    schema: {
      tags: ['accounts'], summary: 'Change a user', security: [{ bearer: [] }],
      description: 'Password, role, areas, disabled, unlock (admins only: ends a lock after failed logins at once, for everyone '
        + 'and for single addresses). A new password or `disabled: true` ends the user\'s sessions at once. Users (admins '
        + 'included) change their own password with `{"password","currentPassword"}`; a wrong currentPassword counts as a failed login.',
      params: UsernameParams,
      body: UserPatch,
      response: { 200: Described(User, 'The user after the change'), ...errorResponses(...AUTH_ERRORS, 404, 413, 415, 422, 423, 429) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    const { username } = req.params;
    const { currentPassword, ...patch } = req.body;
    const selfChange = p.kind === 'user' && p.id === username && Object.keys(patch).every((k) => k === 'password') && patch.password !== undefined;
    if (selfChange) {
      try {
        await checkCurrentPassword(accounts, username, currentPassword, req.ip);
      } catch (err) {
        const s = (err as LoginError).retryAfterSec;
        if (s !== undefined) reply.header('retry-after', String(s));
        throw err;
      }
      return userDto(await users.update(username, { password: patch.password }, { actor: p, ip: req.ip }), tz);
    }
    policy.assert(p, 'users.write');
    const u = await target(p, username);
    if (patch.unlock && p.role !== 'admin') throw Errors.FORBIDDEN('only an admin may unlock an account');
    const role = patch.role ?? u.role;
    const areas = role === 'admin' ? ['*'] : patch.areas ?? (u.role === 'admin' ? [] : u.areas);
    if (!policy.canGrant(p, role, areas)) throw Errors.FORBIDDEN(`role ${p.role} may not give ${username} role ${role} in these areas`);
    const areaPatch = patch.areas !== undefined || patch.role !== undefined ? { areas } : {};
    return userDto(await users.update(username, { ...patch, ...areaPatch }, { actor: p, ip: req.ip }), tz);
  });

  app.delete('/users/:username', {
    schema: {
      tags: ['accounts'], summary: 'Delete a user', security: [{ bearer: [] }],
      description: 'Ends the user\'s sessions. Admins: any user; operators: viewers within their areas.',
      params: UsernameParams,
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'users.write');
    await target(p, req.params.username);
    await users.delete(req.params.username, { actor: p, ip: req.ip });
    return reply.status(204).send(null);
  });
};

/** Self-service password change: the current password is checked behind the login guard. */
async function checkCurrentPassword(accounts: Accounts, username: string, current: string | undefined, ip: string): Promise<void> {
  if (current === undefined) throw Errors.VALIDATION('currentPassword is required to change your own password');
  const v = await accounts.guard.begin(username, ip);
  if (!v.allowed) throw guardRefusal(v);
  const stored = await accounts.users.passwordHash(username);
  const ok = stored !== null && current.length <= 1024 && await accounts.hasher.verify(current, stored.hash);
  if (!ok) {
    await accounts.guard.fail(username, ip);
    throw Errors.FORBIDDEN('the current password is wrong');
  }
  await accounts.guard.succeed(username, ip);
}

/**
 * installAccounts(app): wires users, sessions, API tokens, the login guard
 * and the audit log into a built (not yet started) Keng app. Call it from
 * buildApp before api.start() (the state store may still be closed: the
 * services open statements lazily).
 *
 *  - bearer authenticators: user sessions (kengs_…) and API tokens (kengt_…)
 *    join the admin token in the API's chain;
 *  - routes: POST /api/v1/auth/login (no token), and behind the token
 *    /auth/logout, /auth/me, /users, /tokens, /audit;
 *  - the audit log is bound to the registry, so the areas and devices routes
 *    (and any module holding the registry) record through auditFor(registry).
 */
import type { FastifyInstance } from 'fastify';
import { systemClock, type Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import type { ApiExtension } from '../api/server.js';
import type { RouteContext } from '../api/context.js';
import { bindAudit } from '../audit/index.js';
import { loginRoutes, sessionRoutes } from '../api/routes/auth.js';
import { userRoutes } from '../api/routes/users.js';
import { tokenRoutes } from '../api/routes/tokens.js';
import { auditRoutes } from '../api/routes/audit.js';
import { createAccounts, type Accounts, type AccountsOptions } from './accounts.js';
import { ApiTokenAuthenticator } from './api-tokens.js';
import { UserSessionAuthenticator } from './sessions.js';
import type { StateSource } from './store.js';
import type { Authenticator } from './types.js';
import type { AreaLookup } from './users.js';

/** What installAccounts needs of the app (KengApp fits). */
export interface AccountsHost {
  api: {
    addAuthenticator(a: Authenticator): void;
    extend(fn: ApiExtension, opts?: { secured?: boolean; prefix?: string }): void;
  };
  stateDb: StateSource;
  registry: AreaLookup & object;
  logger: Logger;
  /** The app's clock (KengApp does not expose one: pass it here or in opts.clock). */
  clock?: Clock;
}

export type InstallOptions = Pick<AccountsOptions, 'sessionTtlMs' | 'passwords' | 'guard'> & { clock?: Clock };

export function installAccounts(app: AccountsHost, opts: InstallOptions = {}): Accounts {
  const { clock = app.clock ?? systemClock, ...rest } = opts;
  const accounts = createAccounts({
    state: app.stateDb, clock, logger: app.logger.child({ module: 'auth' }), areas: app.registry, ...rest,
  });
  app.api.addAuthenticator(new UserSessionAuthenticator(accounts.sessions));
  app.api.addAuthenticator(new ApiTokenAuthenticator(accounts.tokens));
  bindAudit(app.registry, accounts.audit);
  const plugin = (fn: unknown) => async (sub: FastifyInstance, ctx: RouteContext): Promise<void> => {
    await sub.register(fn as Parameters<FastifyInstance['register']>[0], { ctx, accounts });
  };
  app.api.extend(plugin(loginRoutes), { secured: false, prefix: '/api/v1' });
  app.api.extend(plugin(sessionRoutes));
  app.api.extend(plugin(userRoutes));
  app.api.extend(plugin(tokenRoutes));
  app.api.extend(plugin(auditRoutes));
  return accounts;
}

/**
 * Who is calling the API. Routes only ever see a Principal and ask the
 * policy (policy.ts) what it may do; how the bearer token was checked is the
 * business of an Authenticator. Today only the admin token exists; users
 * (session tokens from POST /api/v1/auth/login) and API tokens for machines
 * (the IOC) are further Authenticators added to the chain, without touching
 * the routes.
 */

/** Spec http-api.md "Auth": the four roles. */
export type Role = 'admin' | 'operator' | 'viewer' | 'service';
export const ROLES: readonly Role[] = ['admin', 'operator', 'viewer', 'service'];

/** Wildcard area scope: every area (the admin principal, or e.g. a provincial IOC token). */
export const ALL_AREAS = '*';

export interface Principal {
  /**
   * How the caller authenticated: the admin token, a user session, or an API
   * token; `system` is Keng acting on its own (a sensor rule raising an alert),
   * never the result of a bearer token.
   */
  kind: 'admin' | 'user' | 'token' | 'system';
  /** Stable id for audit logs: "admin", a username, an API token id, or e.g. "rule:<id>". */
  id: string;
  role: Role;
  /**
   * Area codes the principal is scoped to; each covers the area's whole
   * subtree (a commune covers its villages). `["*"]` = every area. Ignored for
   * role admin, which always has every area.
   */
  areas: string[];
}

/**
 * Checks a bearer token. Returns null when the token is not one this
 * authenticator knows (the next one in the chain is tried); never throws for
 * a bad token. Must take the same time for wrong tokens of equal length
 * (compare hashes in constant time). May answer at once (the admin token) or
 * after a database read (sessions, API tokens): callers always await.
 */
export interface Authenticator {
  authenticate(bearer: string): Principal | null | Promise<Principal | null>;
}

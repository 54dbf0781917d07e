/**
 * Who may read the monitoring endpoints: `GET /metrics` and the details of
 * `GET /readyz` (each part's state, connected device counts, error texts
 * with file paths). Open only with config `http.openMetrics` (a Prometheus
 * behind a firewall that already restricts them); otherwise a bearer token
 * of role `admin` or `service` (the IOC's or a monitoring system's API token).
 *
 * The roles are named here rather than as an action of auth/policy.ts, which
 * is owned with the login code: the policy's matrix (docs/roles.md) lists the
 * API's resources; monitoring is about the installation as a whole, like the
 * admin-only scheduler status. Move it into the policy as `metrics.read` when
 * that module is next changed.
 */
import type { FastifyRequest } from 'fastify';
import { parseBearer } from '../auth/chain.js';
import type { Authenticator, Principal, Role } from '../auth/types.js';
import { Errors } from '../core/errors.js';

export const MONITORING_ROLES: ReadonlySet<Role> = new Set<Role>(['admin', 'service']);

/** The caller's principal when its bearer token is valid and of a monitoring role; null otherwise (never throws). */
export async function monitoringPrincipal(req: FastifyRequest, authenticator: Authenticator): Promise<Principal | null> {
  const token = parseBearer(req.headers.authorization);
  const p = token ? await authenticator.authenticate(token) : null;
  return p && MONITORING_ROLES.has(p.role) ? p : null;
}

/** onRequest hook for /metrics: 401 without a valid token, 403 for a role that may not read monitoring data. */
export function requireMonitoring(authenticator: Authenticator) {
  return async function monitoringOnly(req: FastifyRequest): Promise<void> {
    const token = parseBearer(req.headers.authorization);
    const p = token ? await authenticator.authenticate(token) : null;
    if (!p) throw Errors.UNAUTHENTICATED();
    if (!MONITORING_ROLES.has(p.role)) throw Errors.FORBIDDEN('monitoring data needs a token of role admin or service');
    req.principal = p;
  };
}

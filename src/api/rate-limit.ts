/**
 * Bounded work per client address over HTTP (config `http.rateLimit`,
 * `http.maxConnectionsPerIp`, `http.exemptLoopback`; config/README.md).
 *
 * Requests: @fastify/rate-limit, counted per address (IPv6 per /64) in a
 * fixed window. Applied as the first onRequest hook at the root, so it also
 * counts requests that authentication then refuses (token guessing, login
 * floods) and requests for unknown routes (scanners): the plugin's own
 * per-route hooks would run after the /api/v1 authentication hook. Over the
 * limit: 429 KENG_ERR_RATE_LIMITED in the one error shape, with Retry-After.
 *
 * Not counted (route option `config: { rateLimit: false }`): /healthz,
 * /readyz and /metrics (probes and scrapes), and the signed media links
 * loudspeakers fetch (a whole village behind one NAT fetches an alert's audio
 * at once; the signature is their guard). socket.io requests never reach
 * fastify (engine.io answers them first); the live feed has its own limits.
 *
 * Connections: core/connection-limit.ts on the HTTP server (socket.io's too).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import type { Config } from '../config/index.js';
import { limitConnectionsPerIp, PerIpConnections } from '../core/connection-limit.js';
import { Errors, withDetails } from '../core/errors.js';
import { counterOn, type Metrics } from '../core/metrics.js';
import { isLoopback } from '../core/net-ranges.js';

type HttpConfig = Config['http'];

/** Route option that exempts a route from the request limit (the signed media links). */
export const NOT_RATE_LIMITED = { rateLimit: false } as const;

function exempt(req: FastifyRequest, exemptLoopback: boolean): boolean {
  return (exemptLoopback && isLoopback(req.socket.remoteAddress)) || req.routeOptions.config?.rateLimit === false;
}

/** Registers the request limit; call after CORS (a 429 must still carry CORS headers) and before any route. */
export async function registerRateLimit(app: FastifyInstance, http: HttpConfig): Promise<void> {
  const { max, timeWindowSec } = http.rateLimit;
  if (max <= 0) return;
  await app.register(rateLimit, {
    global: false, // applied by the root hook below, ahead of authentication
    max,
    timeWindow: timeWindowSec * 1000,
    allowList: (req) => exempt(req, http.exemptLoopback),
    errorResponseBuilder: (_req, c) => withDetails(
      Errors.RATE_LIMITED(`more than ${c.max} requests within ${timeWindowSec} s from this address; retry in ${c.after}`),
      { retryAfterSec: Math.max(1, Math.ceil(c.ttl / 1000)) },
    ),
  });
  app.addHook('onRequest', app.rateLimit());
}

/** Closes HTTP (and socket.io) connections beyond `http.maxConnectionsPerIp` from one address. */
export function limitHttpConnections(app: FastifyInstance, http: HttpConfig, metrics: Metrics): void {
  if (http.maxConnectionsPerIp <= 0) return;
  const refused = counterOn(metrics.registry, 'keng_http_connections_refused_total', 'HTTP connections closed at once: too many open from one address (http.maxConnectionsPerIp)');
  const limit = new PerIpConnections({ maxPerIp: http.maxConnectionsPerIp, exemptLoopback: http.exemptLoopback });
  limitConnectionsPerIp(app.server, limit, () => refused.inc());
}

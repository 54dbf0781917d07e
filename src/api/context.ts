/** What route plugins get: the services they call and the request's principal. */
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Config } from '../config/index.js';
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import type { Metrics } from '../core/metrics.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import type { TelemetryStore } from '../storage/telemetry/types.js';
import type { BrokerPort } from '../broker/types.js';
import type { Authenticator, Principal } from '../auth/types.js';
import type { Policy } from '../auth/policy.js';
import type { AuditRecorder } from '../audit/log.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the /api/v1 auth hook; null on public routes. */
    principal: Principal | null;
  }
}

export type Api = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxTypeProvider>;

/** A readiness check for /readyz: ok plus whatever detail helps an operator. */
export type ReadyCheck = () => Promise<{ ok: boolean; detail?: Record<string, unknown> }> | { ok: boolean; detail?: Record<string, unknown> };

/**
 * The services the API is built on. Declared once because the server is handed
 * them (ApiServerOptions) and passes the same objects on to every route
 * (RouteContext): a service added here reaches both.
 */
export interface ApiCoreServices {
  config: Readonly<Config>;
  registry: DeviceRegistryApi;
  store: TelemetryStore;
  broker: BrokerPort;
  /** Bearer tokens → principals (the app's chain: admin token, user sessions, API tokens). */
  authenticator: Authenticator;
  /** Who may do what where; the same object MQTT service clients and the live feed use. */
  policy: Policy;
  /** Records every change made through the API (the app's audit log). */
  audit: AuditRecorder;
  metrics: Metrics;
  clock: Clock;
}

export interface RouteContext extends ApiCoreServices {
  /** Time zone for every time the API returns (config.tz). */
  tz: string;
  /** Most points one telemetry request may return (raw page size / aggregate windows). */
  maxPoints: number;
  /** GET /metrics and /readyz details without a token (config http.openMetrics; monitoring-access.ts). */
  openMetrics: boolean;
  /** Checks reported by /readyz besides broker and telemetry store (e.g. the state store). */
  readyChecks: Record<string, ReadyCheck>;
  /** True once stop() began: /readyz answers 503. */
  isClosing(): boolean;
}

/** The authenticated caller; the /api/v1 hook guarantees it is set. */
export function principalOf(req: FastifyRequest): Principal {
  if (!req.principal) throw Errors.UNAUTHENTICATED();
  return req.principal;
}

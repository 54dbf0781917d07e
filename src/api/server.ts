/**
 * The HTTP control API: fastify 5 with TypeBox schemas, one plugin per
 * resource under src/api/routes (all registered in routes/index.ts), one
 * error shape, bearer auth on every /api/v1 route, OpenAPI at /docs. The
 * authenticator chain and the access policy are the app's (built in the
 * wiring and shared with MQTT and the live feed), passed in here.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import cors from '@fastify/cors';
import helmet from '@fastify/helmet';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { EventBus } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import { Errors } from '../core/errors.js';
import type { TlsSource } from '../tls.js';
import type { Api, ApiCoreServices, ReadyCheck, RouteContext } from './context.js';
import { bearerAuth } from './auth-hook.js';
import { sendError } from './errors.js';
import { DebugRequestLogs } from './log-controller.js';
import { limitHttpConnections, registerRateLimit } from './rate-limit.js';
import { ErrorReply } from './schemas.js';
import { registerDocsUi, registerOpenApi } from './routes/docs.js';
import { registerPublicRoutes, registerSecuredRoutes, type ApiServices } from './routes/index.js';

export const API_PREFIX = '/api/v1';
export const API_VERSION = '1.0.0';
/** Most points one telemetry request returns (raw page / aggregate windows). */
export const DEFAULT_MAX_POINTS = 10_000;

export interface ApiServerOptions extends ApiCoreServices {
  /** The domain services whose routes are served (see routes/index.ts). */
  services?: ApiServices;
  bus: EventBus;
  logger: Logger;
  /**
   * Extra /readyz checks, added to the default `state` one (the registry answers: a listAreas() probe);
   * a check named `state` replaces it, e.g. `{ state: () => stateDb.health() }`.
   */
  readyChecks?: Record<string, ReadyCheck>;
  maxPoints?: number;
  /** When it yields material (tls.certFile + tls.keyFile set), HTTPS is served on http.port instead of HTTP. */
  tls?: Pick<TlsSource, 'load'> | null;
}

/** Extra routes (tests add probe routes this way; product routes live in routes/index.ts). */
export type ApiExtension = (app: FastifyInstance, ctx: RouteContext) => Promise<void> | void;

export class ApiServer implements Component {
  readonly name = 'api';
  private app: Api | null = null;
  private closing = false;
  private bound: { host: string; port: number } | null = null;
  private readonly extensions: Array<{ fn: ApiExtension; prefix?: string; secured: boolean }> = [];

  constructor(private readonly opts: ApiServerOptions) {}

  /**
   * Add routes before start(). With `secured` (default) they sit under /api/v1
   * behind the bearer-token hook and see `req.principal`.
   */
  extend(fn: ApiExtension, opts: { secured?: boolean; prefix?: string } = {}): void {
    if (this.app) throw new Error('ApiServer.extend() must be called before start()');
    this.extensions.push({ fn, prefix: opts.prefix, secured: opts.secured ?? true });
  }

  /** The fastify instance (after build()/start()): inject() in tests, the HTTP server for socket.io. */
  get fastify(): FastifyInstance {
    if (!this.app) throw new Error('ApiServer not built yet');
    return this.app as unknown as FastifyInstance;
  }

  get context(): RouteContext {
    const o = this.opts;
    return {
      config: o.config, registry: o.registry, store: o.store, broker: o.broker,
      authenticator: o.authenticator, policy: o.policy, audit: o.audit, metrics: o.metrics, clock: o.clock,
      tz: o.config.tz, maxPoints: o.maxPoints ?? DEFAULT_MAX_POINTS,
      openMetrics: o.config.http.openMetrics,
      readyChecks: { state: () => { o.registry.listAreas(); return { ok: true }; }, ...o.readyChecks },
      isClosing: () => this.closing,
    };
  }

  /** Build the fastify instance and load every plugin, without listening (tests use inject()). */
  async build(): Promise<FastifyInstance> {
    if (this.app) return this.fastify;
    const { config, logger, metrics } = this.opts;
    const ctx = this.context;
    const bodyLimit = config.http.bodyLimitBytes;
    const tls = this.opts.tls?.load() ?? null; // throws ConfigError naming the setting
    const app = Fastify({
      ...(tls ? { https: { key: tls.key, cert: tls.cert, ...(tls.ca ? { ca: tls.ca } : {}) } } : {}),
      loggerInstance: logger,
      logController: new DebugRequestLogs(),
      bodyLimit,
      // req.ip (login guard, audit, sessions): the client behind the proxies named in http.trustProxy.
      trustProxy: Array.isArray(config.http.trustProxy) ? [...config.http.trustProxy] : config.http.trustProxy,
      ajv: { customOptions: { allErrors: true, removeAdditional: false, coerceTypes: 'array', useDefaults: true } },
      routerOptions: { ignoreTrailingSlash: true },
    }).withTypeProvider<TypeBoxTypeProvider>() as unknown as Api;
    this.app = app;

    app.decorateRequest('principal', null);
    app.setErrorHandler((err, req, reply) => sendError(req, reply, err, metrics, bodyLimit));
    app.setNotFoundHandler((req, reply) => sendError(req, reply, Errors.ROUTE_NOT_FOUND(req.method, (req.url.split('?')[0] ?? '').slice(0, 200)), metrics));
    app.addSchema(ErrorReply);

    await app.register(helmet, {
      contentSecurityPolicy: { directives: { upgradeInsecureRequests: null } },
      // Keng is often reached over plain HTTP on a LAN: don't pin browsers to HTTPS.
      strictTransportSecurity: false,
    });
    const origins = config.http.corsOrigins;
    await app.register(cors, {
      origin: origins.length === 0 ? false : origins.includes('*') ? '*' : [...origins],
      methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
      allowedHeaders: ['Authorization', 'Content-Type'],
      maxAge: 600,
    });
    // Bounded work per client address: requests (before authentication) and open connections (rate-limit.ts).
    await registerRateLimit(app as unknown as FastifyInstance, config.http);
    limitHttpConnections(app as unknown as FastifyInstance, config.http, metrics);
    await registerOpenApi(app as unknown as FastifyInstance, API_VERSION);

    const services = this.opts.services ?? {};
    await registerPublicRoutes(app as unknown as FastifyInstance, ctx, services, API_PREFIX);
    const auth = bearerAuth(this.opts.authenticator);
    await app.register(async (v1) => {
      v1.addHook('onRequest', auth);
      await registerSecuredRoutes(v1 as unknown as FastifyInstance, ctx, services);
      for (const e of this.extensions.filter((x) => x.secured)) await v1.register(async (sub) => { await e.fn(sub as unknown as FastifyInstance, ctx); }, { prefix: e.prefix ?? '' });
    }, { prefix: API_PREFIX });
    for (const e of this.extensions.filter((x) => !x.secured)) await app.register(async (sub) => { await e.fn(sub as unknown as FastifyInstance, ctx); }, { prefix: e.prefix ?? '' });

    await registerDocsUi(app as unknown as FastifyInstance);
    await app.ready();
    return this.fastify;
  }

  async start(): Promise<void> {
    const app = await this.build();
    const { host, port } = this.opts.config.http;
    await app.listen({ host, port });
    const addr = app.server.address();
    this.bound = typeof addr === 'object' && addr ? { host: addr.address, port: addr.port } : { host, port };
    this.opts.logger.info({ ...this.bound, https: Boolean(this.opts.tls?.load()) }, 'HTTP API listening');
  }

  /**
   * The process is stopping: /readyz answers 503 from now on, while the parts stopped before the
   * API (the live feed, the scheduler) finish, so a load balancer takes this node out at once.
   */
  beginClosing(): void {
    this.closing = true;
  }

  async stop(): Promise<void> {
    this.closing = true;
    if (this.app) await this.app.close();
  }

  /** The bound address (the real port when config.http.port is 0). */
  address(): { host: string; port: number } {
    if (!this.bound) throw new Error('ApiServer not started');
    return this.bound;
  }
}

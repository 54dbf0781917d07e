/**
 * GET /healthz (process alive) and GET /readyz (broker, state store and
 * telemetry store usable; other parts, e.g. `media`, add their own checks).
 *
 * /readyz answers every caller ready or not (load balancers, container
 * health checks hold no token); each part's result (device counts, error
 * texts with file paths) only to a monitoring token or with http.openMetrics
 * (monitoring-access.ts).
 */
import { withTimeout } from '../../core/async.js';
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Errors, withDetails } from '../../core/errors.js';
import type { ReadyCheck, RouteContext } from '../context.js';
import { monitoringPrincipal } from '../monitoring-access.js';
import { errorResponses } from '../schemas.js';

const CHECK_TIMEOUT_MS = 2_000;

const Check = Type.Object({ ok: Type.Boolean(), detail: Type.Optional(Type.Record(Type.String(), Type.Unknown())) });
const Checks = Type.Unsafe<Record<string, { ok: boolean; detail?: Record<string, unknown> }>>({
  type: 'object', additionalProperties: Check, description: 'One entry per part: state, broker, telemetry, media (and liveBus, nodeLease in cluster mode)',
});

async function runCheck(check: ReadyCheck): Promise<{ ok: boolean; detail?: Record<string, unknown> }> {
  try {
    return await withTimeout(Promise.resolve().then(check), CHECK_TIMEOUT_MS);
  } catch (err) {
    return { ok: false, detail: { error: (err as Error).message } };
  }
}

export const healthRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext }> = async (app, { ctx }) => {
  app.get('/healthz', {
    config: { rateLimit: false },
    schema: {
      tags: ['health'], summary: 'Liveness', description: 'The process is alive and serving HTTP. No token needed.',
      response: { 200: Type.Object({ status: Type.Literal('ok') }, { description: 'Alive' }) },
    },
  }, async () => ({ status: 'ok' as const }));

  app.get('/readyz', {
    config: { rateLimit: false },
    schema: {
      tags: ['health'], summary: 'Readiness',
      description: 'Ready when the state store, the MQTT broker and the telemetry store are usable. '
        + '503 KENG_ERR_NOT_READY otherwise. No token needed for the status; each part\'s result (`checks`, and '
        + 'error.details.checks on 503) only with a bearer token of role admin or service, or with http.openMetrics. '
        + 'The `media` check (ffprobe, ffmpeg, espeak-ng with its Vietnamese voice, probed at start) never fails readiness: '
        + 'a missing tool shows as `detail.degraded: true` with its `problem`, and only uploads and text-to-speech answer 503. '
        + 'In cluster mode the `liveBus` check (Redis, docs/cluster.md) never fails readiness either: `detail.degraded: true` while Redis is away; '
        + 'nor do failed renewals of `nodeLease` (the node\'s lease, docs/cluster.md "Node leases"): `detail.degraded: true` after two in a row; '
        + 'but `nodeLease` fails (`detail.fenced`) while the node is fenced: no renewal in time, it sends no command and refuses devices.',
      response: {
        200: Type.Object({ status: Type.Literal('ready'), checks: Type.Optional(Checks) }, { description: 'Ready (checks: with a monitoring token)' }),
        ...errorResponses(503),
      },
    },
  }, async (req) => {
    const detailed = ctx.openMetrics || (await monitoringPrincipal(req, ctx.authenticator)) !== null;
    const all: Record<string, ReadyCheck> = {
      ...ctx.readyChecks,
      broker: () => ({ ok: ctx.broker.ready(), detail: { connectedDevices: ctx.broker.connectedCount() } }),
      telemetry: async () => {
        const h = await ctx.store.health();
        return { ok: h.ok, detail: { store: ctx.store.kind, ...h.detail } };
      },
    };
    const names = Object.keys(all);
    const results = await Promise.all(names.map((n) => runCheck(all[n]!)));
    const checks = Object.fromEntries(names.map((n, i) => [n, results[i]!]));
    if (ctx.isClosing()) checks.server = { ok: false, detail: { reason: 'shutting down' } };
    const failing = Object.entries(checks).filter(([, c]) => !c.ok).map(([n]) => n);
    if (failing.length) {
      throw detailed ? withDetails(Errors.NOT_READY(failing.join(', ')), { checks }) : Errors.NOT_READY('a part is not usable (details with a monitoring token)');
    }
    return detailed ? { status: 'ready' as const, checks } : { status: 'ready' as const };
  });
};

/**
 * The API server alone (fakes for registry, store and broker): auth, the one
 * error shape, health, metrics, security headers, CORS, OpenAPI, listening.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Errors } from '../../src/core/errors.js';
import { ADMIN, harness, type Harness } from './api-fakes.js';

let h: Harness | undefined;
afterEach(async () => { await h?.close(); h = undefined; });

const errorShape = (body: any, code: string): void => {
  expect(body).toEqual({ error: { code, message: expect.any(String), ...(body?.error?.details !== undefined ? { details: body.error.details } : {}) } });
  expect(Object.keys(body.error).every((k) => ['code', 'message', 'details'].includes(k))).toBe(true);
};

describe('authentication', () => {
  it('requires a bearer token on every /api/v1 route: 401 KENG_ERR_UNAUTHENTICATED with WWW-Authenticate', async () => {
    h = await harness();
    for (const [method, url] of [['GET', '/api/v1/areas'], ['POST', '/api/v1/areas'], ['GET', '/api/v1/devices'], ['GET', '/api/v1/devices/x'],
      ['DELETE', '/api/v1/devices/x'], ['GET', '/api/v1/devices/x/telemetry'], ['POST', '/api/v1/devices']] as const) {
      for (const token of [null, 'wrong-token', `${ADMIN}x`]) {
        const r = await h.inject(method, url, method === 'POST' ? {} : undefined, token);
        expect(r.status, `${method} ${url} ${token}`).toBe(401);
        errorShape(r.body, 'KENG_ERR_UNAUTHENTICATED');
        expect(r.headers['www-authenticate']).toBe('Bearer realm="keng"');
      }
    }
  });

  it('refuses other schemes and accepts the admin token with any case of "Bearer"', async () => {
    h = await harness();
    expect((await h.inject('GET', '/api/v1/areas', undefined, null, { authorization: `Basic ${ADMIN}` })).status).toBe(401);
    expect((await h.inject('GET', '/api/v1/areas', undefined, null, { authorization: ADMIN })).status).toBe(401);
    expect((await h.inject('GET', '/api/v1/areas', undefined, null, { authorization: `bearer ${ADMIN}` })).status).toBe(200);
    expect((await h.inject('GET', '/api/v1/areas')).status).toBe(200);
  });

  it('authenticates before reading the body (a stranger cannot make us parse 1 MB)', async () => {
    h = await harness();
    const r = await h.inject('POST', '/api/v1/areas', 'x'.repeat(2_000_000), null);
    expect(r.status).toBe(401);
  });
});

describe('errors: one shape, fitting status, counted', () => {
  it('unknown routes: 404 KENG_ERR_ROUTE_NOT_FOUND (with or without token)', async () => {
    h = await harness();
    for (const [m, u, t] of [['GET', '/nope', null], ['GET', '/api/v1/nope', ADMIN], ['PUT', '/api/v1/areas', ADMIN], ['GET', '/api/v2/devices', null]] as const) {
      const r = await h.inject(m, u, undefined, t);
      expect(r.status, `${m} ${u}`).toBe(404);
      errorShape(r.body, 'KENG_ERR_ROUTE_NOT_FOUND');
    }
    expect((await h.inject('GET', '/nope?token=secret')).body.error.message).toBe('Route GET /nope not found');
  });

  it('malformed JSON and empty JSON bodies: 400 KENG_ERR_VALIDATION', async () => {
    h = await harness();
    for (const payload of ['{bad', '', '[1,2', '{"code": }']) {
      const r = await h.inject('POST', '/api/v1/areas', payload, ADMIN, { 'content-type': 'application/json' });
      expect(r.status, payload).toBe(400);
      errorShape(r.body, 'KENG_ERR_VALIDATION');
    }
  });

  it('schema failures list each failing field in details', async () => {
    h = await harness();
    const r = await h.inject('POST', '/api/v1/devices', { id: 'X!', kind: 'robot', area: 'C1', location: { lat: 91, lon: 0 }, colour: 'red' });
    expect(r.status).toBe(400);
    errorShape(r.body, 'KENG_ERR_VALIDATION');
    expect(r.body.error.details).toEqual(expect.arrayContaining([
      { in: 'body', field: 'name', message: 'is required' },
      { in: 'body', field: 'colour', message: 'is not a known property' },
      { in: 'body', field: 'id', message: expect.stringContaining('pattern') },
      { in: 'body', field: 'kind', message: 'must be one of: sensor, speaker, gateway' },
      { in: 'body', field: 'location.lat', message: 'must be <= 90' },
    ]));
    expect(r.body.error.details).toHaveLength(5);
    const q = await h.inject('GET', '/api/v1/devices?online=perhaps&kind=robot');
    expect(q.status).toBe(400);
    expect(q.body.error.details).toEqual([
      { in: 'querystring', field: 'kind', message: 'must be one of: sensor, speaker, gateway' },
      { in: 'querystring', field: 'online', message: 'must be boolean' },
    ]);
  });

  it('a body over http.bodyLimitBytes: 413 KENG_ERR_PAYLOAD_TOO_LARGE', async () => {
    h = await harness({ http: { bodyLimitBytes: 1024 } });
    const r = await h.inject('POST', '/api/v1/areas', { code: 'P1', name: 'x'.repeat(2000), level: 'province' });
    expect(r.status).toBe(413);
    errorShape(r.body, 'KENG_ERR_PAYLOAD_TOO_LARGE');
  });

  it('an unsupported content type: 415 KENG_ERR_UNSUPPORTED_MEDIA_TYPE', async () => {
    h = await harness();
    const r = await h.inject('POST', '/api/v1/areas', '<area/>', ADMIN, { 'content-type': 'application/xml' });
    expect(r.status).toBe(415);
    errorShape(r.body, 'KENG_ERR_UNSUPPORTED_MEDIA_TYPE');
  });

  it('unexpected errors: 500 KENG_ERR_INTERNAL without internals, logged with stack', async () => {
    h = await harness({}, {
      extensions: [(app) => {
        app.get('/boom', async () => { throw new Error('db password=hunter2 at /srv/keng/x.ts'); });
        app.get('/limited', async () => { throw Errors.RATE_LIMITED('slow down'); });
        app.get('/bad-reply', { schema: { response: { 200: { type: 'object', required: ['n'], properties: { n: { type: 'integer' } } } } } }, async () => ({}));
      }],
    });
    const r = await h.inject('GET', '/api/v1/boom');
    expect(r.status).toBe(500);
    expect(r.body).toEqual({ error: { code: 'KENG_ERR_INTERNAL', message: 'Internal error' } });
    expect(r.text).not.toContain('hunter2');
    const logged = h.logs.lines.find((l) => l.level === 50 && (l.err as { message?: string })?.message?.includes('hunter2'));
    expect((logged?.err as { stack?: string }).stack).toContain('Error: db password');
    expect((await h.inject('GET', '/api/v1/bad-reply')).body.error.code).toBe('KENG_ERR_INTERNAL');
    const l = await h.inject('GET', '/api/v1/limited');
    expect(l.status).toBe(429);
    errorShape(l.body, 'KENG_ERR_RATE_LIMITED');
  });

  it('counts every error reply in keng_http_errors_total{code}', async () => {
    h = await harness();
    await h.inject('GET', '/api/v1/areas', undefined, null);
    await h.inject('GET', '/api/v1/areas', undefined, 'bad');
    await h.inject('GET', '/nope');
    await h.inject('GET', '/api/v1/devices/missing');
    const text = (await h.inject('GET', '/metrics')).text;
    expect(text).toContain('keng_http_errors_total{code="KENG_ERR_UNAUTHENTICATED"} 2');
    expect(text).toContain('keng_http_errors_total{code="KENG_ERR_ROUTE_NOT_FOUND"} 1');
    expect(text).toContain('keng_http_errors_total{code="KENG_ERR_NOT_FOUND"} 1');
  });
});

describe('health and readiness', () => {
  it('GET /healthz: 200 {status:"ok"} without a token', async () => {
    h = await harness();
    const r = await h.inject('GET', '/healthz', undefined, null);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ status: 'ok' });
  });

  it('GET /readyz: 200 with each part when state store, broker and telemetry store are usable (monitoring token)', async () => {
    h = await harness();
    const r = await h.inject('GET', '/readyz');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      status: 'ready',
      checks: {
        state: { ok: true },
        broker: { ok: true, detail: { connectedDevices: 3 } },
        telemetry: { ok: true, detail: { store: 'embedded', disk: 'ok' } },
      },
    });
  });

  it('GET /readyz: 503 KENG_ERR_NOT_READY naming the failing parts (monitoring token)', async () => {
    h = await harness();
    h.broker.isReady = false;
    let r = await h.inject('GET', '/readyz');
    expect(r.status).toBe(503);
    errorShape(r.body, 'KENG_ERR_NOT_READY');
    expect(r.body.error.message).toContain('broker');
    expect(r.body.error.details.checks.broker.ok).toBe(false);
    expect(r.body.error.details.checks.telemetry.ok).toBe(true);

    h.broker.isReady = true;
    h.store.healthy = false;
    r = await h.inject('GET', '/readyz');
    expect(r.status).toBe(503);
    expect(r.body.error.details.checks.telemetry).toEqual({ ok: false, detail: { store: 'embedded', disk: 'read-only' } });

    h.store.healthy = true;
    h.store.health = async () => { throw new Error('disk gone'); };
    h.registry.listAreas = () => { throw new Error('SQLITE_CANTOPEN'); };
    r = await h.inject('GET', '/readyz');
    expect(r.status).toBe(503);
    expect(r.body.error.details.checks.telemetry).toEqual({ ok: false, detail: { error: 'disk gone' } });
    expect(r.body.error.details.checks.state).toEqual({ ok: false, detail: { error: 'SQLITE_CANTOPEN' } });
  });

  it('GET /readyz without a monitoring token: the status only, never the parts\' details', async () => {
    h = await harness({}, { authenticators: [roles] });
    for (const token of [null, 'wrong-token', 'viewer-token', 'operator-token']) {
      const r = await h.inject('GET', '/readyz', undefined, token);
      expect(r.status, String(token)).toBe(200);
      expect(r.body).toEqual({ status: 'ready' });
    }
    expect((await h.inject('GET', '/readyz', undefined, 'service-token')).body.checks.broker).toEqual({ ok: true, detail: { connectedDevices: 3 } });
    h.store.health = async () => { throw new Error('cannot open /srv/keng/data/telemetry.db'); };
    const down = await h.inject('GET', '/readyz', undefined, null);
    expect(down.status).toBe(503);
    errorShape(down.body, 'KENG_ERR_NOT_READY');
    expect(down.body.error.details).toBeUndefined();
    expect(down.text).not.toContain('/srv/keng');
    expect(down.text).not.toContain('telemetry');
  });

  it('GET /readyz with http.openMetrics: the details without a token', async () => {
    h = await harness({ http: { openMetrics: true } });
    expect((await h.inject('GET', '/readyz', undefined, null)).body.checks.state).toEqual({ ok: true });
  });
});

/** Tokens of each role (a fake authenticator next to the admin token). */
const roles = {
  authenticate: (t: string) => {
    const role = /^(viewer|operator|service)-token$/.exec(t)?.[1] as 'viewer' | 'operator' | 'service' | undefined;
    return role ? { kind: 'token' as const, id: `${role}-1`, role, areas: ['C1'] } : null;
  },
};

describe('GET /metrics', () => {
  it('needs a bearer token by default: 401 without one (the attack: anyone on the network reading device counts and traffic)', async () => {
    h = await harness({}, { authenticators: [roles] });
    for (const token of [null, 'wrong-token']) {
      const r = await h.inject('GET', '/metrics', undefined, token);
      expect(r.status).toBe(401);
      errorShape(r.body, 'KENG_ERR_UNAUTHENTICATED');
      expect(r.text).not.toContain('keng_');
    }
  });

  it('403 for roles that are not admin or service; 200 in the Prometheus text format for admin and service tokens', async () => {
    h = await harness({}, { authenticators: [roles] });
    for (const token of ['viewer-token', 'operator-token']) {
      const r = await h.inject('GET', '/metrics', undefined, token);
      expect(r.status, token).toBe(403);
      errorShape(r.body, 'KENG_ERR_FORBIDDEN');
    }
    for (const token of [ADMIN, 'service-token']) {
      const r = await h.inject('GET', '/metrics', undefined, token);
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
      for (const name of ['keng_mqtt_connections', 'keng_readings_accepted_total', 'keng_http_errors_total', 'keng_queue_depth_readings']) {
        expect(r.text).toContain(`# TYPE ${name} `);
      }
    }
  });

  it('is open without a token with http.openMetrics (KENG_HTTP_OPEN_METRICS=true)', async () => {
    h = await harness({ http: { openMetrics: true } });
    expect((await h.inject('GET', '/metrics', undefined, null)).status).toBe(200);
  });
});

describe('security headers and CORS', () => {
  it('sends helmet headers; CSP does not force HTTPS (plain HTTP on a LAN)', async () => {
    h = await harness();
    const r = await h.inject('GET', '/api/v1/areas');
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['x-frame-options']).toBe('SAMEORIGIN');
    expect(String(r.headers['content-security-policy'])).toContain("default-src 'self'");
    expect(String(r.headers['content-security-policy'])).not.toContain('upgrade-insecure-requests');
    expect(r.headers['strict-transport-security']).toBeUndefined();
  });

  it('CORS is closed by default', async () => {
    h = await harness();
    const r = await h.inject('OPTIONS', '/api/v1/areas', undefined, null, { origin: 'https://evil.example', 'access-control-request-method': 'GET' });
    expect(r.headers['access-control-allow-origin']).toBeUndefined();
    const g = await h.inject('GET', '/api/v1/areas', undefined, ADMIN, { origin: 'https://evil.example' });
    expect(g.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('CORS allows the configured origins only', async () => {
    h = await harness({ http: { corsOrigins: ['https://ioc.example.vn'] } });
    const ok = await h.inject('OPTIONS', '/api/v1/devices', undefined, null, {
      origin: 'https://ioc.example.vn', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization',
    });
    expect(ok.status).toBe(204);
    expect(ok.headers['access-control-allow-origin']).toBe('https://ioc.example.vn');
    expect(String(ok.headers['access-control-allow-headers']).toLowerCase()).toContain('authorization');
    const other = await h.inject('GET', '/api/v1/areas', undefined, ADMIN, { origin: 'https://evil.example' });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
  });
});

describe('logging', () => {
  it('logs requests at debug level only, never the bearer token', async () => {
    h = await harness();
    await h.inject('GET', '/api/v1/areas');
    await h.inject('GET', '/api/v1/areas', undefined, 'some-wrong-token-value');
    const perRequest = h.logs.lines.filter((l) => /request|route/.test(String(l.msg)));
    expect(perRequest.length).toBeGreaterThan(0);
    expect(perRequest.every((l) => l.level === 20)).toBe(true);
    const all = JSON.stringify(h.logs.lines);
    expect(all).not.toContain(ADMIN);
    expect(all).not.toContain('some-wrong-token-value');
  });
});

describe('OpenAPI at /docs', () => {
  const ROUTES: Array<[string, string]> = [
    ['get', '/healthz'], ['get', '/readyz'], ['get', '/metrics'],
    ['post', '/api/v1/areas'], ['get', '/api/v1/areas'],
    ['post', '/api/v1/devices'], ['get', '/api/v1/devices'], ['get', '/api/v1/devices/{id}'], ['delete', '/api/v1/devices/{id}'],
    ['patch', '/api/v1/devices/{id}'], ['post', '/api/v1/devices/{id}/secret'], ['post', '/api/v1/devices/{id}/token'],
    ['get', '/api/v1/devices/{id}/telemetry'], ['get', '/api/v1/telemetry/latest'],
  ];

  it('/docs/json is an OpenAPI 3 document listing every route with schemas, tags and bearer security', async () => {
    h = await harness();
    const r = await h.inject('GET', '/docs/json', undefined, null);
    expect(r.status).toBe(200);
    const doc = r.body;
    expect(doc.openapi).toMatch(/^3\./);
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.components.schemas.ErrorReply).toBeDefined();
    const listed = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
      .flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`)).sort();
    expect(listed).toEqual(ROUTES.map(([m, p]) => `${m} ${p}`).sort());
    for (const [m, p] of ROUTES) {
      const op = doc.paths[p][m];
      expect(op.tags?.length, `${m} ${p} tags`).toBeGreaterThan(0);
      expect(op.summary, `${m} ${p} summary`).toBeTruthy();
      const ok = Object.keys(op.responses).find((s) => s.startsWith('2'));
      expect(ok, `${m} ${p} success response`).toBeDefined();
      expect(op.responses[ok!].description).not.toBe('Default Response');
      if (p.startsWith('/api/v1')) {
        expect(op.security, `${m} ${p} security`).toEqual([{ bearer: [] }]);
        expect(op.responses['401'], `${m} ${p} 401`).toBeDefined();
        expect(op.responses['400'], `${m} ${p} 400`).toBeDefined();
      }
    }
    expect(doc.paths['/api/v1/devices'].post.requestBody.content['application/json'].schema.required)
      .toEqual(expect.arrayContaining(['id', 'kind', 'name', 'area']));
    expect(doc.paths['/api/v1/devices/{id}'].get.responses['200'].content['application/json'].schema.required)
      .toEqual(['id', 'kind', 'name', 'area', 'location', 'model', 'enabled', 'online', 'lastSeen', 'attributes', 'latest']);
    const q = (doc.paths['/api/v1/devices/{id}/telemetry'].get.parameters as Array<{ name: string; in: string }>).filter((x) => x.in === 'query').map((x) => x.name);
    expect(q).toEqual(expect.arrayContaining(['fields', 'from', 'to', 'every', 'agg']));
  });

  it('/docs serves Swagger UI with a CSP that lets it run over plain HTTP', async () => {
    h = await harness();
    const r = await h.inject('GET', '/docs', undefined, null);
    expect(r.status).toBe(200);
    expect(r.text).toContain('swagger-ui');
    const csp = String(r.headers['content-security-policy']);
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('upgrade-insecure-requests');
    const init = await h.inject('GET', '/docs/static/swagger-initializer.js', undefined, null);
    expect(init.status).toBe(200);
    expect(init.text).toContain('json');
  });
});

describe('listening', () => {
  it('binds config.http.port 0 to a real port and serves over HTTP', async () => {
    h = await harness({ http: { port: 0, host: '127.0.0.1' } });
    await h.api.start();
    const { host, port } = h.api.address();
    expect(host).toBe('127.0.0.1');
    expect(port).toBeGreaterThan(0);
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
    const denied = await fetch(`http://127.0.0.1:${port}/api/v1/devices`);
    expect(denied.status).toBe(401);
  });
});

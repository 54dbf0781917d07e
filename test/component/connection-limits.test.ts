/**
 * Bounded work from one client address, through the real listeners:
 * - HTTP requests over `http.rateLimit` answer 429 KENG_ERR_RATE_LIMITED with
 *   Retry-After, counted before authentication (token guessing is limited
 *   too); probes, scrapes and speakers' signed media links are not counted;
 * - HTTP and MQTT connections over `*.maxConnectionsPerIp` are closed at once;
 * - with the defaults, loopback (tests, benchmarks, the simulator) is exempt.
 * Loopback is what these tests connect from, so most of them switch the
 * exemption off (`exemptLoopback: false`), as an operator could.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, parseMetrics, waitFor } from '../helpers/mqtt.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';

let t: TestApp | undefined;
afterEach(async () => { await t?.stop(); t = undefined; });

const get = (url: string, token?: string): Promise<Response> => fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});

/** A raw keep-alive HTTP connection that sent one request; resolves once the reply (or the close) came. */
async function openHttp(port: number): Promise<{ sock: net.Socket; reply: string; closed: boolean }> {
  const sock = net.connect(port, '127.0.0.1');
  let reply = '';
  let closed = false;
  sock.on('data', (b) => { reply += b.toString(); });
  sock.on('error', () => { /* a refused connection may be reset */ });
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write('GET /healthz HTTP/1.1\r\nHost: keng\r\nConnection: keep-alive\r\n\r\n');
  await new Promise<void>((r) => {
    const done = (): void => { clearInterval(poll); r(); };
    sock.once('close', () => { closed = true; done(); });
    const poll = setInterval(() => { if (reply.includes('\r\n\r\n')) done(); }, 5);
  });
  return { sock, reply, closed };
}

async function metric(name: string): Promise<number> {
  const text = await (await get(`${t!.httpUrl}/metrics`, t!.adminToken)).text();
  return parseMetrics(text).get(name) ?? 0;
}

describe('HTTP request rate per address (http.rateLimit)', () => {
  it('token guessing is cut off: 429 KENG_ERR_RATE_LIMITED with Retry-After after max requests, valid tokens included', async () => {
    t = await startTestApp({ http: { rateLimit: { max: 5, timeWindowSec: 60 }, exemptLoopback: false } });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await get(`${t.httpUrl}/api/v1/areas`, `guess-${i}-0123456789abcdef`)).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401]);
    const r = await get(`${t.httpUrl}/api/v1/areas`, 'guess-6-0123456789abcdef');
    expect(r.status).toBe(429);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(Number(r.headers.get('retry-after'))).toBeLessThanOrEqual(60);
    const body = await r.json() as { error: { code: string; message: string; details: { retryAfterSec: number } } };
    expect(body.error.code).toBe('KENG_ERR_RATE_LIMITED');
    expect(body.error.message).toMatch(/more than 5 requests within 60 s/);
    expect(body.error.details.retryAfterSec).toBeGreaterThan(0);
    // the limit is the address's, whatever the token: the admin is limited too, and so are unknown routes and login
    expect((await get(`${t.httpUrl}/api/v1/areas`, t.adminToken)).status).toBe(429);
    expect((await get(`${t.httpUrl}/wp-login.php`)).status).toBe(429);
    const login = await fetch(`${t.httpUrl}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"username":"a","password":"b"}' });
    expect(login.status).toBe(429);
    // not counted: probes, scrapes, the signed media links speakers fetch
    for (let i = 0; i < 10; i++) {
      expect((await get(`${t.httpUrl}/healthz`)).status).toBe(200);
      expect((await get(`${t.httpUrl}/readyz`)).status).toBe(200);
      expect((await get(`${t.httpUrl}/metrics`, t.adminToken)).status).toBe(200);
      expect((await get(`${t.httpUrl}/media/no-such-media/file?exp=1&sig=x`)).status).toBe(403);
    }
    expect(await metric('keng_http_errors_total{code="KENG_ERR_RATE_LIMITED"}')).toBe(4);
  });

  it('by default loopback is not limited (benchmarks, the simulator): 700 requests in a row all answer', async () => {
    t = await startTestApp();
    const statuses = new Set<number>();
    for (let i = 0; i < 700; i++) statuses.add((await get(`${t.httpUrl}/api/v1/areas`, t.adminToken)).status);
    expect([...statuses]).toEqual([200]);
  });
});

describe('connections per address', () => {
  it('HTTP: the connection over http.maxConnectionsPerIp is closed unanswered; one closes, the next is served', async () => {
    t = await startTestApp({ http: { maxConnectionsPerIp: 3, exemptLoopback: false } });
    const port = new URL(t.httpUrl).port;
    const open = [];
    for (let i = 0; i < 3; i++) {
      const c = await openHttp(Number(port));
      expect(c.reply).toMatch(/^HTTP\/1\.1 200/);
      open.push(c);
    }
    const over = await openHttp(Number(port));
    expect(over.closed).toBe(true);
    expect(over.reply).toBe('');
    open.pop()!.sock.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const next = await openHttp(Number(port));
    expect(next.reply).toMatch(/^HTTP\/1\.1 200/);
    next.sock.destroy();
    for (const c of open) c.sock.destroy();
    await new Promise((r) => setTimeout(r, 50));
    expect(await metric('keng_http_connections_refused_total')).toBe(1);
  });

  it('MQTT: the connection over mqtt.maxConnectionsPerIp is closed before CONNECT; devices below it connect', async () => {
    t = await startTestApp({ mqtt: { maxConnectionsPerIp: 3, exemptLoopback: false } });
    await seedAreas(t, [{ code: 'p', name: 'Tỉnh', level: 'province' }]);
    const creds = await seedDevices(t, ['d1', 'd2', 'd3', 'd4'].map((id) => ({ id, kind: 'sensor' as const, name: id, area: 'p' })));
    const clients = [];
    for (const id of ['d1', 'd2', 'd3']) clients.push(await connectDevice(t.mqttUrl, id, creds[id]!.secret));
    await expect(connectDevice(t.mqttUrl, 'd4', creds.d4!.secret)).rejects.toThrow();
    // idle TCP connections count too (they hold a socket until the CONNECT timeout)
    const raw = net.connect(t.mqttPort, '127.0.0.1');
    raw.on('error', () => undefined);
    await new Promise<void>((r) => raw.once('close', () => r()));
    expect(await metric('keng_mqtt_refused_total{op="connect",reason="per_ip_limit"}')).toBe(2);
    await end(clients.pop()!);
    await waitFor(async () => {
      try { clients.push(await connectDevice(t!.mqttUrl, 'd4', creds.d4!.secret)); return true; } catch { return false; }
    });
    for (const c of clients) await end(c);
  });

  it('by default loopback is not counted: 50 MQTT connections from 127.0.0.1 with a limit of 3', async () => {
    t = await startTestApp({ mqtt: { maxConnectionsPerIp: 3 } });
    const socks = await Promise.all(Array.from({ length: 50 }, () => new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(t!.mqttPort, '127.0.0.1', () => resolve(s));
      s.on('error', reject);
    })));
    await new Promise((r) => setTimeout(r, 100));
    expect(socks.every((s) => !s.destroyed)).toBe(true);
    for (const s of socks) s.destroy();
  });
});

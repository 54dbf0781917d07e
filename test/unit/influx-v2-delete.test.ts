/**
 * The purge of a device on InfluxDB 2.x (InfluxV2Backend.deleteDevice) against a local recording
 * HTTP server: no real 2.x server is available here (README "Tests"), so this checks the request
 * the 2.x delete API documents (POST /api/v2/delete?org=&bucket=, Token header, JSON start, stop,
 * predicate) and that a refusal rejects (the purge is then retried).
 */
import { createServer, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { InfluxV2Backend } from '../../src/storage/telemetry/influx-v2.js';
import { storeConfig, testLogger } from '../helpers/influxd.js';

interface Req { method: string; url: string; auth: string | undefined; body: string }
let server: Server | undefined;
afterEach(async () => { await new Promise((r) => server?.close(r) ?? r(undefined)); server = undefined; });

async function serve(status: number): Promise<{ url: string; requests: Req[] }> {
  const requests: Req[] = [];
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', auth: req.headers.authorization, body });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(status === 204 ? undefined : '{"code":"not implemented","message":"delete is not supported"}');
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const a = server.address();
  return { url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`, requests };
}

function backend(url: string): InfluxV2Backend {
  const cfg = storeConfig('/nonexistent', { influx: { url, api: 'v2', token: 'tok', org: 'my org', bucket: 'farm/b', measurement: 'tele"m' } });
  return new InfluxV2Backend(cfg.influx, testLogger());
}

describe('InfluxDB 2.x delete API (recording server)', () => {
  it('deletes the device\'s points: all of them, or those before a bound', async () => {
    const srv = await serve(204);
    const b = backend(srv.url);
    expect(await b.deleteDevice('rain-1', null, new AbortController().signal)).toBeNull();
    expect(await b.deleteDevice('rain-1', Date.UTC(2026, 0, 2), new AbortController().signal)).toBeNull();
    expect(srv.requests).toHaveLength(2);
    const [all, older] = srv.requests as [Req, Req];
    const u = new URL(all.url, 'http://x');
    expect(all.method).toBe('POST');
    expect(u.pathname).toBe('/api/v2/delete');
    expect(Object.fromEntries(u.searchParams)).toEqual({ org: 'my org', bucket: 'farm/b' });
    expect(all.auth).toBe('Token tok');
    expect(JSON.parse(all.body)).toEqual({ start: '1970-01-01T00:00:00Z', stop: '2262-04-11T00:00:00Z', predicate: '_measurement="tele\\"m" AND device_id="rain-1"' });
    expect(JSON.parse(older.body).stop).toBe('2026-01-01T23:59:59.999Z'); // both ends inclusive: just before the bound
  });

  it('rejects when the server refuses (InfluxDB 3.x has no delete API)', async () => {
    const srv = await serve(501);
    await expect(backend(srv.url).deleteDevice('rain-1', null, new AbortController().signal)).rejects.toThrow(/501.*not supported/);
  });
});

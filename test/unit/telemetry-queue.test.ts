/**
 * The on-disk queue in front of InfluxDB against tiny local HTTP servers:
 * dead-letter on 4xx, back-off, cap and warning, and the v2 write/query path.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Config, DeepPartial } from '../../src/config/index.js';
import { createLogger } from '../../src/core/index.js';
import { createTelemetryStore, type InfluxTelemetryStore, type TelemetryRecord, type Timers } from '../../src/storage/telemetry/index.js';
import { FakeClock, fastTimers, metricValue, storeConfig, testLogger, testMetrics } from '../helpers/influxd.js';

interface Req { method: string; url: string; headers: IncomingMessage['headers']; body: string }
type Handler = (req: Req, res: ServerResponse) => void;

async function startServer(handler: { fn: Handler }): Promise<{ url: string; server: Server; requests: Req[] }> {
  const requests: Req[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let buf = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') buf = gunzipSync(buf);
      const r = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: buf.toString() };
      requests.push(r);
      handler.fn(r, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const a = server.address();
  return { url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`, server, requests };
}

const ok: Handler = (req, res) => { res.writeHead(204); res.end(); };
const unavailable: Handler = (req, res) => { res.writeHead(503, { 'content-type': 'application/json' }); res.end('{"error":"busy"}'); };

function rec(i: number, values: TelemetryRecord['values'] = { a: i }): TelemetryRecord {
  return { deviceId: 'dev-1', kind: 'sensor', ts: 1764460800000 + i, values };
}

class LogCapture extends Writable {
  lines: { level: number; msg: string; [k: string]: unknown }[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    for (const l of chunk.toString().split('\n')) if (l) this.lines.push(JSON.parse(l));
    cb();
  }
}

describe('InfluxDB queue (v1 API, local HTTP server)', () => {
  let dir: string;
  let srv: Awaited<ReturnType<typeof startServer>>;
  const handler: { fn: Handler } = { fn: ok };
  let store: InfluxTelemetryStore | null = null;
  let metrics: ReturnType<typeof testMetrics>;
  let clock: FakeClock;

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keng-q-'));
    handler.fn = ok;
    srv = await startServer(handler);
    metrics = testMetrics();
    clock = new FakeClock();
  });
  afterEach(async () => {
    await store?.stop();
    store = null;
    await new Promise((r) => srv.server.close(r));
    srv.server.closeAllConnections();
    rmSync(dir, { recursive: true, force: true });
  });

  function make(influx: DeepPartial<Config['influx']> = {}, opts: { timers?: Timers; random?: () => number; logger?: ReturnType<typeof createLogger> } = {}): InfluxTelemetryStore {
    const config = storeConfig(dir, { telemetry: { store: 'influxdb' }, influx: { url: srv.url, api: 'v1', retryMinMs: 500, retryMaxMs: 30_000, ...influx } });
    store = createTelemetryStore(config, {
      dataDir: dir, logger: opts.logger ?? testLogger(), metrics, clock,
      timers: opts.timers ?? fastTimers(clock), random: opts.random,
    }) as InfluxTelemetryStore;
    return store;
  }

  it('writes line protocol to /write?db=&precision=ms and empties the queue', async () => {
    const s = make({ database: 'farm db', username: 'u', password: 'p' });
    await s.start();
    expect(s.kind).toBe('influxdb-v1');
    expect(await s.writeBatch([rec(1), rec(2, { b: true, s: 'x y' })])).toEqual({ written: 3, duplicates: 0 });
    expect(await s.drain(5000)).toBe(true);
    const w = srv.requests.filter((r) => r.url.startsWith('/write'));
    expect(w).toHaveLength(1);
    expect(w[0]!.url).toBe('/write?db=farm%20db&precision=ms');
    expect(w[0]!.headers.authorization).toBe('Basic ' + Buffer.from('u:p').toString('base64'));
    expect(w[0]!.body).toBe('telemetry,device_id=dev-1,kind=sensor a=1 1764460800001\ntelemetry,device_id=dev-1,kind=sensor b=t,s="x y" 1764460800002');
    expect(srv.requests.some((r) => r.url === '/query' && r.body.includes('CREATE+DATABASE'))).toBe(true);
    expect(await metricValue(metrics, 'keng_readings_stored_total', { store: 'influxdb-v1' })).toBe(3);
    expect(await metricValue(metrics, 'keng_queue_depth_readings')).toBe(0);
    const h = await s.health();
    expect(h.ok).toBe(true);
    expect(h.detail).toMatchObject({ server: 'up', queued: 0, queuedBytes: 0 });
  });

  it('sets aside a value whose type differs from its field\'s at enqueue, keeping the other fields', async () => {
    const s = make();
    await s.start();
    expect(await s.writeBatch([rec(1, { a: 1, rssi: -70 })])).toEqual({ written: 2, duplicates: 0 });
    const res = await s.writeBatch([rec(2, { a: 2, rssi: 'weak' }), rec(3, { rssi: -71 })]);
    expect(res).toEqual({ written: 2, duplicates: 0, setAside: [{ deviceId: 'dev-1', ts: 1764460800002, field: 'rssi', value: 'weak', reason: 'field_type_conflict' }] });
    // The device re-sends the message (lost PUBACK): set aside again, kept once.
    expect((await s.writeBatch([rec(2, { a: 2, rssi: 'weak' })])).setAside).toHaveLength(1);
    expect(await s.drain(10_000)).toBe(true);
    const body = srv.requests.filter((r) => r.url.startsWith('/write')).map((r) => r.body).join('\n');
    expect(body).toContain('a=2 1764460800002');
    expect(body).not.toContain('weak');
    expect(await metricValue(metrics, 'keng_readings_dead_lettered_total', { store: 'influxdb-v1', reason: 'field_type_conflict' })).toBe(2);
    expect(await metricValue(metrics, 'keng_readings_stored_total', { store: 'influxdb-v1' })).toBe(5);
    expect(s.queueStats().dead).toBe(1);
    await s.stop(); store = null;
    const db = new Database(path.join(dir, 'influx-queue.db'), { readonly: true });
    expect(db.prepare('SELECT device, field, ts, value, type, reason FROM dead_readings').all()).toEqual([
      { device: 'dev-1', field: 'rssi', ts: 1764460800002, value: 'weak', type: 'string', reason: 'field_type_conflict' },
    ]);
    expect(db.prepare('SELECT name, k FROM field_types ORDER BY name').all()).toEqual([{ name: 'a', k: 0 }, { name: 'rssi', k: 0 }]);
    db.close();
  });

  it('a queue refused at the cap learns no field type from the refused batch', async () => {
    const s = make({ queueCapBytes: 1_048_576 });
    handler.fn = unavailable;
    await s.start();
    const big: TelemetryRecord[] = [];
    for (let i = 0; i < 4000; i++) big.push(rec(i, { x: 'y'.repeat(300) }));
    await expect(s.writeBatch(big)).rejects.toMatchObject({ code: 'KENG_ERR_QUEUE_FULL' });
    expect(await s.writeBatch([rec(1, { x: 5 })])).toEqual({ written: 1, duplicates: 0 });
  });

  it('learns field types from the server at start (SHOW FIELD KEYS) and sets conflicting values aside', async () => {
    handler.fn = (req, res) => {
      if (req.url === '/query' && req.body.includes('SHOW+FIELD+KEYS')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ results: [{ statement_id: 0, series: [{ name: 'telemetry', columns: ['fieldKey', 'fieldType'], values: [['rssi', 'string'], ['n', 'integer']] }] }] }));
        return;
      }
      if (req.url === '/query') { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"results":[{"statement_id":0}]}'); return; }
      ok(req, res);
    };
    const s = make();
    await s.start();
    const r = await s.writeBatch([rec(1, { rssi: -70, n: 3, t: 20.5 }), rec(2, { rssi: 'weak' })]);
    expect(r.written).toBe(2);
    expect(r.setAside?.map((a) => a.field)).toEqual(['rssi', 'n']);
    expect(await s.drain(10_000)).toBe(true);
    const body = srv.requests.filter((q) => q.url.startsWith('/write')).map((q) => q.body).join('\n');
    expect(body).toBe('telemetry,device_id=dev-1,kind=sensor t=20.5 1764460800001\ntelemetry,device_id=dev-1,kind=sensor rssi="weak" 1764460800002');
  });

  it('when InfluxDB still rejects a field (another writer changed its type), re-sends field by field and dead-letters only that field', async () => {
    const logs = new LogCapture();
    const s = make({}, { logger: createLogger('warn', { destination: logs }) });
    handler.fn = unavailable; // server down at start: the types are not learned, three rows pile up
    await s.start();
    await s.writeBatch([rec(1, { a: 1, b: 1 })]);
    await s.writeBatch([rec(2, { b: 2 }), rec(3, { a: 3, b: 3, c: true })]);
    await s.writeBatch([rec(4, { b: 4 })]);
    const stored: string[] = [];
    handler.fn = (req, res) => {
      if (req.url === '/query') { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"results":[{"statement_id":0}]}'); return; }
      // Another writer made "a" a string: any numeric a is refused (like InfluxDB, the whole request is answered 400).
      if (/ (?:[^ ]*,)?a=\d/.test(req.body)) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end('{"error":"partial write: field type conflict: input field \\"a\\" on measurement \\"telemetry\\" is type float, already exists as type string dropped=1"}');
        return;
      }
      stored.push(...req.body.split('\n'));
      ok(req, res);
    };
    expect(await s.drain(10_000)).toBe(true);
    expect(new Set(stored)).toEqual(new Set([
      'telemetry,device_id=dev-1,kind=sensor b=1 1764460800001',
      'telemetry,device_id=dev-1,kind=sensor b=2 1764460800002',
      'telemetry,device_id=dev-1,kind=sensor b=3 1764460800003',
      'telemetry,device_id=dev-1,kind=sensor c=t 1764460800003',
      'telemetry,device_id=dev-1,kind=sensor b=4 1764460800004',
    ]));
    expect(s.queueStats()).toMatchObject({ rows: 0, readings: 0, dead: 2 });
    expect(await metricValue(metrics, 'keng_readings_dead_lettered_total', { reason: 'field_type_conflict' })).toBe(2);
    expect(await metricValue(metrics, 'keng_readings_stored_total', { store: 'influxdb-v1' })).toBe(5);
    const err = logs.lines.find((l) => l.msg.includes('dead-letter'));
    expect(String(err?.error)).toContain('field type conflict');
    // The server's type is learned: a numeric "a" is now set aside up front, a string goes through.
    expect((await s.writeBatch([rec(5, { a: 5, b: 5 })])).setAside?.map((a) => a.field)).toEqual(['a']);
    expect((await s.writeBatch([rec(6, { a: 'six' })])).setAside).toBeUndefined();
    expect(await s.drain(10_000)).toBe(true);
    await s.stop(); store = null;
    const db = new Database(path.join(dir, 'influx-queue.db'), { readonly: true });
    const dead = db.prepare('SELECT device, field, ts, value, type, reason, status, error, line FROM dead_readings ORDER BY id').all();
    db.close();
    expect(dead).toEqual([
      { device: 'dev-1', field: 'a', ts: 1764460800001, value: 1, type: 'number', reason: 'field_type_conflict', status: 400, error: expect.stringContaining('already exists as type string'), line: 'telemetry,device_id=dev-1,kind=sensor a=1 1764460800001' },
      { device: 'dev-1', field: 'a', ts: 1764460800003, value: 3, type: 'number', reason: 'field_type_conflict', status: 400, error: expect.stringContaining('field type conflict'), line: 'telemetry,device_id=dev-1,kind=sensor a=3 1764460800003' },
      { device: 'dev-1', field: 'a', ts: 1764460800005, value: 5, type: 'number', reason: 'field_type_conflict', status: null, error: 'field is string, value is number', line: null },
    ]);
  });

  it('retries with exponential back-off on 5xx, forever, then drains', async () => {
    const delays: number[] = [];
    const base = fastTimers(clock);
    const timers: Timers = { setTimeout: (fn, ms) => { delays.push(ms); return base.setTimeout(fn, ms); }, clearTimeout: base.clearTimeout };
    let fails = 12;
    handler.fn = (req, res) => { if (req.url.startsWith('/write') && fails-- > 0) unavailable(req, res); else ok(req, res); };
    const s = make({ retryMinMs: 500, retryMaxMs: 30_000 }, { timers, random: () => 1 });
    await s.start();
    const t0 = clock.now();
    await s.writeBatch([rec(1)]);
    expect(await s.drain(10_000)).toBe(true);
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000, 30000]);
    expect(clock.now() - t0).toBe(delays.reduce((a, b) => a + b, 0)); // > 3 minutes simulated
    expect(await metricValue(metrics, 'keng_store_errors_total', { kind: 'http_503' })).toBe(12);
  });

  it('refuses with QUEUE_FULL at the cap and warns once per crossing, then every few minutes', async () => {
    const logs = new LogCapture();
    handler.fn = unavailable;
    const cap = 1_048_576;
    const s = make({ queueCapBytes: cap, queueWarnRatio: 0.5 }, { logger: createLogger('info', { destination: logs }) });
    await s.start();
    expect(await metricValue(metrics, 'keng_queue_cap_bytes')).toBe(cap);
    const big = 'x'.repeat(200);
    let i = 0;
    let refused: unknown = null;
    for (let b = 0; b < 100 && !refused; b++) {
      const batch: TelemetryRecord[] = [];
      for (let k = 0; k < 200; k++) batch.push(rec(i++, { s: big }));
      try { await s.writeBatch(batch); } catch (err) { refused = err; }
    }
    expect(refused).toMatchObject({ code: 'KENG_ERR_QUEUE_FULL', statusCode: 503 });
    const bytes = await metricValue(metrics, 'keng_queue_bytes');
    expect(bytes).toBeGreaterThan(cap * 0.8);
    expect(bytes).toBeLessThanOrEqual(cap);
    expect(s.queueStats().bytes).toBe(bytes);
    expect(await metricValue(metrics, 'keng_queue_depth_readings')).toBe(s.queueStats().readings);
    expect(await metricValue(metrics, 'keng_store_errors_total', { kind: 'queue_full' })).toBe(1);
    const warnings = () => logs.lines.filter((l) => l.msg.includes('filling up')).length;
    expect(warnings()).toBe(1);
    await s.writeBatch([rec(i++)]); // still above: no new warning yet
    expect(warnings()).toBe(1);
    clock.t += 5 * 60_000;
    await s.writeBatch([rec(i)]);
    expect(warnings()).toBe(2);
    // The server comes back: the queue drains and the warning state resets.
    handler.fn = ok;
    expect(await s.drain(20_000)).toBe(true);
    expect(logs.lines.some((l) => l.msg.includes('back below'))).toBe(true);
    expect(await metricValue(metrics, 'keng_queue_bytes')).toBe(0);
  });

  it('keeps the queue on disk across stop/start and reports the server down in health only', async () => {
    handler.fn = unavailable;
    let s = make();
    await s.start();
    await s.writeBatch([rec(1), rec(2)]);
    await vi.waitFor(async () => expect((await s.health()).detail.lastError).toBeTruthy());
    const h = await s.health();
    expect(h.ok).toBe(true); // readiness does not depend on InfluxDB
    expect(h.detail).toMatchObject({ queued: 2, lastError: expect.stringContaining('503') });
    await s.stop();
    handler.fn = ok;
    s = make();
    await s.start();
    expect(await s.drain(5000)).toBe(true);
    const bodies = srv.requests.filter((r) => r.url.startsWith('/write')).map((r) => r.body);
    expect(bodies.at(-1)).toContain('a=2 1764460800002');
  });
});

describe('InfluxDB v2 API (recording server)', () => {
  let dir: string;
  let srv: Awaited<ReturnType<typeof startServer>>;
  const handler: { fn: Handler } = { fn: ok };
  let store: InfluxTelemetryStore | null = null;

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keng-q2-'));
    handler.fn = ok;
    srv = await startServer(handler);
  });
  afterEach(async () => {
    await store?.stop();
    store = null;
    await new Promise((r) => srv.server.close(r));
    srv.server.closeAllConnections();
    rmSync(dir, { recursive: true, force: true });
  });

  function make(): InfluxTelemetryStore {
    const clock = new FakeClock();
    const config = storeConfig(dir, { telemetry: { store: 'influxdb' }, influx: { url: srv.url, api: 'v2', token: 'secret-token', org: 'my org', bucket: 'farm/b', retryMinMs: 500 } });
    store = createTelemetryStore(config, { dataDir: dir, logger: testLogger(), metrics: testMetrics(), clock, timers: fastTimers(clock) }) as InfluxTelemetryStore;
    return store;
  }

  it('writes to /api/v2/write with org, bucket, precision=ms and the token header', async () => {
    const s = make();
    await s.start();
    expect(s.kind).toBe('influxdb-v2');
    const batch: TelemetryRecord[] = [];
    for (let i = 0; i < 50; i++) batch.push(rec(i, { t: i + 0.5, on: i % 2 === 0, note: `n "${i}"` }));
    await s.writeBatch(batch);
    expect(await s.drain(5000)).toBe(true);
    const w = srv.requests.filter((r) => r.url.startsWith('/api/v2/write'));
    expect(w).toHaveLength(1);
    const u = new URL(w[0]!.url, 'http://x');
    expect(u.pathname).toBe('/api/v2/write');
    expect(Object.fromEntries(u.searchParams)).toEqual({ org: 'my org', bucket: 'farm/b', precision: 'ms' });
    expect(w[0]!.headers.authorization).toBe('Token secret-token');
    const lines = w[0]!.body.split('\n');
    expect(lines).toHaveLength(50);
    expect(lines[1]).toBe('telemetry,device_id=dev-1,kind=sensor t=1.5,on=f,note="n \\"1\\"" 1764460800001');
  });

  it('dead-letters on 400 and retries on 503 (the client library itself never retries)', async () => {
    let calls = 0;
    handler.fn = (req, res) => {
      if (!req.url.startsWith('/api/v2/write')) return ok(req, res);
      calls++;
      if (calls === 1) return unavailable(req, res);
      if (req.body.includes('bad')) { res.writeHead(400, { 'content-type': 'application/json' }); res.end('{"code":"invalid","message":"unable to parse"}'); return; }
      ok(req, res);
    };
    const s = make();
    await s.start();
    await s.writeBatch([rec(1)]);
    expect(await s.drain(5000)).toBe(true);
    expect(calls).toBe(2);
    await s.writeBatch([rec(2, { s: 'bad' })]);
    expect(await s.drain(5000)).toBe(true);
    expect(s.queueStats().dead).toBe(1);
    expect(calls).toBe(3);
  });

  it('runs Flux through the query API and parses annotated CSV', async () => {
    handler.fn = (req, res) => {
      if (!req.url.startsWith('/api/v2/query')) return ok(req, res);
      res.writeHead(200, { 'content-type': 'text/csv' });
      res.end([
        '#datatype,string,long,dateTime:RFC3339,string,double',
        '#group,false,false,false,true,false',
        '#default,_result,,,,',
        ',result,table,_time,_field,_value',
        ',,0,2025-11-30T00:02:00Z,a,1.5',
        ',,0,2025-11-30T00:05:00Z,a,2.5',
        '',
        '#datatype,string,long,dateTime:RFC3339,string,boolean',
        '#group,false,false,false,true,false',
        '#default,_result,,,,',
        ',result,table,_time,_field,_value',
        ',,1,2025-11-30T00:05:00Z,on,true',
        '',
      ].join('\r\n'));
    };
    const s = make();
    await s.start();
    const t0 = Date.parse('2025-11-30T00:00:00Z');
    const pts = await s.query({ deviceId: 'dev-1', fields: [], from: t0 + 120_000, to: t0 + 600_000, everyMs: 300_000, agg: 'last' });
    // Flux clamps the first window's _start to the range start; the store re-aligns it to the epoch window.
    expect(pts).toEqual([{ ts: t0, values: { a: 1.5 } }, { ts: t0 + 300_000, values: { a: 2.5, on: true } }]);
    const q = srv.requests.find((r) => r.url.startsWith('/api/v2/query'))!;
    expect(new URL(q.url, 'http://x').searchParams.get('org')).toBe('my org');
    expect(JSON.parse(q.body).query).toContain('aggregateWindow(every: 300000ms, fn: last, createEmpty: false, timeSrc: "_start")');
  });
});

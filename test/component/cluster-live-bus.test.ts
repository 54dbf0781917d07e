/**
 * Cluster live bus, end to end with real parts: two Keng processes
 * (dist/src/main.js, separate data directories, one PostgreSQL where the area
 * and the device, registered once, are shared) on one real redis-server. A device publishes over
 * real MQTT to node A; a socket.io client and a read-only IOC MQTT client on
 * node B see those readings within seconds. While Redis is down node A keeps
 * acknowledging (PUBACK) and storing; after Redis restarts (empty, same port)
 * node B's feed resumes for new readings.
 *
 * Needs a build (npx tsc -p tsconfig.json).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { io as ioc, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnKeng, type KengProcess } from '../helpers/process.js';
import { CLUSTER_AUDIT_KEY } from '../helpers/cluster.js';
import { parseMetrics, waitFor } from '../helpers/mqtt.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';

const ADMIN = 'cluster-bus-admin-token-0123456789';
// Cluster mode: both nodes on one real PostgreSQL (the shared telemetry store) and one Redis.
let pg: PostgresServer;
let DATABASE_URL = '';

let redis: RedisServer;
const nodes: KengProcess[] = [];
const dirs: string[] = [];
const sockets: Socket[] = [];
const mqttClients: MqttClient[] = [];
let a: KengProcess;
let b: KengProcess;
let deviceSecret = '';
let viewerToken = '';
/** Node A's own viewer (separate state stores for now: a token exists on the node that made it). */
let viewerTokenA = '';
let iocToken = '';

async function api(k: KengProcess, method: string, route: string, body?: unknown): Promise<any> {
  const r = await fetch(k.httpUrl + route, { method, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

async function metric(k: KengProcess, name: string): Promise<number> {
  const text = await (await fetch(`${k.httpUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
  let sum = 0;
  for (const [key, v] of parseMetrics(text)) if (key === name || key.startsWith(name + '{')) sum += v;
  return sum;
}

/** GET /readyz with a monitoring token: status and the liveBus check. */
async function ready(k: KengProcess): Promise<{ status: number; liveBus?: { ok: boolean; detail: { degraded: boolean } } }> {
  const r = await fetch(`${k.httpUrl}/readyz`, { headers: { authorization: `Bearer ${ADMIN}` } });
  const body = await r.json() as { checks?: { liveBus?: { ok: boolean; detail: { degraded: boolean } } } };
  return { status: r.status, liveBus: body.checks?.liveBus };
}

async function node(id: string): Promise<KengProcess> {
  const dataDir = mkdtempSync(path.join(tmpdir(), `keng-cluster-${id}-`));
  dirs.push(dataDir);
  const k = await spawnKeng({ KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: ADMIN, KENG_REDIS_URL: redis.url, KENG_DATABASE_URL: DATABASE_URL, KENG_NODE_ID: id, KENG_AUDIT_KEY: CLUSTER_AUDIT_KEY });
  nodes.push(k);
  // The area and the device are registered once, on node A: the registry is shared through PostgreSQL.
  if (id !== 'node-a') return k;
  await api(k, 'POST', '/api/v1/areas', { code: 'p1', name: 'Tỉnh 1', level: 'province' });
  await api(k, 'POST', '/api/v1/areas', { code: 'c1', name: 'Xã 1', level: 'commune', parent: 'p1' });
  deviceSecret = (await api(k, 'POST', '/api/v1/devices', { id: 'soil-1', kind: 'sensor', name: 'soil-1', area: 'c1' })).secret;
  return k;
}

async function device(k: KengProcess): Promise<MqttClient> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${k.mqttPort}`, { username: 'soil-1', password: deviceSecret, reconnectPeriod: 0, protocolVersion: 4 });
  mqttClients.push(c);
  c.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => { c.once('connect', () => resolve()); c.once('error', reject); });
  return c;
}

/** Publishes QoS 1 and resolves on PUBACK (rejects after 5 s without one). */
function publishAcked(c: MqttClient, seq: number, ts = Date.now()): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no PUBACK for ${seq}`)), 5000);
    c.publish('v1/devices/soil-1/telemetry', JSON.stringify({ ts, values: { soil_moisture: 30 + seq / 100, seq } }), { qos: 1 }, (err) => {
      clearTimeout(timer);
      if (err) reject(err); else resolve();
    });
  });
}

interface Seen { seq: number; at: number }

type Msg = { deviceId: string; values: { seq?: number } };

/** A socket.io client subscribed to soil-1; `batch`: Keng's batched delivery (`telemetry.batch`, latest per field). */
async function liveClient(k: KengProcess, token: string, batch = false): Promise<Seen[]> {
  const s = ioc(k.httpUrl, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { token, ...(batch ? { batch: true } : {}) } });
  sockets.push(s);
  const seen: Seen[] = [];
  const take = (m: Msg): void => { if (m.deviceId === 'soil-1' && typeof m.values.seq === 'number') seen.push({ seq: m.values.seq, at: Date.now() }); };
  s.on('telemetry', take);
  s.on('telemetry.batch', (list: Msg[]) => { for (const m of list) take(m); });
  await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('connect_error', reject); });
  const ack = await s.timeout(5000).emitWithAck('subscribe', { devices: ['soil-1'] });
  expect(ack.ok).toBe(true);
  return seen;
}

async function iocClient(k: KengProcess): Promise<Seen[]> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${k.mqttPort}`, { username: iocToken, reconnectPeriod: 0, protocolVersion: 4 });
  mqttClients.push(c);
  c.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => { c.once('connect', () => resolve()); c.once('error', reject); });
  const seen: Seen[] = [];
  c.on('message', (topic, payload) => {
    const body = JSON.parse(payload.toString()) as { values: { seq?: number } };
    if (topic === 'v1/devices/soil-1/telemetry' && typeof body.values.seq === 'number') seen.push({ seq: body.values.seq, at: Date.now() });
  });
  await new Promise<void>((resolve, reject) => c.subscribe('v1/devices/+/telemetry', { qos: 1 }, (err) => (err ? reject(err) : resolve())));
  return seen;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number): number => [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

beforeAll(async () => {
  [redis, pg] = await Promise.all([startRedis(), startPostgres()]);
  DATABASE_URL = await pg.createDatabase('cluster_bus');
  a = await node('node-a');
  b = await node('node-b');
  viewerTokenA = (await api(a, 'POST', '/api/v1/tokens', { name: 'viewer p1', role: 'viewer', areas: ['p1'] })).token;
  viewerToken = (await api(b, 'POST', '/api/v1/tokens', { name: 'viewer p1', role: 'viewer', areas: ['p1'] })).token;
  iocToken = (await api(b, 'POST', '/api/v1/tokens', { name: 'IOC p1', role: 'service', areas: ['p1'] })).token;
  await waitFor(async () => (await metric(a, 'keng_cluster_bus_up')) === 1 && (await metric(b, 'keng_cluster_bus_up')) === 1, 15_000);
}, 90_000);

afterAll(async () => {
  for (const s of sockets) s.disconnect();
  for (const c of mqttClients) c.end(true);
  for (const k of nodes) if (k.proc.exitCode === null) k.proc.kill('SIGTERM');
  await Promise.all(nodes.map((k) => k.exited));
  await redis?.destroy();
  await pg?.destroy();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('cluster live bus: two Keng processes on one Redis', () => {
  let live: Seen[];
  let iocSeen: Seen[];
  let dev: MqttClient;
  let seq = 0;
  const sentAt = new Map<number, number>();

  it('a socket.io client and an IOC MQTT client on node B see readings a device published to node A', async () => {
    live = await liveClient(b, viewerToken);
    iocSeen = await iocClient(b);
    const batched = await liveClient(b, viewerToken, true);
    const localOnA = await liveClient(a, viewerTokenA);
    dev = await device(a);
    for (let i = 0; i < 30; i++) {
      seq++;
      sentAt.set(seq, Date.now());
      await publishAcked(dev, seq);
      await sleep(50);
    }
    await waitFor(() => live.filter((x) => x.seq <= 30).length === 30 && iocSeen.filter((x) => x.seq <= 30).length === 30, 10_000);
    expect(live.map((x) => x.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1)); // each once, in order
    expect(iocSeen.map((x) => x.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    // Batched clients on B too (coalesced to the latest value per field within a batch interval, so not every one).
    await waitFor(() => batched.some((x) => x.seq === 30), 5000);
    expect(batched.length).toBeGreaterThan(0);
    // Node A's own clients get them locally, not back from Redis a second time.
    await sleep(500);
    expect(localOnA.map((x) => x.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    const lat = live.map((x) => x.at - sentAt.get(x.seq)!);
    console.log(`cross-node live feed latency (publish on A → socket.io on B), ms: p50 ${pct(lat, 0.5)}, p90 ${pct(lat, 0.9)}, max ${Math.max(...lat)}`);
    expect(pct(lat, 0.5)).toBeLessThan(3000);
    const ackUp: number[] = [];
    for (let i = 0; i < 20; i++) { const t = performance.now(); await publishAcked(dev, ++seq); ackUp.push(performance.now() - t); }
    console.log(`PUBACK with Redis up: p50 ${pct(ackUp, 0.5).toFixed(1)} ms`);

    // A burst: the group commit takes many messages per commit, and each commit is ONE stream entry.
    // (150: under live.maxEventRate, 200/s, so B's single-event client is not throttled and sees every one.)
    const entriesBefore = await metric(a, 'keng_cluster_bus_entries_total');
    const burstFirst = seq + 1;
    await Promise.all(Array.from({ length: 150 }, () => publishAcked(dev, ++seq)));
    await waitFor(() => live.filter((x) => x.seq >= burstFirst).length === 150, 15_000);
    const entries = (await metric(a, 'keng_cluster_bus_entries_total')) - entriesBefore;
    console.log(`burst of 150 messages → ${entries} stream entries`);
    expect(entries).toBeGreaterThan(0);
    expect(entries).toBeLessThan(50);
    expect(live.filter((x) => x.seq >= burstFirst).map((x) => x.seq)).toEqual(Array.from({ length: 150 }, (_, i) => burstFirst + i));
    // Remote readings are a view on B: B ingests none of them; they were stored once, by A, in the shared
    // PostgreSQL store, which both nodes' history reads. (Messages without a ts of their own that arrived in the
    // same millisecond are one point: the last value wins.)
    expect(await metric(b, 'keng_readings_accepted_total')).toBe(0);
    const q = `/api/v1/devices/soil-1/telemetry?fields=seq&from=${new Date(Date.now() - 600_000).toISOString()}`;
    const [onA, onB] = [await api(a, 'GET', q), await api(b, 'GET', q)];
    expect(onB.points.length).toBeGreaterThan(0);
    expect(onB.points).toEqual(onA.points);
  }, 60_000);

  it('while Redis is down node A keeps acknowledging and storing; after Redis restarts node B\'s feed resumes for new readings', async () => {
    await redis.stop(); // SIGKILL
    await waitFor(async () => (await metric(a, 'keng_cluster_bus_up')) === 0, 10_000);
    const first = seq + 1;
    const t0 = Date.now();
    for (let i = 0; i < 40; i++) {
      seq++;
      await publishAcked(dev, seq); // PUBACK within 5 s, every one
      await sleep(25);
    }
    const ackMs = (Date.now() - t0) / 40 - 25;
    const last = seq;
    // Stored on A: every acknowledged reading of the outage.
    const h = await api(a, 'GET', `/api/v1/devices/soil-1/telemetry?fields=seq&from=${new Date(t0 - 1000).toISOString()}`);
    const stored = new Set(h.points.map((p: { values: { seq: number } }) => p.values.seq));
    for (let s = first; s <= last; s++) expect(stored.has(s), `seq ${s} stored on A`).toBe(true);
    expect(await metric(a, 'keng_cluster_bus_unsent_readings_total')).toBeGreaterThanOrEqual(40);
    expect(live.some((x) => x.seq >= first)).toBe(false); // nothing could cross
    // Still ready (a load balancer keeps sending devices): the bus shows as degraded only.
    // (The bus notices the outage at its next write or ping: under load that may take a moment.)
    await waitFor(async () => (await ready(a)).liveBus?.detail.degraded === true, 15_000);
    expect(await ready(a)).toEqual({ status: 200, liveBus: { ok: true, detail: expect.objectContaining({ degraded: true, nodeId: 'node-a' }) } });

    await redis.restart(); // same port, empty
    const restarted = Date.now();
    let resumed = 0;
    while (!resumed && Date.now() - restarted < 30_000) {
      seq++;
      sentAt.set(seq, Date.now());
      await publishAcked(dev, seq);
      await sleep(200);
      resumed = live.find((x) => x.seq > last)?.at ?? 0;
    }
    expect(resumed, 'node B got a new reading within 30 s of the restart').toBeGreaterThan(0);
    const resumeSeq = seq;
    await waitFor(() => live.some((x) => x.seq === resumeSeq) && iocSeen.some((x) => x.seq === resumeSeq), 10_000);
    console.log(`outage: PUBACK in ~${ackMs.toFixed(1)} ms per message while Redis was down; feed on B resumed ${resumed - restarted} ms after redis-server restarted`);
    await waitFor(async () => (await ready(b)).liveBus?.detail.degraded === false, 15_000);
    expect(await ready(b)).toEqual({ status: 200, liveBus: { ok: true, detail: { degraded: false, nodeId: 'node-b' } } });
    // The outage readings are not replayed later (the feed is a view of now: they are in A's history).
    expect(live.some((x) => x.seq >= first && x.seq <= last)).toBe(false);
    // One warning per node per outage, not per batch.
    expect(a.output().match(/Redis unreachable/g)?.length).toBe(1);
    expect(b.output().match(/Redis unreachable/g)?.length).toBe(1);
  }, 90_000);
});

/**
 * Cluster mode with InfluxDB, real processes: two Keng nodes (dist/src/main.js) on one PostgreSQL
 * and one Redis, with KENG_TELEMETRY_STORE=influxdb and a real influxd 1.x. Node A reaches InfluxDB
 * through a TCP blackhole that is paused, so its write hangs while it holds a claim; A is SIGKILLed
 * holding it. Node B takes the batch over when A's lease runs out: every reading A acknowledged is
 * in InfluxDB, once.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { startBlackhole, type Blackhole } from '../../tools/blackhole.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { influxdForFile } from '../helpers/influxd.js';
import { spawnKeng, type KengProcess } from '../helpers/process.js';
import { CLUSTER_AUDIT_KEY } from '../helpers/cluster.js';

const TOKEN = 'cluster-influx-admin-token-0123456789';
const DEVICES = Array.from({ length: 20 }, (_, i) => `ci-${i}`);
const PER_DEVICE = 25;
const DATABASE = 'keng_cluster';

const fx = influxdForFile('keng-cl-influx-');
const procs: KengProcess[] = [];
let pg: PostgresServer | undefined;
let redis: RedisServer | undefined;
let hole: Blackhole | undefined;
const dirs: string[] = [];
afterAll(async () => {
  for (const p of procs) if (p.proc.exitCode === null && p.proc.signalCode === null) { p.proc.kill('SIGKILL'); await p.exited; }
  await hole?.close();
  await pg?.destroy();
  await redis?.destroy();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function api(base: string, method: string, route: string, body?: unknown): Promise<any> {
  const r = await fetch(base + route, { method, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

async function node(name: string, influxUrl: string): Promise<KengProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), `keng-cl-influx-${name}-`)); dirs.push(dir);
  // timeoutMs 10 s: the lease is max(30 s, 3 × 10 s) = 30 s.
  writeFileSync(path.join(dir, 'keng.json'), JSON.stringify({ influx: { timeoutMs: 10_000, retryMinMs: 200, retryMaxMs: 1_000 } }));
  const k = await spawnKeng({
    KENG_CONFIG: path.join(dir, 'keng.json'), KENG_DATA_DIR: path.join(dir, 'data'), KENG_ADMIN_TOKEN: TOKEN, KENG_NODE_ID: name,
    KENG_DATABASE_URL: pg!.url, KENG_REDIS_URL: redis!.url, KENG_AUDIT_KEY: CLUSTER_AUDIT_KEY,
    KENG_TELEMETRY_STORE: 'influxdb', KENG_INFLUX_URL: influxUrl, KENG_INFLUX_API: 'v1', KENG_INFLUX_DATABASE: DATABASE,
  }, { timeoutMs: 90_000 });
  procs.push(k);
  return k;
}

async function publishAll(port: number, secrets: Record<string, string>, t0: number): Promise<number> {
  let acked = 0;
  await Promise.all(Object.entries(secrets).map(async ([id, secret]) => {
    const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { username: id, password: secret, reconnectPeriod: 0, protocolVersion: 4, connectTimeout: 10_000 });
    await new Promise<void>((resolve, reject) => { client.once('connect', () => resolve()); client.once('error', reject); });
    await Promise.all(Array.from({ length: PER_DEVICE }, (_, i) => new Promise<void>((resolve, reject) => {
      client.publish(`v1/devices/${id}/telemetry`, JSON.stringify({ ts: t0 + i * 1000, values: { a: i, d: `m${i}` } }), { qos: 1 }, (err) => {
        if (err) reject(err); else { acked++; resolve(); }
      });
    })));
    client.end(true);
  }));
  return acked;
}

async function countIn(field: string): Promise<number> {
  const r = await fx.influxd.query(`SELECT count("${field}") FROM "telemetry"`, DATABASE);
  return Number(r.results?.[0]?.series?.[0]?.values?.[0]?.[1] ?? 0);
}

describe('cluster mode with InfluxDB: a node SIGKILLed holding a claimed batch', () => {
  it('another node sends the batch after the lease; every acknowledged reading is in InfluxDB once', async () => {
    pg = await startPostgres();
    redis = await startRedis();
    const influx = new URL(fx.influxd.url);
    hole = await startBlackhole({ host: influx.hostname, port: Number(influx.port) });
    const a = await node('nodeA', `http://127.0.0.1:${hole.port}`);
    const secrets: Record<string, string> = {};
    await api(a.httpUrl, 'POST', '/api/v1/areas', { code: 'p1', name: 'P', level: 'province' });
    for (const id of DEVICES) secrets[id] = (await api(a.httpUrl, 'POST', '/api/v1/devices', { id, kind: 'sensor', name: id, area: 'p1' })).secret;

    // A's InfluxDB goes silent: its first write hangs (10 s) while it holds the claim.
    hole.pause();
    const t0 = Date.now() - 3_600_000;
    const acked = await publishAll(a.mqttPort, secrets, t0);
    expect(acked).toBe(DEVICES.length * PER_DEVICE);
    const held = await pg.query<{ n: number }>("SELECT COUNT(*)::int AS n FROM telemetry_influx_outbox WHERE lease_by LIKE 'nodeA:%'");
    expect(held.rows[0]!.n).toBeGreaterThan(0);
    a.proc.kill('SIGKILL');
    await a.exited;
    const killedAt = Date.now();

    const b = await node('nodeB', fx.influxd.url);
    // B sends what A had not claimed at once; A's claimed rows wait for the lease (30 s from the claim).
    const until = Date.now() + 90_000;
    for (;;) {
      const left = await pg.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM telemetry_influx_outbox');
      if (left.rows[0]!.n === 0) break;
      if (Date.now() > until) throw new Error(`outbox not drained: ${left.rows[0]!.n} rows left\n${b.output()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const tookOverAfterMs = Date.now() - killedAt;
    console.log(`outbox drained ${tookOverAfterMs} ms after the SIGKILL (lease 30 s)`);
    expect(await countIn('a')).toBe(acked);
    expect(await countIn('d')).toBe(acked);
    // Per device: exactly the messages sent, once each.
    const per = await fx.influxd.query('SELECT count("a") FROM "telemetry" GROUP BY "device_id"', DATABASE);
    const counts = (per.results?.[0]?.series ?? []).map((s) => Number(s.values[0]![1]));
    expect(counts).toEqual(DEVICES.map(() => PER_DEVICE));
    b.proc.kill('SIGTERM');
    expect((await b.exited).code).toBe(0);
  }, 240_000);
});

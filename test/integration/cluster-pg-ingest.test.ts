/**
 * Cluster mode's ingest commit on real parts: Keng processes (dist/src/main.js) with
 * KENG_DATABASE_URL on a throw-away PostgreSQL (+ KENG_REDIS_URL), 50 devices publishing QoS 1
 * over real MQTT.
 *  (a) Keng SIGKILLed mid-ingest and restarted on the same database; the devices resend what was
 *      not acknowledged: every PUBACKed reading is in PostgreSQL, every key exactly once.
 *  (b) The PostgreSQL primary (with a synchronous streaming standby) SIGKILLed mid-ingest and the
 *      standby promoted: every PUBACKed reading is on the promoted standby. (Keng need not
 *      survive the failover: finding the new primary is not built yet.)
 *  (c) PostgreSQL down while Keng runs: no PUBACK, /readyz 503, Keng stays up; PostgreSQL back:
 *      ready again, messages acknowledged and stored.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { spawnKeng, type KengProcess } from '../helpers/process.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';

const TOKEN = 'cluster-pg-admin-token-0123456789';
const DEVICES = Array.from({ length: 50 }, (_, i) => `cl-${i}`);
const PER_DEVICE = 200;
const FIELDS = ['a', 'b', 'c', 'd'];

let procs: KengProcess[] = [];
let pgs: PostgresServer[] = [];
let redis: RedisServer | undefined;
let dirs: string[] = [];
afterEach(async () => {
  for (const p of procs) if (p.proc.exitCode === null && p.proc.signalCode === null) { p.proc.kill('SIGKILL'); await p.exited; }
  for (const p of pgs.reverse()) await p.destroy();
  await redis?.destroy();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  procs = []; pgs = []; redis = undefined; dirs = [];
});

async function api(base: string, method: string, route: string, body?: unknown): Promise<any> {
  const r = await fetch(base + route, { method, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

async function cluster(pg: PostgresServer): Promise<{ env: Record<string, string>; k: KengProcess; secrets: Record<string, string> }> {
  redis = await startRedis();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-cluster-')); dirs.push(dataDir);
  const env = { KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: TOKEN, KENG_DATABASE_URL: pg.url, KENG_REDIS_URL: redis.url, KENG_NODE_ID: 'n1' };
  const k = await spawnKeng(env, { timeoutMs: 60_000 });
  procs.push(k);
  await api(k.httpUrl, 'POST', '/api/v1/areas', { code: 'p1', name: 'P', level: 'province' });
  const secrets: Record<string, string> = {};
  for (const id of DEVICES) secrets[id] = (await api(k.httpUrl, 'POST', '/api/v1/devices', { id, kind: 'sensor', name: id, area: 'p1' })).secret;
  // /readyz reports the PostgreSQL store.
  const ready = await api(k.httpUrl, 'GET', '/readyz');
  expect(ready.checks.telemetry.detail).toMatchObject({ store: 'postgres', kind: 'postgres' });
  return { env, k, secrets };
}

type Acked = Map<string, Set<number>>;

/**
 * Every device publishes its messages not yet acknowledged (QoS 1, as fast as its window
 * allows); `onAck` sees each PUBACK. Resolves when all are acknowledged or the connections die.
 */
async function publishAll(port: number, secrets: Record<string, string>, t0: number, acked: Acked, onAck: () => void): Promise<void> {
  await Promise.all(Object.entries(secrets).map(async ([id, secret]) => {
    const mine = acked.get(id) ?? new Set<number>();
    acked.set(id, mine);
    const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { username: id, password: secret, reconnectPeriod: 0, protocolVersion: 4, connectTimeout: 10_000 });
    client.on('error', () => { /* the server or its database dies under us */ });
    const up = await new Promise<boolean>((resolve) => { client.once('connect', () => resolve(true)); client.once('close', () => resolve(false)); });
    if (!up) return;
    const pending: Promise<void>[] = [];
    for (let i = 0; i < PER_DEVICE; i++) {
      const ts = t0 + i * 1000;
      if (mine.has(ts)) continue;
      pending.push(new Promise<void>((resolve) => {
        client.publish(`v1/devices/${id}/telemetry`, JSON.stringify({ ts, values: { a: i, b: i * 2, c: i % 2 === 0, d: `m${i}` } }), { qos: 1 }, (err) => {
          if (!err) { mine.add(ts); onAck(); }
          resolve();
        });
      }));
    }
    // mqtt.js fails the callbacks of unacknowledged messages when the connection closes.
    await Promise.race([Promise.all(pending), new Promise<void>((resolve) => client.once('close', () => resolve()))]);
    client.end(true);
  }));
}

/** Acknowledged (device, ts) missing from the database, and keys stored more than once. */
async function audit(pg: PostgresServer, acked: Acked): Promise<{ missing: string[]; multiple: number; rows: number }> {
  const rows = (await pg.query<{ device: string; ts: number; n: number }>(
    'SELECT device, ts::float8 AS ts, COUNT(*)::int AS n FROM telemetry_readings GROUP BY device, ts')).rows;
  const have = new Map(rows.map((r) => [`${r.device}/${r.ts}`, r.n]));
  const missing: string[] = [];
  for (const [id, set] of acked) for (const ts of set) if (have.get(`${id}/${ts}`) !== FIELDS.length) missing.push(`${id}/${ts}`);
  const multiple = (await pg.query<{ n: number }>(
    'SELECT COUNT(*)::int AS n FROM (SELECT 1 FROM telemetry_readings GROUP BY device, field, ts HAVING COUNT(*) > 1) x')).rows[0]!.n;
  const total = (await pg.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM telemetry_readings')).rows[0]!.n;
  return { missing, multiple, rows: total };
}

describe('cluster mode: the ingest commit in PostgreSQL', () => {
  it('(a) Keng SIGKILLed mid-ingest, restarted on the same database, devices resend: every PUBACKed reading stored exactly once', async () => {
    const pg = await startPostgres(); pgs.push(pg);
    const { env, k, secrets } = await cluster(pg);
    const t0 = Date.now() - 3_600_000;
    const acked: Acked = new Map();
    let count = 0;
    const killAt = Math.floor(DEVICES.length * PER_DEVICE / 3);
    await publishAll(k.mqttPort, secrets, t0, acked, () => { if (++count === killAt) k.proc.kill('SIGKILL'); });
    expect((await k.exited).signal).toBe('SIGKILL');
    const before = [...acked.values()].reduce((n, s) => n + s.size, 0);
    expect(before).toBeGreaterThanOrEqual(killAt);
    expect(before).toBeLessThan(DEVICES.length * PER_DEVICE); // killed mid-ingest
    expect((await audit(pg, acked)).missing).toEqual([]);

    const k2 = await spawnKeng(env, { timeoutMs: 60_000 }); procs.push(k2);
    await publishAll(k2.mqttPort, secrets, t0, acked, () => undefined);
    const after = [...acked.values()].reduce((n, s) => n + s.size, 0);
    expect(after).toBe(DEVICES.length * PER_DEVICE);
    const res = await audit(pg, acked);
    expect(res.missing).toEqual([]);
    expect(res.multiple).toBe(0);
    expect(res.rows).toBe(DEVICES.length * PER_DEVICE * FIELDS.length);
    console.log(`cluster (a): ${before} messages acknowledged before the SIGKILL, all ${after} stored once after the resend`);
    k2.proc.kill('SIGTERM');
    expect((await k2.exited).code).toBe(0);
  }, 240_000);

  it('(b) the primary SIGKILLed mid-ingest, the synchronous standby promoted: every PUBACKed reading is on it', async () => {
    const primary = await startPostgres(); pgs.push(primary);
    const standby = await startPostgres({ standbyOf: primary, synchronous: true }); pgs.push(standby);
    const { k, secrets } = await cluster(primary);
    const t0 = Date.now() - 3_600_000;
    const acked: Acked = new Map();
    let count = 0;
    const killAt = Math.floor(DEVICES.length * PER_DEVICE / 3);
    let killed: Promise<void> | null = null;
    const published = publishAll(k.mqttPort, secrets, t0, acked, () => { if (++count === killAt) killed = primary.kill(); });
    // Once the primary is gone no commit succeeds, so no PUBACK comes: end the devices' wait.
    const t = Date.now();
    while (!killed && Date.now() - t < 120_000) await new Promise((r) => setTimeout(r, 50));
    expect(killed).not.toBeNull();
    await killed;
    await new Promise((r) => setTimeout(r, 3_000)); // PUBACKs of commits that returned just before the kill
    k.proc.kill('SIGKILL');
    await published;
    const n = [...acked.values()].reduce((s, x) => s + x.size, 0);
    expect(n).toBeGreaterThanOrEqual(killAt);
    expect(n).toBeLessThan(DEVICES.length * PER_DEVICE);
    await standby.promote();
    const res = await audit(standby, acked);
    expect(res.missing).toEqual([]);
    expect(res.multiple).toBe(0);
    console.log(`cluster (b): ${n} messages acknowledged before the primary died; all on the promoted standby (${res.rows} readings there)`);
  }, 240_000);

  it('(c) PostgreSQL down while Keng runs: no PUBACK, /readyz 503, no crash; back: ready and acknowledging again', async () => {
    const pg = await startPostgres(); pgs.push(pg);
    const { k, secrets } = await cluster(pg);
    const one = { [DEVICES[0]!]: secrets[DEVICES[0]!]! };
    const t0 = Date.now() - 3_600_000;
    const readyz = async (): Promise<number> => (await fetch(`${k.httpUrl}/readyz`)).status;
    await pg.kill();
    const acked: Acked = new Map();
    let acks = 0;
    await publishAll(k.mqttPort, one, t0, acked, () => { acks++; });
    expect(acks).toBe(0); // nothing committed, nothing acknowledged (the broker closed the connection)
    expect(await readyz()).toBe(503);
    const detail = await api(k.httpUrl, 'GET', '/readyz').catch((e: Error) => e.message);
    expect(detail).toMatch(/telemetry/);
    expect(k.proc.exitCode).toBeNull();

    await pg.restart();
    const until = Date.now() + 30_000;
    while ((await readyz()) !== 200 && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
    expect(await readyz()).toBe(200);
    await publishAll(k.mqttPort, one, t0, acked, () => { acks++; });
    expect(acks).toBe(PER_DEVICE);
    const res = await audit(pg, acked);
    expect(res.missing).toEqual([]);
    expect(res.rows).toBe(PER_DEVICE * FIELDS.length);
    k.proc.kill('SIGTERM');
    expect((await k.exited).code).toBe(0);
  }, 180_000);
});

/**
 * Cluster-mode test rig with real parts (docs/cluster.md "Tested failures"):
 * Keng processes (dist/src/main.js) on one PostgreSQL database and one Redis,
 * behind HAProxy (send-proxy-v2, /readyz checks), and a fleet of QoS 1
 * devices (cluster-fleet.ts) that resend what was not acknowledged.
 *
 * One data directory is seeded once (by an embedded Keng) and copied to every
 * node; the device registry's rows of the seed (areas, devices with their
 * credential hashes) are copied into the cluster database before its first node
 * starts, so every node knows the same devices and secrets. A node keeps its ports and directory across restarts,
 * so HAProxy's configuration stays valid.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { sql } from 'kysely';
import { PG_STATE_SCOPES } from '../../src/migrations.js';
import { migrate, openPgDb } from '../../src/storage/sql/index.js';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { io as ioc, type Socket } from 'socket.io-client';
import { startHaproxy, type Haproxy } from '../../tools/haproxy.js';
import type { PostgresServer } from '../../tools/postgres.js';
import type { Fleet } from './cluster-fleet.js';
import { parseMetrics } from './mqtt.js';
import { freePort, spawnKeng, type KengProcess } from './process.js';

export const CLUSTER_ADMIN = 'cluster-failures-admin-token-0123456789';
/** Every node of a cluster extends one keyed audit chain in PostgreSQL, so they share one audit key. */
export const CLUSTER_AUDIT_KEY = '5a'.repeat(32);
/** The fields every fleet message carries: `v` (its sequence number) and `s` (device:seq). */
export const FLEET_FIELDS = ['s', 'v'];

export interface Seed {
  /** A stopped node's data directory, to copy. */
  dataDir: string;
  secrets: Record<string, string>;
}

const dirs: string[] = [];
function tempDir(prefix: string): string {
  const d = mkdtempSync(path.join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** Delete every temporary directory this rig made. */
export function removeClusterDirs(): void {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

export async function adminApi(base: string, method: string, route: string, body?: unknown): Promise<any> {
  const r = await fetch(base + route, {
    method, headers: { authorization: `Bearer ${CLUSTER_ADMIN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** A plain (embedded) Keng creates area p1, the devices and a viewer token, then stops. */
export async function seedCluster(ids: string[]): Promise<Seed> {
  const dataDir = path.join(tempDir('keng-cluster-seed-'), 'data');
  const k = await spawnKeng({ KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: CLUSTER_ADMIN }, { timeoutMs: 60_000 });
  try {
    await adminApi(k.httpUrl, 'POST', '/api/v1/areas', { code: 'p1', name: 'Tỉnh 1', level: 'province' });
    const secrets: Record<string, string> = {};
    const queue = [...ids];
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
        secrets[id] = (await adminApi(k.httpUrl, 'POST', '/api/v1/devices', { id, kind: 'sensor', name: id, area: 'p1' })).secret as string;
      }
    }));
    return { dataDir, secrets };
  } finally {
    k.proc.kill('SIGTERM');
    await k.exited;
  }
}

export interface ClusterNode {
  readonly name: string;
  k: KengProcess;
  readonly httpPort: number;
  readonly mqttPort: number;
  readonly env: Record<string, string>;
}

/** Sum of a metric over its label sets (`name` and `name{...}`). */
export async function metric(k: KengProcess, name: string): Promise<number> {
  const text = await (await fetch(`${k.httpUrl}/metrics`, { headers: { authorization: `Bearer ${CLUSTER_ADMIN}` } })).text();
  let sum = 0;
  for (const [key, v] of parseMetrics(text)) if (key === name || key.startsWith(`${name}{`)) sum += v;
  return sum;
}

/** GET /readyz with a monitoring token: the status and the per-part checks (0: no answer). */
export async function readyz(k: KengProcess, timeoutMs = 5_000): Promise<{ status: number; checks: Record<string, { ok: boolean; detail?: any }> }> {
  try {
    const r = await fetch(`${k.httpUrl}/readyz`, { headers: { authorization: `Bearer ${CLUSTER_ADMIN}` }, signal: AbortSignal.timeout(timeoutMs) });
    const body = await r.json() as { checks?: Record<string, { ok: boolean }>; error?: { details?: { checks?: Record<string, { ok: boolean }> } } };
    return { status: r.status, checks: body.checks ?? body.error?.details?.checks ?? {} };
  } catch {
    return { status: 0, checks: {} };
  }
}

export function alive(k: KengProcess): boolean {
  return k.proc.exitCode === null && k.proc.signalCode === null;
}

export interface NodeOptions {
  /** This node's KENG_DATABASE_URL (default: the cluster's; a blackhole's address for partitions). */
  databaseUrl?: string;
  redisUrl?: string;
  /** Extra or overriding environment variables of this node. */
  env?: Record<string, string>;
  /** Changes this node's copy of the seed's data directory before its first start (e.g. its own key files). */
  prepare?: (dataDir: string) => void | Promise<void>;
}

/**
 * Nodes on one database and one Redis, each behind HAProxy with the PROXY
 * protocol required from 127.0.0.1 and `commitMaxInFlight` 4 (docs/cluster.md).
 */
export class Cluster {
  readonly nodes = new Map<string, ClusterNode>();
  private readonly proxies: Haproxy[] = [];
  private seeded: Promise<void> | null = null;

  constructor(private readonly seed: Seed, private readonly databaseUrl: string, private readonly redisUrl: string) {}

  node(name: string): ClusterNode {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  async start(name: string, o: NodeOptions = {}): Promise<ClusterNode> {
    await (this.seeded ??= copySeedRegistry(this.seed.dataDir, this.databaseUrl));
    const base = tempDir(`keng-cluster-${name}-`);
    const dataDir = path.join(base, 'data');
    cpSync(this.seed.dataDir, dataDir, { recursive: true });
    await o.prepare?.(dataDir);
    const config = path.join(base, 'keng.json');
    writeFileSync(config, JSON.stringify({ telemetry: { commitMaxInFlight: 4 } }));
    const env = {
      KENG_CONFIG: config, KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: CLUSTER_ADMIN, KENG_NODE_ID: name, KENG_AUDIT_KEY: CLUSTER_AUDIT_KEY,
      KENG_DATABASE_URL: o.databaseUrl ?? this.databaseUrl, KENG_REDIS_URL: o.redisUrl ?? this.redisUrl,
      KENG_MQTT_PROXY_PROTOCOL: 'required', KENG_MQTT_TRUSTED_PROXIES: '127.0.0.1',
      ...o.env,
    };
    const [httpPort, mqttPort] = [await freePort(), await freePort()];
    const k = await spawnKeng(env, { httpPort, mqttPort, timeoutMs: 90_000 });
    const n: ClusterNode = { name, k, httpPort, mqttPort, env };
    this.nodes.set(name, n);
    return n;
  }

  /** A viewer token for area p1 (socket.io live feed), made through a running node: tokens are in PostgreSQL. */
  async viewerToken(): Promise<string> {
    const n = [...this.nodes.values()].find((x) => alive(x.k));
    if (!n) throw new Error('no node runs');
    return (await adminApi(n.k.httpUrl, 'POST', '/api/v1/tokens', { name: 'viewer p1', role: 'viewer', areas: ['p1'] })).token as string;
  }

  /** Start a stopped node again: same ports, directory and settings. */
  async restart(name: string): Promise<ClusterNode> {
    const n = this.node(name);
    if (alive(n.k)) throw new Error(`${name} still runs`);
    n.k = await spawnKeng(n.env, { httpPort: n.httpPort, mqttPort: n.mqttPort, timeoutMs: 90_000 });
    return n;
  }

  /**
   * HAProxy (send-proxy-v2, /readyz every 200 ms) over the nodes started so far; resolves when all are UP.
   * `httpPort`: also balance the nodes' HTTP on that port (e.g. the media links speakers download).
   */
  async haproxy(o: { httpPort?: number } = {}): Promise<Haproxy> {
    const list = [...this.nodes.values()];
    const hp = await startHaproxy({
      mqttBackends: list.map((n) => ({ host: '127.0.0.1', port: n.mqttPort, checkPort: n.httpPort, name: n.name })), sendProxy: 'v2',
      ...(o.httpPort !== undefined ? { httpPort: o.httpPort, httpBackends: list.map((n) => ({ host: '127.0.0.1', port: n.httpPort, name: n.name })) } : {}),
    });
    this.proxies.push(hp);
    for (const n of list) await hp.waitForServer(n.name, 'UP', 30_000);
    return hp;
  }

  /** Device connections per node (0 for a node that is down). */
  async connections(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const n of this.nodes.values()) out[n.name] = alive(n.k) ? await metric(n.k, 'keng_mqtt_connections').catch(() => 0) : 0;
    return out;
  }

  async destroy(): Promise<void> {
    for (const hp of this.proxies.splice(0)) await hp.destroy();
    for (const n of this.nodes.values()) if (alive(n.k)) { n.k.proc.kill('SIGKILL'); await n.k.exited; }
    this.nodes.clear();
  }
}

export interface StoredAudit {
  /** Acknowledged (before the audit's query) (device, ts) whose readings are not all in the database exactly once with the value sent. */
  missing: string[];
  /** Keys (device, field, ts) stored more than once. */
  multiple: number;
  /** Keys stored that no device ever sent. */
  unexpected: number;
  /** Rows in telemetry_readings. */
  rows: number;
  /** Messages acknowledged (each is FLEET_FIELDS.length readings). */
  acked: number;
}

/**
 * Compare what the fleets saw acknowledged with what PostgreSQL holds (read directly, not
 * through any node). Every row must belong to one of `fleets`.
 */
export async function auditStored(pg: PostgresServer, database: string, fleets: Fleet[]): Promise<StoredAudit> {
  // What was acknowledged BEFORE the query: devices may still be publishing while the audit runs.
  const ackedBefore = new Map(fleets.flatMap((f) => f.devices.map((d) => [d.id, [...d.acked]] as const)));
  const rows = (await pg.query<{ device: string; field: string; ts: number; n: number; num: number | null }>(
    'SELECT device, field, ts::float8 AS ts, COUNT(*)::int AS n, MAX(num) AS num FROM telemetry_readings GROUP BY device, field, ts', [], database)).rows;
  const have = new Map<string, { n: number; num: number | null }>();
  for (const r of rows) have.set(`${r.device}/${r.field}/${r.ts}`, r);
  const missing: string[] = [];
  let acked = 0;
  let multiple = 0;
  for (const r of rows) if (r.n !== 1) multiple++;
  const owner = new Map<string, { fleet: Fleet; produced: number }>();
  for (const fleet of fleets) {
    for (const d of fleet.devices) {
      owner.set(d.id, { fleet, produced: d.produced });
      for (const seq of ackedBefore.get(d.id)!) {
        acked++;
        const ts = fleet.tsOf(seq);
        const ok = FLEET_FIELDS.every((f) => have.get(`${d.id}/${f}/${ts}`)?.n === 1) && have.get(`${d.id}/v/${ts}`)?.num === seq;
        if (!ok) missing.push(`${d.id}/${seq}`);
      }
    }
  }
  const unexpected = rows.filter((r) => {
    const o = owner.get(r.device);
    const seq = o ? o.fleet.seqOf(r.ts) : NaN;
    return !o || !FLEET_FIELDS.includes(r.field) || !Number.isInteger(seq) || seq < 1 || seq > o.produced;
  }).length;
  return { missing, multiple, unexpected, rows: rows.length, acked };
}

/**
 * A socket.io live-feed client on `k` subscribed to `devices`: the set of fleet sequence
 * numbers (`values.v`) it has seen, whichever node ingested them.
 */
export async function liveFeed(k: KengProcess, token: string, devices: string[], keep: Socket[]): Promise<Set<number>> {
  const s = ioc(k.httpUrl, { transports: ['websocket'], reconnection: true, forceNew: true, auth: { token } });
  keep.push(s);
  const seen = new Set<number>();
  s.on('telemetry', (m: { values: { v?: number } }) => { if (typeof m.values.v === 'number') seen.add(m.values.v); });
  await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('connect_error', reject); });
  const ack = await s.timeout(5000).emitWithAck('subscribe', { devices });
  if (!ack.ok) throw new Error(`live feed subscribe refused: ${JSON.stringify(ack)}`);
  return seen;
}

/** Poll `fn` every `stepMs` until it returns true; resolves with the time it took, rejects with `what` after `ms`. */
export async function within(what: string, ms: number, fn: () => Promise<boolean> | boolean, stepMs = 100): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await fn()) return Date.now() - t0;
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  return [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
}

/** The seed's areas and devices (credential hashes, state rows) into the cluster database (migrated here first). */
export async function copySeedRegistry(dataDir: string, url: string): Promise<void> {
  const src = new Database(path.join(dataDir, 'state.db'), { readonly: true });
  const db = openPgDb(url);
  try {
    for (const { scope, migrations } of PG_STATE_SCOPES) await migrate(db, scope, migrations);
    const order = "CASE level WHEN 'province' THEN 0 WHEN 'commune' THEN 1 ELSE 2 END";
    const areas = src.prepare(`SELECT * FROM areas ORDER BY ${order}, code`).all() as Record<string, unknown>[];
    const devices = src.prepare('SELECT * FROM devices ORDER BY id').all() as Record<string, unknown>[];
    await db.write(async (trx) => {
      for (const a of areas) {
        await sql`INSERT INTO areas (code, name, level, parent, created_at) VALUES (${a.code}, ${a.name}, ${a.level}, ${a.parent}, ${a.created_at})
          ON CONFLICT DO NOTHING`.execute(trx);
      }
      for (const d of devices) {
        await sql`INSERT INTO devices (id, kind, name, area, lat, lon, model, enabled, secret_hash, token_lookup, token_hash, created_at, history_from)
          VALUES (${d.id}, ${d.kind}, ${d.name}, ${d.area}, ${d.lat}, ${d.lon}, ${d.model}, ${d.enabled}, ${d.secret_hash}, ${d.token_lookup},
            ${d.token_hash}, ${d.created_at}, ${d.history_from}) ON CONFLICT DO NOTHING`.execute(trx);
        await sql`INSERT INTO device_state (device_id) VALUES (${d.id}) ON CONFLICT DO NOTHING`.execute(trx);
      }
    });
  } finally {
    src.close();
    await db.close();
  }
}

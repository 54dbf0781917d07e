/**
 * `keng cluster import` end to end, with real parts: an embedded Keng process is seeded through its
 * API (areas, devices with credentials, a Modbus device, a user, a login session, an API token, media,
 * a schedule, a firmware package, shared attributes: audited actions all), stopped, and imported as a
 * child process into a real PostgreSQL 15. Then a Keng node in cluster mode (with Redis) on that
 * database: the device logs in over MQTT with its old secret, the user with the old password, the old
 * session and API token still work, everything is listed, new ids do not collide, and `keng audit
 * verify` passes on PostgreSQL. Refusals: a data directory held by a server, a second import, a
 * tampered embedded chain; a dry run writes nothing.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentWav, uploadAudio } from '../helpers/audio.js';
import { ROOT, spawnKeng, type KengProcess } from '../helpers/process.js';
import { connectDevice, connectRefused } from '../helpers/mqtt.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { IMPORTED_TABLES } from '../../src/cli/cluster-tables.js';

const ADMIN = 'cluster-import-admin-token-0123456789';
const AUDIT_KEY = '3c'.repeat(32);
const PW = 'mật khẩu đủ dài 2026';
const TCP = { type: 'modbus-tcp', host: '127.0.0.1', port: 1, unitId: 1 } as const;

let pg: PostgresServer;
let redis: RedisServer;
let work: string;
let dataDir: string;
let url: string;
const procs: KengProcess[] = [];
const seeded = { secret: '', speakerSecret: '', sessionToken: '', apiToken: '', scheduleId: '', mediaId: '', firmwareId: '', broadcastId: '' };

async function api(k: KengProcess, method: string, route: string, body?: unknown, token = ADMIN): Promise<{ status: number; body: any }> {
  const r = await fetch(k.httpUrl + route, {
    method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : undefined };
}

async function ok(k: KengProcess, method: string, route: string, body?: unknown): Promise<any> {
  const r = await api(k, method, route, body);
  if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** `keng ...` as a child process; the cluster settings unless overridden ('' removes one). */
function keng(args: string[], env: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const base: Record<string, string> = { PATH: process.env.PATH ?? '', KENG_DATA_DIR: dataDir, KENG_DATABASE_URL: url, KENG_REDIS_URL: redis.url, KENG_AUDIT_KEY: AUDIT_KEY };
  // An empty value leaves the variable out.
  const all = Object.fromEntries(Object.entries({ ...base, ...env }).filter(([, v]) => v !== ''));
  const p = spawn(process.execPath, [path.join(ROOT, 'bin/keng.js'), ...args], { cwd: ROOT, env: all });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => { stdout += d; });
  p.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve) => p.once('exit', (status) => resolve({ status, stdout, stderr })));
}

async function pgCount(table: string, u = url): Promise<number> {
  const db = new URL(u).pathname.slice(1);
  return Number((await pg.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`, [], db)).rows[0]!.n);
}

function sqliteCounts(dir: string): Record<string, number> {
  const db = new Database(path.join(dir, 'state.db'), { readonly: true });
  try {
    return Object.fromEntries(IMPORTED_TABLES.map((t) => [t.table, (db.prepare(`SELECT count(*) AS n FROM ${t.table}`).get() as { n: number }).n]));
  } finally { db.close(); }
}

async function stop(k: KengProcess): Promise<void> {
  if (k.proc.exitCode === null) k.proc.kill('SIGTERM');
  await k.exited;
}

let seed: KengProcess;

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'keng-cluster-import-'));
  dataDir = path.join(work, 'data');
  [pg, redis] = await Promise.all([startPostgres(), startRedis()]);
  url = await pg.createDatabase('cluster_import');
  seed = await spawnKeng({ KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: ADMIN, KENG_AUDIT_KEY: AUDIT_KEY }, { timeoutMs: 60_000 });
  procs.push(seed);
  await ok(seed, 'POST', '/api/v1/areas', { code: 'p1', name: 'Tỉnh 1', level: 'province' });
  await ok(seed, 'POST', '/api/v1/areas', { code: 'c1', name: 'Xã 1', level: 'commune', parent: 'p1' });
  seeded.secret = (await ok(seed, 'POST', '/api/v1/devices', { id: 'soil-1', kind: 'sensor', name: 'Ruộng 1', area: 'c1' })).secret;
  seeded.speakerSecret = (await ok(seed, 'POST', '/api/v1/devices', { id: 'spk-1', kind: 'speaker', name: 'Loa 1', area: 'c1' })).secret;
  await ok(seed, 'POST', '/api/v1/devices', { id: 'mb-1', kind: 'sensor', name: 'Modbus 1', area: 'c1', transport: TCP, registerMap: 'soil-3in1', pollIntervalSec: 30 });
  await ok(seed, 'PUT', '/api/v1/areas/c1/attributes/shared', { volume: 7 });
  await ok(seed, 'POST', '/api/v1/users', { username: 'lan', password: PW, role: 'operator', areas: ['c1'] });
  seeded.sessionToken = (await ok(seed, 'POST', '/api/v1/auth/login', { username: 'lan', password: PW })).token;
  seeded.apiToken = (await ok(seed, 'POST', '/api/v1/tokens', { name: 'viewer c1', role: 'viewer', areas: ['c1'] })).token;
  const fw = await fetch(`${seed.httpUrl}/api/v1/firmware/packages?title=soil-fw&version=1.0.1`, {
    method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/octet-stream' }, body: Buffer.alloc(4096, 7),
  });
  expect(fw.status).toBe(201);
  seeded.firmwareId = ((await fw.json()) as { id: string }).id;
  const up = await uploadAudio(seed.httpUrl, ADMIN, silentWav(1), { filename: 'tone.wav' });
  expect(up.status).toBe(201);
  seeded.mediaId = up.body.id as string;
  seeded.scheduleId = (await ok(seed, 'POST', '/api/v1/schedules', {
    name: 'Bản tin sáng', target: { areas: ['c1'] }, content: { mediaId: seeded.mediaId }, at: new Date(Date.now() + 30 * 86_400_000).toISOString(),
  })).id;
  // A broadcast to the speaker, which is offline: its play command waits in the queue (proof of play moves too).
  seeded.broadcastId = (await ok(seed, 'POST', '/api/v1/broadcasts', { target: { areas: ['c1'] }, content: { mediaId: seeded.mediaId } })).id;
  // Alert settings and a sensor rule (with its episode row): shared state too.
  await ok(seed, 'PUT', '/api/v1/alerts/policy', { playAtOnce: ['Extreme'] });
  await ok(seed, 'POST', '/api/v1/alert-rules', {
    name: 'Mực nước', area: 'c1', field: 'water_level_cm', op: '>', threshold: 250, enabled: false,
    alert: { event: 'Lũ', severity: 'Severe', urgency: 'Immediate', certainty: 'Observed', headline: 'Nước lên' },
  });
}, 180_000);

afterAll(async () => {
  for (const k of procs) await stop(k);
  await redis?.destroy();
  await pg?.destroy();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('keng cluster import', () => {
  it('refuses while a server holds the data directory (exit 75), and writes nothing', async () => {
    const r = await keng(['cluster', 'import']);
    expect(r.stderr).toMatch(/KENG_ERR_DATA_DIR_IN_USE/);
    expect(r.status).toBe(75);
    expect((await pg.query<{ t: string | null }>("SELECT to_regclass('devices') AS t", [], 'cluster_import')).rows[0]!.t).toBeNull();
    await stop(seed);
  });

  it('needs KENG_DATABASE_URL, and the chain\'s audit key (exit 78), and writes nothing without them', async () => {
    const none = await keng(['cluster', 'import'], { KENG_DATABASE_URL: '', KENG_REDIS_URL: '' });
    expect(none.stderr).toMatch(/KENG_ERR_CONFIG: .*KENG_DATABASE_URL/);
    expect(none.status).toBe(78);
    const wrong = await keng(['cluster', 'import'], { KENG_AUDIT_KEY: '4d'.repeat(32) });
    expect(wrong.stderr).toMatch(/KENG_ERR_AUDIT_KEY: .*key id/);
    expect(wrong.status).toBe(78);
    expect((await pg.query<{ t: string | null }>("SELECT to_regclass('devices') AS t", [], 'cluster_import')).rows[0]!.t).toBeNull();
  });

  it('a dry run prints the row counts and writes nothing to PostgreSQL', async () => {
    const r = await keng(['cluster', 'import', '--dry-run', '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.dryRun).toBe(true);
    expect(report.tables).toEqual(sqliteCounts(dataDir));
    expect(report.tables.devices).toBe(3);
    expect((await pg.query<{ n: string }>('SELECT count(*) AS n FROM pg_tables WHERE schemaname = \'public\'', [], 'cluster_import')).rows[0]!.n).toBe('0');
  });

  it('copies every shared table in one transaction and says what it left behind', async () => {
    const before = sqliteCounts(dataDir);
    const r = await keng(['cluster', 'import']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/Imported .* \(one transaction\)/);
    expect(r.stdout).toMatch(/Not imported:/);
    expect(r.stdout).toContain(path.join(dataDir, 'firmware', `${seeded.firmwareId}.bin`));
    expect(r.stdout).toMatch(/telemetry\.db/);
    for (const [table, n] of Object.entries(before)) {
      // The import's own audit entry is the one row more.
      expect(await pgCount(table), table).toBe(table === 'audit_log' ? n + 1 : n);
    }
    expect(before.audit_log!).toBeGreaterThan(5);
    expect([before.alert_settings, before.alert_rules, before.alert_rule_state]).toEqual([1, 1, 1]);
    expect([before.broadcasts, before.broadcast_targets, before.rpc_requests]).toEqual([1, 1, 1]);
    const head = (await pg.query<{ seq: string }>('SELECT seq FROM audit_head', [], 'cluster_import')).rows[0]!;
    expect(Number(head.seq)).toBe(before.audit_log! + 1);
    const last = (await pg.query<{ action: string }>('SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1', [], 'cluster_import')).rows[0]!;
    expect(last.action).toBe('cluster.imported');
    expect(Number((await pg.query<{ v: string }>('SELECT v FROM registry_version', [], 'cluster_import')).rows[0]!.v)).toBeGreaterThan(0);
    expect((await pg.query<{ online: number }>('SELECT online FROM device_state ORDER BY device_id', [], 'cluster_import')).rows.every((x) => x.online === 0)).toBe(true);
  });

  it('a second import is refused (exit 73) and duplicates nothing', async () => {
    const n = await pgCount('audit_log');
    const r = await keng(['cluster', 'import']);
    expect(r.stderr).toMatch(/KENG_ERR_CLUSTER_NOT_EMPTY/);
    expect(r.stderr).toMatch(/devices: 3 rows/);
    expect(r.status).toBe(73);
    expect(await pgCount('audit_log')).toBe(n);
    expect(await pgCount('devices')).toBe(3);
  });

  it('a cluster node on the imported database: old credentials, sessions, tokens, schedules; new ids; the chain verifies', async () => {
    const nodeDir = path.join(work, 'node1');
    cpSync(dataDir, nodeDir, { recursive: true });
    const node = await spawnKeng({
      KENG_DATA_DIR: nodeDir, KENG_ADMIN_TOKEN: ADMIN, KENG_AUDIT_KEY: AUDIT_KEY, KENG_DATABASE_URL: url, KENG_REDIS_URL: redis.url, KENG_NODE_ID: 'node1',
    }, { timeoutMs: 90_000 });
    procs.push(node);
    // The device with the secret the embedded node issued, over real MQTT.
    const dev = await connectDevice(`mqtt://127.0.0.1:${node.mqttPort}`, 'soil-1', seeded.secret);
    dev.end(true);
    expect(await connectRefused(`mqtt://127.0.0.1:${node.mqttPort}`, 'soil-1', 'not-the-secret')).toBe(4); // bad user name or password
    // The user with the old password; the session and API token issued before the import.
    expect((await api(node, 'POST', '/api/v1/auth/login', { username: 'lan', password: PW })).status).toBe(200);
    expect((await api(node, 'GET', '/api/v1/auth/me', undefined, seeded.sessionToken)).body).toMatchObject({ kind: 'user', id: 'lan' });
    expect((await api(node, 'GET', '/api/v1/devices', undefined, seeded.apiToken)).status).toBe(200);
    const devices = (await ok(node, 'GET', '/api/v1/devices')) as Array<{ id: string; transport?: unknown }>;
    expect(devices.map((d) => d.id).sort()).toEqual(['mb-1', 'soil-1', 'spk-1']);
    expect(devices.find((d) => d.id === 'mb-1')!.transport).toEqual(TCP);
    expect((await ok(node, 'GET', '/api/v1/areas/c1/attributes/shared')).shared).toEqual({ volume: 7 });
    expect(((await ok(node, 'GET', '/api/v1/firmware/packages')) as Array<{ id: string }>).map((p) => p.id)).toEqual([seeded.firmwareId]);
    expect(((await ok(node, 'GET', '/api/v1/schedules')) as Array<{ id: string }>).map((x) => x.id)).toEqual([seeded.scheduleId]);
    expect(((await ok(node, 'GET', '/api/v1/media')) as Array<{ id: string }>).map((x) => x.id)).toEqual([seeded.mediaId]);
    // The broadcast made before the import, and its command still queued for the offline speaker: sent when the
    // speaker connects to a node (no live node owns it: the node holding the speaker's session adopts it).
    const b = await ok(node, 'GET', `/api/v1/broadcasts/${seeded.broadcastId}`) as { targets: Array<{ deviceId: string; state: string }> };
    expect(b.targets).toMatchObject([{ deviceId: 'spk-1', state: 'offline' }]);
    const spk = await connectDevice(`mqtt://127.0.0.1:${node.mqttPort}`, 'spk-1', seeded.speakerSecret, { clientId: 'spk-1' });
    const play = new Promise<{ method: string; params: { broadcastId?: string } }>((resolve) => {
      spk.on('message', (_t, p) => resolve(JSON.parse(String(p)) as { method: string; params: { broadcastId?: string } }));
    });
    await spk.subscribeAsync('v1/devices/spk-1/rpc/request/+', { qos: 1 });
    const cmd = await Promise.race([play, new Promise<null>((r) => setTimeout(() => r(null), 20_000))]);
    expect(cmd).toMatchObject({ method: 'broadcast.play', params: { broadcastId: seeded.broadcastId } });
    spk.end(true);
    // New rows after the import: no id or seq collides.
    const secret2 = (await ok(node, 'POST', '/api/v1/devices', { id: 'soil-2', kind: 'sensor', name: 'Ruộng 2', area: 'c1' })).secret as string;
    (await connectDevice(`mqtt://127.0.0.1:${node.mqttPort}`, 'soil-2', secret2)).end(true);
    await ok(node, 'POST', '/api/v1/users', { username: 'minh', password: PW, role: 'viewer', areas: ['c1'] });
    await stop(node);
    const v = await keng(['audit', 'verify', '--anchors', path.join(dataDir, 'audit-anchors.jsonl')], { KENG_DATA_DIR: nodeDir });
    expect(v.stderr).toBe('');
    expect(v.status).toBe(0);
    const m = /OK: (\d+) audit entries, chain intact .*?(\d+) anchors? checked/.exec(v.stdout);
    expect(m, v.stdout).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(sqliteCounts(dataDir).audit_log! + 2);
    expect(Number(m![2])).toBeGreaterThan(1);
  }, 180_000);

  it('refuses an embedded chain that does not verify, before touching PostgreSQL', async () => {
    const bad = path.join(work, 'tampered');
    cpSync(dataDir, bad, { recursive: true });
    const db = new Database(path.join(bad, 'state.db'));
    db.prepare("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3").run();
    db.close();
    const fresh = await pg.createDatabase('cluster_import_tampered');
    const r = await keng(['cluster', 'import', '--data-dir', bad], { KENG_DATABASE_URL: fresh });
    expect(r.stderr).toMatch(/KENG_ERR_AUDIT_CHAIN_BROKEN: .*seq 3/);
    expect(r.status).toBe(1);
    expect((await pg.query<{ t: string | null }>("SELECT to_regclass('devices') AS t", [], 'cluster_import_tampered')).rows[0]!.t).toBeNull();
  });
});

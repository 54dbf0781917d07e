/**
 * `keng backup` in cluster mode, with real parts: a Keng node on PostgreSQL 15 (and Redis) gets an area,
 * a device, a media file and readings over MQTT; the real CLI backs up while the node runs; the dump is
 * restored with pg_restore into an empty database, exactly as the README says, and a new node started on
 * it (with a data directory made from the backup) has the device, its readings and the media file, and
 * its audit chain verifies. Refusals: no primary to dump, and pg_dump missing.
 */
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentWav, uploadAudio } from '../helpers/audio.js';
import { ROOT, spawnKeng, type KengProcess } from '../helpers/process.js';
import { connectDevice, end, publish } from '../helpers/mqtt.js';
import { startPostgres, postgresBinDir, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';

const ADMIN = 'backup-cluster-admin-token-0123456789';
const AUDIT_KEY = '4d'.repeat(32);

let pg: PostgresServer;
let redis: RedisServer;
let work: string;
let url: string;
const procs: KengProcess[] = [];
let node: KengProcess;
let dataDir: string;
let mediaId = '';
let secret = '';

async function ok(k: KengProcess, method: string, route: string, body?: unknown): Promise<any> {
  const r = await fetch(k.httpUrl + route, {
    method, headers: { authorization: `Bearer ${ADMIN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** `keng ...` as a child process with the cluster settings; asynchronous, since the node keeps serving meanwhile. */
function keng(args: string[], env: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [path.join(ROOT, 'bin/keng.js'), ...args], { cwd: ROOT, env: { PATH: process.env.PATH ?? '', KENG_AUDIT_KEY: AUDIT_KEY, ...env } });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => { stdout += d; });
  p.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve) => p.once('exit', (status) => resolve({ status, stdout, stderr })));
}

async function startNode(dir: string, databaseUrl: string, name: string): Promise<KengProcess> {
  const k = await spawnKeng({
    KENG_DATA_DIR: dir, KENG_ADMIN_TOKEN: ADMIN, KENG_AUDIT_KEY: AUDIT_KEY, KENG_NODE_ID: name,
    KENG_DATABASE_URL: databaseUrl, KENG_REDIS_URL: redis.url,
  }, { timeoutMs: 90_000 });
  procs.push(k);
  return k;
}

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'keng-backup-cluster-'));
  [pg, redis] = await Promise.all([startPostgres(), startRedis()]);
  url = pg.url;
  dataDir = path.join(work, 'node-a');
  node = await startNode(dataDir, url, 'a');
  await ok(node, 'POST', '/api/v1/areas', { code: 'p1', name: 'Tỉnh 1', level: 'province' });
  secret = (await ok(node, 'POST', '/api/v1/devices', { id: 'soil-1', kind: 'sensor', name: 'Soil 1', area: 'p1' })).secret as string;
  const up = await uploadAudio(node.httpUrl, ADMIN, silentWav(1), { filename: 'tone.wav' });
  expect(up.status).toBe(201);
  mediaId = up.body.id as string;
}, 180_000);

afterAll(async () => {
  for (const k of procs) if (k.proc.exitCode === null && k.proc.signalCode === null) { k.proc.kill('SIGKILL'); await k.exited; }
  await Promise.all([pg?.destroy(), redis?.destroy()]);
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('keng backup in cluster mode', () => {
  it('dumps the cluster database while the node takes readings; pg_restore into an empty database brings everything back', async () => {
    const client = await connectDevice(`mqtt://127.0.0.1:${node.mqttPort}`, 'soil-1', secret);
    const t0 = Math.floor(Date.now() / 1000) * 1000 - 3_600_000;
    // Acknowledged (QoS 1) before the backup starts: in the dump.
    for (let i = 0; i < 50; i++) await publish(client, 'v1/devices/soil-1/telemetry', JSON.stringify({ ts: t0 + i * 1000, values: { moisture: i } }), 1);
    // More while the backup runs: the node keeps serving.
    let more = true;
    let extra = 0;
    const writer = (async () => {
      while (more) { await publish(client, 'v1/devices/soil-1/telemetry', JSON.stringify({ ts: t0 + 100_000 + extra * 1000, values: { moisture: 1 } }), 1); extra++; }
    })();
    const target = path.join(work, 'backup');
    const b = await keng(['backup', '--json', target], { KENG_DATA_DIR: dataDir, KENG_DATABASE_URL: url, KENG_REDIS_URL: redis.url });
    more = false;
    await writer;
    await end(client);
    expect(b.stderr).toBe('');
    expect(b.status).toBe(0);
    const manifest = JSON.parse(b.stdout) as { database?: { file: string; server: string }; files: Array<{ path: string }>; missingMedia: string[]; restore: string };
    expect(manifest.database).toMatchObject({ file: 'cluster.pgdump', server: expect.stringMatching(/^15\./) });
    const names = manifest.files.map((f) => f.path);
    expect(names).toContain('cluster.pgdump');
    expect(names).toContain(path.join('media', `${mediaId}.wav`));
    expect(manifest.missingMedia).toEqual([]);
    expect(manifest.restore).toMatch(/pg_restore/);
    expect(statSync(path.join(target, 'cluster.pgdump')).mode & 0o777).toBe(0o600);
    expect(extra).toBeGreaterThan(0);

    // Restore as the README says: an empty database, pg_restore, a data directory from the backup.
    const restoredUrl = await pg.createDatabase('keng_restored');
    const restore = execFileSync(path.join(postgresBinDir(), 'pg_restore'), ['--no-owner', `--dbname=${restoredUrl}`, path.join(target, 'cluster.pgdump')], { encoding: 'utf8' });
    expect(restore).toBe('');
    const dir2 = path.join(work, 'node-b');
    cpSync(target, dir2, { recursive: true });
    rmSync(path.join(dir2, 'keng-backup.json'));
    rmSync(path.join(dir2, 'cluster.pgdump'));
    const n2 = await startNode(dir2, restoredUrl, 'b');
    const devices = (await ok(n2, 'GET', '/api/v1/devices')) as Array<{ id: string }>;
    expect(devices.map((d) => d.id)).toEqual(['soil-1']);
    const media = (await ok(n2, 'GET', '/api/v1/media')) as Array<{ id: string }>;
    expect(media.map((m) => m.id)).toEqual([mediaId]);
    // The file came along: the restored node serves it through its signed link.
    const link = (await ok(n2, 'GET', `/api/v1/media/${mediaId}`)).url as string;
    const file = await fetch(link);
    expect(file.status).toBe(200);
    expect(Buffer.from(await file.arrayBuffer()).equals(readFileSync(path.join(dataDir, 'media', `${mediaId}.wav`)))).toBe(true);
    const hist = await ok(n2, 'GET', `/api/v1/devices/soil-1/telemetry?fields=moisture&from=${new Date(t0).toISOString()}&to=${new Date(t0 + 49_001).toISOString()}&limit=1000`);
    expect((hist.points as Array<{ values: { moisture: number } }>).map((p) => p.values.moisture)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    // The device still logs in with its secret on the restored cluster.
    await end(await connectDevice(`mqtt://127.0.0.1:${n2.mqttPort}`, 'soil-1', secret));
    const verify = await keng(['audit', 'verify'], { KENG_DATA_DIR: dir2, KENG_DATABASE_URL: restoredUrl, KENG_REDIS_URL: redis.url });
    expect(verify.stderr).toBe('');
    expect(verify.status).toBe(0);
  }, 240_000);

  it('refuses with one line and no manifest when no database answers, or pg_dump is missing', async () => {
    const dead = 'postgres://postgres@127.0.0.1:1/keng';
    const t1 = path.join(work, 'backup-dead');
    const r1 = await keng(['backup', t1], { KENG_DATA_DIR: dataDir, KENG_DATABASE_URL: dead, KENG_REDIS_URL: redis.url });
    expect(r1.status).not.toBe(0);
    expect(r1.stderr).toMatch(/KENG_ERR_BACKUP_DATABASE|could not be backed up/);
    expect(() => statSync(path.join(t1, 'keng-backup.json'))).toThrow();
    const t2 = path.join(work, 'backup-nodump');
    // PATH without pg_dump (node is started by absolute path).
    const p = spawn(process.execPath, [path.join(ROOT, 'bin/keng.js'), 'backup', t2], {
      cwd: ROOT, env: { PATH: '/nonexistent', KENG_AUDIT_KEY: AUDIT_KEY, KENG_DATA_DIR: dataDir, KENG_DATABASE_URL: url, KENG_REDIS_URL: redis.url },
    });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    const status = await new Promise<number | null>((resolve) => p.once('exit', resolve));
    expect(status).not.toBe(0);
    expect(err).toMatch(/pg_dump not found/);
    expect(() => statSync(path.join(t2, 'keng-backup.json'))).toThrow();
  }, 120_000);
});

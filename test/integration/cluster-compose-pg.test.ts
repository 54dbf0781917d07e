/**
 * The PostgreSQL scripts of deploy/cluster/compose.yaml, run for real (no Docker here: against
 * this machine's PostgreSQL 15 binaries, the version of the compose file's image):
 *  - pg-primary-init.sh on a fresh primary whose pg_hba.conf is the postgres image's (local trust,
 *    password for everything else): Keng logs in as the role it creates, over SCRAM, and runs its
 *    migrations and stores readings in the database that role owns (no superuser);
 *  - pg-standby.sh makes a streaming standby with the replication role (SCRAM, the line the init
 *    script adds), under the name docs/cluster.md makes synchronous with its ALTER SYSTEM line;
 *    then a reading Keng acknowledges is on the standby.
 *
 * Needs a build (npx tsc -p tsconfig.json).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/deploy.js';
import { spawnKeng, type KengProcess } from '../helpers/process.js';
import { freePort } from '../../tools/ports.js';
import { postgresBinDir, startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';

const ADMIN = 'cluster-compose-admin-token-0123456789';
const KENG_PW = 'keng-password-0123456789abcdef';
const REPL_PW = 'replication-password-0123456789';

/** As root, the scripts run as the postgres user (as in the image: initdb scripts and the standby's `user: postgres`). */
function postgresUser(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  return { uid: Number(execFileSync('id', ['-u', 'postgres']).toString()), gid: Number(execFileSync('id', ['-g', 'postgres']).toString()) };
}

let primary: PostgresServer | undefined;
let redis: RedisServer | undefined;
let keng: KengProcess | undefined;
let standby: ChildProcess | undefined;
const dirs: string[] = [];
afterAll(async () => {
  if (keng && keng.proc.exitCode === null) { keng.proc.kill('SIGKILL'); await keng.exited; }
  if (standby && standby.exitCode === null) {
    await new Promise<void>((r) => { standby!.once('exit', () => r()); standby!.kill('SIGINT'); });
  }
  await redis?.destroy();
  await primary?.destroy();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}, 60_000);

async function query<R extends pg.QueryResultRow>(url: string, sql: string): Promise<R[]> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await c.connect();
  try { return (await c.query<R>(sql)).rows; } finally { await c.end(); }
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try { const v = await fn(); if (v !== undefined) return v; } catch (err) { last = (err as Error).message; }
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms ${last}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('deploy/cluster PostgreSQL scripts', () => {
  it('the init script makes the role Keng runs as; the standby script makes a standby that becomes synchronous as documented', async () => {
    const ids = postgresUser();
    const bin = postgresBinDir();
    primary = await startPostgres();
    const data = path.join(primary.dir, 'data');
    // A first start of the image: the database does not exist yet, and pg_hba.conf is the image's
    // (local trust; any other connection by password), plus loopback trust for postgres (this tool's own queries).
    await primary.query('DROP DATABASE keng', [], 'postgres');
    writeFileSync(path.join(data, 'pg_hba.conf'), 'local all all trust\nhost all postgres 127.0.0.1/32 trust\n');
    const env = { PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`, LC_ALL: 'C', POSTGRES_USER: 'postgres', PGDATA: data,
      PGHOST: primary.dir, PGPORT: String(primary.port), PG_KENG_PASSWORD: KENG_PW, PG_REPLICATION_PASSWORD: REPL_PW };
    execFileSync('bash', [path.join(ROOT, 'deploy/cluster/pg-primary-init.sh')], { env, ...ids, stdio: 'pipe' });
    const hba = readFileSync(path.join(data, 'pg_hba.conf'), 'utf8');
    expect(hba).toContain('host replication replicator all scram-sha-256');
    // The image appends its "host all all all <method>" line before running the scripts; order does not matter for these roles.
    writeFileSync(path.join(data, 'pg_hba.conf'), `${hba}host all all all scram-sha-256\n`);
    await primary.query('SELECT pg_reload_conf()', [], 'postgres');

    const roles = await primary.query<{ rolname: string; rolsuper: boolean; rolreplication: boolean }>(
      "SELECT rolname, rolsuper, rolreplication FROM pg_roles WHERE rolname IN ('keng', 'replicator') ORDER BY rolname", [], 'postgres');
    expect(roles.rows).toEqual([{ rolname: 'keng', rolsuper: false, rolreplication: false }, { rolname: 'replicator', rolsuper: false, rolreplication: true }]);
    const url = `postgres://keng:${KENG_PW}@127.0.0.1:${primary.port}/keng`;
    await expect(query(`postgres://keng:wrong@127.0.0.1:${primary.port}/keng`, 'SELECT 1')).rejects.toThrow(/password authentication failed/);

    // The standby, as compose runs it (its own data directory, the primary's address and the replication password).
    const sdir = mkdtempSync(path.join(tmpdir(), 'keng-pg-standby-'));
    dirs.push(sdir);
    const sdata = path.join(sdir, 'data');
    mkdirSync(sdata, { mode: 0o777 });
    if (ids.uid !== undefined) { chownSync(sdir, ids.uid, ids.gid!); chownSync(sdata, ids.uid, ids.gid!); }
    const sport = await freePort();
    let stail = '';
    standby = spawn('bash', [path.join(ROOT, 'deploy/cluster/pg-standby.sh'), '-p', String(sport), '-c', "listen_addresses=127.0.0.1", '-c', `unix_socket_directories=${sdir}`], {
      ...ids, cwd: sdir, stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: env.PATH, LC_ALL: 'C', PGDATA: sdata, PG_PRIMARY_HOST: '127.0.0.1', PG_PRIMARY_PORT: String(primary.port), PG_STANDBY_NAME: 'pg_standby', PGPASSWORD: REPL_PW },
    });
    standby.stdout!.on('data', (d) => { stail = (stail + d).slice(-4000); });
    standby.stderr!.on('data', (d) => { stail = (stail + d).slice(-4000); });
    await until(`standby streaming ${stail}`, async () => {
      if (standby!.exitCode !== null) throw new Error(`pg-standby.sh exited ${standby!.exitCode}: ${stail}`);
      const r = await primary!.query<{ state: string }>("SELECT state FROM pg_stat_replication WHERE application_name = 'pg_standby' AND usename = 'replicator'", [], 'postgres');
      return r.rows[0]?.state === 'streaming' ? true : undefined;
    }, 60_000).catch((err: Error) => { throw new Error(`${err.message}\n${stail}`); });

    // docs/cluster.md's line, then replication is synchronous.
    const doc = readFileSync(path.join(ROOT, 'docs/cluster.md'), 'utf8');
    const alter = /"(ALTER SYSTEM SET synchronous_standby_names = '[^']+')"/.exec(doc)![1]!;
    await primary.query(alter, [], 'postgres');
    await primary.query('SELECT pg_reload_conf()', [], 'postgres');
    await until('synchronous', async () => ((await primary!.query<{ s: string }>("SELECT sync_state AS s FROM pg_stat_replication WHERE application_name = 'pg_standby'", [], 'postgres')).rows[0]?.s === 'sync' ? true : undefined));

    // Keng as the keng role: migrations at start, then a reading acknowledged over MQTT.
    redis = await startRedis();
    const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-compose-pg-'));
    dirs.push(dataDir);
    keng = await spawnKeng({ KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: ADMIN, KENG_DATABASE_URL: url, KENG_REDIS_URL: redis.url, KENG_NODE_ID: 'keng1' }, { timeoutMs: 60_000 });
    const call = async (method: string, route: string, body?: unknown): Promise<any> => {
      const r = await fetch(keng!.httpUrl + route, { method, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
      if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${await r.text()}`);
      return r.json();
    };
    await call('POST', '/api/v1/areas', { code: 'p1', name: 'P', level: 'province' });
    const { secret } = await call('POST', '/api/v1/devices', { id: 'soil-1', kind: 'sensor', name: 'soil-1', area: 'p1' });
    const client = mqtt.connect(`mqtt://127.0.0.1:${keng.mqttPort}`, { username: 'soil-1', password: secret, reconnectPeriod: 0, protocolVersion: 4 });
    client.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => { client.once('connect', () => resolve()); client.once('error', reject); });
    const ts = Date.now() - 1000;
    await client.publishAsync('v1/devices/soil-1/telemetry', JSON.stringify({ ts, values: { moisture: 41.5 } }), { qos: 1 });
    client.end(true);

    const owners = await query<{ tableowner: string }>(url, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'");
    expect(owners).toEqual([{ tableowner: 'keng' }]);
    // Acknowledged with a synchronous standby: already on the standby.
    const onStandby = await query<{ num: number }>(`postgres://postgres@127.0.0.1:${sport}/keng`, `SELECT num FROM telemetry_readings WHERE device = 'soil-1' AND field = 'moisture' AND ts = ${ts}`);
    expect(onStandby).toEqual([{ num: 41.5 }]);
  }, 240_000);
});

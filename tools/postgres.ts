/**
 * A throw-away PostgreSQL (Debian's binaries, /usr/lib/postgresql/<v>/bin) on a
 * free loopback port with its data in a temporary directory: for the cluster
 * tests and benchmarks. A primary, or a streaming standby of one
 * (`pg_basebackup -R`), optionally synchronous, so a test can SIGKILL the
 * primary and promote the standby.
 *
 * fsync and synchronous_commit stay ON: the durability tests ("every PUBACKed
 * reading survives a crash") would prove nothing otherwise. Only initdb itself
 * runs with --no-sync (an interrupted initdb just fails the test).
 *
 * PostgreSQL refuses to run as root: as root, every binary runs as the
 * `postgres` user (spawn uid/gid) on a directory that user owns; otherwise as
 * the current user. The server is spawned directly (no pg_ctl daemonising) in
 * its own process group, so the test owns its pid; kill() takes the
 * backends down with the postmaster (each one, see killGroup), as a machine crash would. Throws when
 * PostgreSQL is not installed: CI must fail, not skip.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { onCleanup, trackChild } from './cleanup.js';
import { readStatFields } from './proc-stat.js';
import { freePort } from './ports.js';

/** The newest installed PostgreSQL's bin directory (KENG_PG_BIN overrides). */
export function postgresBinDir(): string {
  const env = process.env.KENG_PG_BIN;
  if (env) return env;
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => existsSync(path.join(base, v, 'bin', 'postgres'))) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (!versions.length) throw new Error(`no PostgreSQL under ${base}/*/bin: install Debian's postgresql-15 (scripts/setup-test-deps.sh)`);
  return path.join(base, versions[0]!, 'bin');
}

export interface PostgresServer {
  /** `postgres://postgres@127.0.0.1:<port>/keng` (trust authentication on loopback). */
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** pid of the running postmaster (changes on restart()); -1 when stopped. */
  readonly pid: number;
  /** This server's application_name as a standby (what synchronous_standby_names names). */
  readonly name: string;
  /** One statement on database `keng` (a fresh connection each time, so it works across restarts). */
  query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params?: unknown[], database?: string): Promise<pg.QueryResult<R>>;
  /** A new empty database; returns its URL (one per test file keeps tests independent). */
  createDatabase(name: string): Promise<string>;
  /** SIGKILL of the postmaster and its backends (a crash); resolves when it has exited. */
  kill(): Promise<void>;
  /** Fast shutdown (SIGINT); resolves when it has exited. */
  stop(): Promise<void>;
  /** Start again on the same port and data directory (after kill() it runs crash recovery). */
  restart(): Promise<void>;
  /** Standby → primary; resolves when it accepts writes. */
  promote(): Promise<void>;
  /** kill() and delete the temporary directory. */
  destroy(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Make a streaming standby of this primary. */
  standbyOf?: PostgresServer;
  /** With standbyOf: turn on synchronous replication to this standby once it streams. */
  synchronous?: boolean;
  port?: number;
  /** Extra postgresql.conf lines. */
  conf?: string[];
}

const START_TIMEOUT_MS = 30_000;
let standbySeq = 0;

function runAs(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  return { uid, gid };
}

function run(bin: string, args: string[], ids: { uid?: number; gid?: number }, cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { ...ids, cwd, timeout: 120_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(bin)} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

export async function startPostgres(o: StartPostgresOptions = {}): Promise<PostgresServer> {
  const bin = postgresBinDir();
  const ids = runAs();
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-pg-'));
  if (ids.uid !== undefined) chownSync(dir, ids.uid, ids.gid!);
  chmodSync(dir, 0o700);
  const data = path.join(dir, 'data');
  const port = o.port ?? (await freePort());
  const name = o.standbyOf ? `standby${++standbySeq}_${port}` : `primary_${port}`;
  const own = [
    `port = ${port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${dir}'`,
    'fsync = on', 'synchronous_commit = on', 'wal_level = replica', 'max_wal_senders = 5', 'hot_standby = on',
    'max_connections = 100', 'shared_buffers = 32MB', "log_min_messages = 'warning'", ...(o.conf ?? []), '',
  ].join('\n');

  if (o.standbyOf) {
    const p = o.standbyOf;
    await run(path.join(bin, 'pg_basebackup'), ['-d', `host=127.0.0.1 port=${p.port} user=postgres application_name=${name}`,
      '-D', data, '-R', '-X', 'stream', '-c', 'fast'], ids, dir);
  } else {
    await run(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C'], ids, dir);
    appendFileSync(path.join(data, 'pg_hba.conf'), 'host replication all 127.0.0.1/32 trust\n');
  }
  // Appended last, so these win over what the base backup copied from the primary (its port, its socket dir).
  appendFileSync(path.join(data, 'postgresql.conf'), '\n' + own);

  let child: ChildProcess | null = null;
  let tail = '';
  const connect = async (database = 'keng'): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database, connectionTimeoutMillis: 5_000 });
    c.on('error', () => { /* the server went away: the query in flight rejects */ });
    await c.connect();
    return c;
  };
  const query = async <R extends pg.QueryResultRow>(sql: string, params?: unknown[], database?: string): Promise<pg.QueryResult<R>> => {
    const c = await connect(database);
    try { return await c.query<R>(sql, params); } finally { await c.end().catch(() => undefined); }
  };

  const launch = async (): Promise<void> => {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      tail = '';
      const c = spawn(path.join(bin, 'postgres'), ['-D', data], { ...ids, cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } });
      trackChild(c);
      const keep = (b: Buffer): void => { tail = (tail + b.toString()).slice(-4000); };
      c.stdout!.on('data', keep);
      c.stderr!.on('data', keep);
      child = c;
      let up = false;
      while (c.exitCode === null && c.signalCode === null && Date.now() < deadline) {
        try { await query('SELECT 1', [], 'postgres'); up = true; break; } catch { await new Promise((r) => setTimeout(r, 100)); }
      }
      if (up) return;
      if (Date.now() >= deadline) { await killGroup(c); throw new Error(`postgres on ${port} did not answer within ${START_TIMEOUT_MS} ms: ${tail}`); }
      // Exited early: after a SIGKILL the old shared memory may still be held for a moment; try again.
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  const waitExit = (c: ChildProcess, signal: NodeJS.Signals, group: boolean): Promise<void> => new Promise<void>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) { resolve(); return; }
    c.once('exit', () => resolve());
    try { if (group) process.kill(-c.pid!, signal); else c.kill(signal); } catch { resolve(); }
  });
  const killGroup = async (c: ChildProcess): Promise<void> => {
    // Every child of the postmaster (backends, checkpointer, …) makes itself a session leader (setsid in
    // InitPostmasterChild), so a signal to the postmaster's group reaches the postmaster alone, and an idle
    // backend could still answer a query before it notices the postmaster's death. Each child is killed too.
    const kids = c.pid !== undefined ? childrenOf(c.pid) : [];
    for (const k of kids) { try { process.kill(k, 'SIGKILL'); } catch { /* gone */ } }
    await waitExit(c, 'SIGKILL', true);
    try { process.kill(-c.pid!, 'SIGKILL'); } catch { /* group gone */ }
    await gone(kids);
  };
  const kill = async (): Promise<void> => { const c = child; child = null; if (c) await killGroup(c); };
  const stop = async (): Promise<void> => { const c = child; child = null; if (c) await waitExit(c, 'SIGINT', false); };

  await launch();
  if (!o.standbyOf) await query('CREATE DATABASE keng', [], 'postgres');
  else {
    const p = o.standbyOf;
    const until = Date.now() + START_TIMEOUT_MS;
    const state = async (): Promise<{ state: string; sync_state: string } | undefined> =>
      (await p.query<{ state: string; sync_state: string }>('SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1', [name], 'postgres')).rows[0];
    while ((await state())?.state !== 'streaming') {
      if (Date.now() > until) throw new Error(`standby ${name} is not streaming from :${p.port}: ${tail}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    // Only now: with synchronous_standby_names set before a standby streams, every commit on the primary waits.
    if (o.synchronous) {
      await p.query(`ALTER SYSTEM SET synchronous_standby_names = '"${name}"'`, [], 'postgres');
      await p.query('SELECT pg_reload_conf()', [], 'postgres');
      while ((await state())?.sync_state !== 'sync') {
        if (Date.now() > until) throw new Error(`standby ${name} did not become synchronous`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  const destroy = async (): Promise<void> => { await kill(); rmSync(dir, { recursive: true, force: true }); };
  const unregister = onCleanup(`postgres :${port}`, destroy);
  // Last resort if the test process exits without cleanup: the postmaster is not our direct
  // concern for trackChild (a detached group), so take the group down synchronously.
  const onExit = (): void => { const c = child; if (c?.pid && c.exitCode === null) { try { process.kill(-c.pid, 'SIGKILL'); } catch { /* gone */ } } };
  process.on('exit', onExit);

  return {
    url: `postgres://postgres@127.0.0.1:${port}/keng`,
    port,
    dir,
    name,
    get pid() { return child?.pid ?? -1; },
    query,
    createDatabase: async (db) => {
      if (!/^[a-z_][a-z0-9_]*$/.test(db)) throw new Error(`bad database name ${db}`);
      await query(`CREATE DATABASE ${db}`, [], 'postgres');
      return `postgres://postgres@127.0.0.1:${port}/${db}`;
    },
    kill,
    stop,
    restart: async () => { await stop(); await launch(); },
    promote: async () => {
      await query('SELECT pg_promote(true, 60)', [], 'postgres');
      const until = Date.now() + START_TIMEOUT_MS;
      while ((await query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r', [], 'postgres')).rows[0]!.r) {
        if (Date.now() > until) throw new Error(`standby ${name} did not leave recovery`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    destroy: async () => { unregister(); process.off('exit', onExit); await destroy(); },
  };
}

/** Pids whose parent is `pid` (Linux /proc). */
function childrenOf(pid: number): number[] {
  return readdirSync('/proc').filter((e) => /^\d+$/.test(e) && Number(readStatFields(Number(e))?.[1]) === pid).map(Number);
}

/** Resolves once none of `pids` runs any more (gone, or a zombie whose sockets are closed); at most 5 s. */
async function gone(pids: readonly number[]): Promise<void> {
  const deadline = Date.now() + 5_000;
  const running = (p: number): boolean => { const f = readStatFields(p); return f !== null && f[0] !== 'Z'; };
  while (pids.some(running) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

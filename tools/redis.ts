/**
 * A throw-away Redis (Debian's `/usr/bin/redis-server`) on a free loopback port
 * with its directory in a temporary folder: for the cluster tests and
 * benchmarks. No persistence (Redis is only a best-effort bus for Keng), so a
 * restart starts empty, as after a Redis crash. Throws when redis-server is not
 * installed: CI must fail, not skip.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onCleanup, trackChild } from './cleanup.js';
import { freePort } from './ports.js';

export const REDIS_SERVER = process.env.KENG_REDIS_SERVER ?? '/usr/bin/redis-server';

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** pid of the running redis-server (changes on restart()). */
  readonly pid: number;
  /** SIGKILL (a crash: nothing kept), or SIGTERM with `graceful`; resolves when it has exited. */
  stop(o?: { graceful?: boolean }): Promise<void>;
  /** Start again on the same port (empty). */
  restart(): Promise<void>;
  /** stop() and delete the temporary directory. */
  destroy(): Promise<void>;
}

export async function startRedis(o: { port?: number } = {}): Promise<RedisServer> {
  if (!existsSync(REDIS_SERVER)) throw new Error(`${REDIS_SERVER} not found: install Debian's redis-server (scripts/setup-test-deps.sh)`);
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-redis-'));
  const port = o.port ?? (await freePort());
  let child: ChildProcess | null = null;
  let tail = '';

  const launch = async (): Promise<void> => {
    tail = '';
    const c = spawn(REDIS_SERVER, [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
      '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--protected-mode', 'yes', '--loglevel', 'warning',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    trackChild(c);
    const keep = (b: Buffer): void => { tail = (tail + b.toString()).slice(-4000); };
    c.stdout!.on('data', keep);
    c.stderr!.on('data', keep);
    child = c;
    const deadline = Date.now() + 10_000;
    while (!(await ping(port))) {
      if (c.exitCode !== null) throw new Error(`redis-server exited (${c.exitCode}): ${tail}`);
      if (Date.now() > deadline) throw new Error(`redis-server did not answer on ${port} within 10 s: ${tail}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const stop = async (so: { graceful?: boolean } = {}): Promise<void> => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill(so.graceful ? 'SIGTERM' : 'SIGKILL');
    });
  };

  await launch();
  const destroy = async (): Promise<void> => { await stop(); rmSync(dir, { recursive: true, force: true }); };
  onCleanup(`redis-server :${port}`, destroy);
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get pid() { return child?.pid ?? -1; },
    stop,
    restart: async () => { await stop(); await launch(); },
    destroy,
  };
}

/** True when a Redis on `port` answers PING with PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean): void => { s.destroy(); resolve(ok); };
    s.setTimeout(1000, () => done(false));
    s.on('error', () => done(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { buf += d.toString(); if (buf.includes('\r\n')) done(buf.startsWith('+PONG')); });
  });
}

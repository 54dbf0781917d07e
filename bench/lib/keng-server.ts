/**
 * Runs Keng as a child process (`node dist/src/main.js`) on free loopback
 * ports with a temporary data directory, exactly as an operator would start it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { onCleanup, trackChild } from '../../tools/cleanup.js';
import { freePorts } from '../../tools/ports.js';

/** Nodes of one cluster extend one keyed audit chain, so they share one key (a fresh one per bench run). */
const CLUSTER_AUDIT_KEY = randomBytes(32).toString('hex');

/** The settings that make a Keng process a node of the bench's cluster (docs/cluster.md). */
export function clusterNodeEnv(databaseUrl: string, redisUrl: string, nodeId: string): Record<string, string> {
  return { KENG_DATABASE_URL: databaseUrl, KENG_REDIS_URL: redisUrl, KENG_NODE_ID: nodeId, KENG_AUDIT_KEY: CLUSTER_AUDIT_KEY };
}

export interface KengProcess {
  pid: number;
  httpUrl: string;
  mqttUrl: string;
  dataDir: string;
  adminToken: string;
  child: ChildProcess;
  /** Last lines of the server's output (for error reports). */
  outputTail(): string;
  stop(): Promise<number | null>;
}

export interface StartKengOptions {
  /** Extra KENG_* settings (e.g. the telemetry store). */
  env?: Record<string, string>;
  keepData?: boolean;
  readyTimeoutMs?: number;
}

export const MAIN_JS = fileURLToPath(new URL('../../src/main.js', import.meta.url));

export async function startKeng(o: StartKengOptions = {}): Promise<KengProcess> {
  if (!existsSync(MAIN_JS)) throw new Error(`${MAIN_JS} not found: run "npm run build" first`);
  const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-bench-'));
  const [httpPort, mqttPort] = (await freePorts(2)) as [number, number];
  const adminToken = `bench-admin-${Math.random().toString(36).slice(2)}-${Date.now()}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KENG_DATA_DIR: dataDir,
    KENG_HTTP_HOST: '127.0.0.1',
    KENG_HTTP_PORT: String(httpPort),
    KENG_MQTT_HOST: '127.0.0.1',
    KENG_MQTT_PORT: String(mqttPort),
    KENG_ADMIN_TOKEN: adminToken,
    KENG_LOG_LEVEL: 'warn',
    ...o.env,
  };
  // KENG_BENCH_NODE_ARGS: extra node flags for the server only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeArgs = (process.env.KENG_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, MAIN_JS], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  trackChild(child);
  const tail: string[] = [];
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString().split('\n')) if (line.trim()) tail.push(line);
    if (tail.length > 60) tail.splice(0, tail.length - 60);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));

  const stop = async (): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
    }
    return child.exitCode;
  };
  onCleanup(`keng ${child.pid}`, async () => {
    await stop();
    if (!o.keepData) rmSync(dataDir, { recursive: true, force: true });
  });

  const httpUrl = `http://127.0.0.1:${httpPort}`;
  const proc: KengProcess = {
    pid: child.pid!, httpUrl, mqttUrl: `mqtt://127.0.0.1:${mqttPort}`, dataDir, adminToken, child,
    outputTail: () => tail.join('\n'), stop,
  };
  await waitReady(proc, exited, o.readyTimeoutMs ?? 60_000);
  return proc;
}

async function waitReady(p: KengProcess, exited: Promise<number | null>, timeoutMs: number): Promise<void> {
  let gone: number | null | undefined;
  void exited.then((c) => { gone = c; });
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    if (gone !== undefined) throw new Error(`keng exited with code ${gone} during start:\n${p.outputTail()}`);
    try {
      const res = await fetch(`${p.httpUrl}/readyz`);
      last = `HTTP ${res.status} ${(await res.text()).slice(0, 300)}`;
      if (res.status === 200) return;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`keng not ready after ${timeoutMs} ms (last /readyz: ${last}):\n${p.outputTail()}`);
}

/**
 * A throw-away HAProxy (Debian's `/usr/sbin/haproxy`) in front of Keng nodes,
 * for the cluster tests and benchmarks: MQTT in TCP mode with the PROXY
 * protocol (so each node sees the devices' own addresses), least-connections
 * balancing, and a health check of each node's `GET /readyz` on its HTTP
 * port; optionally the HTTP API too. Runs in master-worker mode so reload()
 * swaps the configuration like `systemctl reload haproxy` does. Throws when
 * haproxy is not installed: CI must fail, not skip.
 *
 * `haproxyConfig()` is the generator; docs/load-balancer.md shows what it
 * writes for a production-like setting (a test compares the two).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onCleanup, trackChild } from './cleanup.js';
import { freePort } from './ports.js';

export const HAPROXY = process.env.KENG_HAPROXY ?? '/usr/sbin/haproxy';

export interface Backend {
  host: string;
  port: number;
  /** The node's HTTP port, where the health check asks healthPath (MQTT backends; required when healthPath is set). */
  checkPort?: number;
  /** Server name in HAProxy (default n1, n2, ...). */
  name?: string;
}

export interface HaproxyCheck {
  /** Interval between checks of a server (HAProxy `inter`, also `fastinter`/`downinter`). */
  interMs: number;
  /** Consecutive failed checks before a server is marked down. */
  fall: number;
  /** Consecutive passed checks before it is marked up again. */
  rise: number;
  /** Time a check may take. */
  timeoutMs: number;
}

/** Fast checks for tests: a stopped node is out of rotation within about half a second. */
export const TEST_CHECK: HaproxyCheck = { interMs: 200, fall: 2, rise: 1, timeoutMs: 1000 };

export interface HaproxyConfigOptions {
  mqttBackends: Backend[];
  /** HTTP API / socket.io nodes (mode http, X-Forwarded-For, sticky by source address for socket.io polling). */
  httpBackends?: Backend[];
  /** PROXY protocol header HAProxy sends to the MQTT backends (Keng's mqtt.proxyProtocol "required"). */
  sendProxy: 'v1' | 'v2' | false;
  /** Health check path on each node's HTTP port; false: a plain TCP connect to the MQTT port. */
  healthPath?: string | false;
  mqttBind: string;
  httpBind?: string;
  check?: HaproxyCheck;
  /** Longest idle MQTT connection (must exceed the devices' keep-alive × 1.5). */
  clientTimeoutMs?: number;
  /** Runtime API socket (`show stat`, `set server ... state drain`). */
  statsSocket?: string;
  /** Connections at once; each needs two file descriptors, so it must stay under half of `ulimit -n`. */
  maxconn?: number;
}

/** HAProxy time units: 10m, 2s, 200ms. */
function dur(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** The configuration file HAProxy reads (the one source of truth for the documented example). */
export function haproxyConfig(o: HaproxyConfigOptions): string {
  const check = o.check ?? TEST_CHECK;
  const health = o.healthPath === undefined ? '/readyz' : o.healthPath;
  const idle = o.clientTimeoutMs ?? 600_000;
  if (!o.mqttBackends.length) throw new Error('haproxy: at least one MQTT backend');
  if (health !== false) {
    const missing = o.mqttBackends.filter((b) => b.checkPort === undefined);
    if (missing.length) throw new Error(`haproxy: MQTT backends need checkPort (their HTTP port) for ${health}: ${missing.map((b) => `${b.host}:${b.port}`).join(', ')}`);
  }
  const proxy = o.sendProxy === 'v2' ? ' send-proxy-v2' : o.sendProxy === 'v1' ? ' send-proxy' : '';
  const every = dur(check.interMs);
  const timing = `inter ${every} fastinter ${every} downinter ${every} fall ${check.fall} rise ${check.rise}`;
  const lines: string[] = [
    'global',
    `  maxconn ${o.maxconn ?? 9000}`,
    ...(o.statsSocket ? [`  stats socket ${o.statsSocket} mode 600 level admin`] : []),
    '',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    '  # longer than any device\'s MQTT keep-alive x 1.5',
    `  timeout client ${dur(idle)}`,
    `  timeout server ${dur(idle)}`,
    `  timeout check ${dur(check.timeoutMs)}`,
    '  # a node that refuses the connection (stopping) is retried, then another one is picked',
    '  retries 2',
    '  option redispatch 1',
    '',
    'frontend mqtt',
    `  bind ${o.mqttBind}`,
    '  default_backend keng_mqtt',
    '',
    'backend keng_mqtt',
    '  balance leastconn',
    ...(health !== false ? [`  # Keng's ${health} on its HTTP port (no PROXY header on checks that name a port)`, `  option httpchk GET ${health}`, '  http-check expect status 200'] : []),
    '  # a node marked down (stopping: 503) loses its device connections; they reconnect to another',
    ...(proxy ? [`  # ${o.sendProxy === 'v2' ? 'send-proxy-v2' : 'send-proxy'}: Keng needs mqtt.proxyProtocol "required", mqtt.trustedProxies = this host`] : []),
    `  default-server ${timing} on-marked-down shutdown-sessions${proxy}`,
    ...o.mqttBackends.map((b, i) => `  server ${b.name ?? `n${i + 1}`} ${b.host}:${b.port} check${health !== false ? ` port ${b.checkPort}` : ''}`),
  ];
  if (o.httpBackends?.length) {
    if (!o.httpBind) throw new Error('haproxy: httpBind is needed with httpBackends');
    lines.push(
      '',
      'frontend http',
      '  mode http',
      `  bind ${o.httpBind}`,
      '  timeout http-request 10s',
      '  default_backend keng_http',
      '',
      'backend keng_http',
      '  mode http',
      '  # socket.io long-polling needs every request of a client on the same node',
      '  balance source',
      '  # X-Forwarded-For: Keng\'s http.trustProxy = this host',
      '  option forwardfor',
      '  # socket.io websockets stay open once upgraded',
      `  timeout tunnel ${dur(idle)}`,
      ...(health !== false ? [`  option httpchk GET ${health}`, '  http-check expect status 200'] : []),
      `  default-server ${timing}`,
      ...o.httpBackends.map((b, i) => `  server ${b.name ?? `n${i + 1}`} ${b.host}:${b.port} check`),
    );
  }
  return `${lines.join('\n')}\n`;
}

export interface HaproxyServerState {
  backend: string;
  name: string;
  /** HAProxy's status column: UP, DOWN, NOLB, MAINT, "UP 1/2" while rising... */
  status: string;
  /** Current sessions. */
  sessions: number;
}

export interface Haproxy {
  readonly mqttPort: number;
  /** 0 without httpBackends. */
  readonly httpPort: number;
  readonly configFile: string;
  readonly pid: number;
  /** Rewrite the configuration with these backends and reload (new connections follow the new list). */
  reload(mqttBackends: Backend[], httpBackends?: Backend[]): Promise<void>;
  /** Every server's state from the runtime API (`show stat`). */
  servers(): Promise<HaproxyServerState[]>;
  /** Resolves when `name` in keng_mqtt has `status` (e.g. 'UP', 'DOWN'). */
  waitForServer(name: string, status: string, timeoutMs?: number): Promise<void>;
  /** One runtime API command (docs: HAProxy management.txt "Unix Socket commands"). */
  command(cmd: string): Promise<string>;
  /** Output so far (logs, warnings). */
  output(): string;
  stop(): Promise<void>;
  destroy(): Promise<void>;
}

export interface StartHaproxyOptions {
  mqttBackends: Backend[];
  httpBackends?: Backend[];
  sendProxy: 'v1' | 'v2' | false;
  healthPath?: string | false;
  check?: HaproxyCheck;
  clientTimeoutMs?: number;
  maxconn?: number;
  /** The HTTP frontend's port, when it must be known before (e.g. the nodes' media.publicBaseUrl); default a free one. */
  httpPort?: number;
}

export async function startHaproxy(o: StartHaproxyOptions): Promise<Haproxy> {
  if (!existsSync(HAPROXY)) throw new Error(`${HAPROXY} not found: install Debian's haproxy (scripts/setup-test-deps.sh)`);
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-haproxy-'));
  const configFile = path.join(dir, 'haproxy.cfg');
  const statsSocket = path.join(dir, 'admin.sock');
  const mqttPort = await freePort();
  const httpPort = o.httpBackends?.length ? o.httpPort ?? await freePort() : 0;
  let current = { mqtt: o.mqttBackends, http: o.httpBackends };
  const write = (): void => writeFileSync(configFile, haproxyConfig({
    mqttBackends: current.mqtt, httpBackends: current.http, sendProxy: o.sendProxy, healthPath: o.healthPath, check: o.check,
    clientTimeoutMs: o.clientTimeoutMs, maxconn: o.maxconn, mqttBind: `127.0.0.1:${mqttPort}`, httpBind: httpPort ? `127.0.0.1:${httpPort}` : undefined, statsSocket,
  }));
  write();
  let tail = '';
  let partial = '';
  /** Times the master reported a worker loaded ("Loading success."): start, then each reload. */
  let loads = 0;
  // -W master-worker (reload on SIGUSR2), -db: stay in the foreground.
  const child: ChildProcess = spawn(HAPROXY, ['-W', '-db', '-f', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  trackChild(child);
  const keep = (b: Buffer): void => {
    const text = b.toString();
    tail = (tail + text).slice(-8000);
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) if (l.includes('Loading success')) loads++;
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);

  const command = (cmd: string): Promise<string> => new Promise((resolve, reject) => {
    const s = net.connect({ path: statsSocket });
    let out = '';
    s.setTimeout(3000, () => s.destroy(new Error(`haproxy runtime API: no answer to ${cmd}`)));
    s.on('error', reject);
    s.on('connect', () => s.write(`${cmd}\n`));
    s.on('data', (d) => { out += d.toString(); });
    s.on('end', () => resolve(out));
  });
  const servers = async (): Promise<HaproxyServerState[]> => {
    const csv = await command('show stat');
    const [head, ...rows] = csv.split('\n').filter((l) => l.trim());
    const cols = head!.replace(/^# /, '').split(',');
    const at = (row: string[], c: string): string => row[cols.indexOf(c)] ?? '';
    return rows.map((r) => r.split(',')).filter((r) => !['FRONTEND', 'BACKEND'].includes(at(r, 'svname')))
      .map((r) => ({ backend: at(r, 'pxname'), name: at(r, 'svname'), status: at(r, 'status'), sessions: Number(at(r, 'scur')) }));
  };
  const waitForServer = async (name: string, status: string, timeoutMs = 15_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    let last: string;
    for (;;) {
      try {
        const s = (await servers()).find((x) => x.backend === 'keng_mqtt' && x.name === name);
        last = s?.status ?? 'absent';
        if (last === status) return;
      } catch (err) { last = (err as Error).message; }
      if (Date.now() > deadline) throw new Error(`haproxy: ${name} not ${status} within ${timeoutMs} ms (last: ${last})\n${tail}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const listening = async (port: number): Promise<boolean> => new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });

  const deadline = Date.now() + 10_000;
  // The master takes a reload signal only once it reported the worker loaded; the runtime API
  // answers once the worker has bound its ports.
  while (loads < 1 || !(existsSync(statsSocket) && await command('show info').then((s) => s.includes('Pid:'), () => false))) {
    if (child.exitCode !== null) throw new Error(`haproxy exited (${child.exitCode}): ${tail}`);
    if (Date.now() > deadline) throw new Error(`haproxy did not start within 10 s: ${tail}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!(await listening(mqttPort))) throw new Error(`haproxy does not listen on ${mqttPort}: ${tail}`);

  const workerPid = async (): Promise<string> => (await command('show info')).match(/^Pid: (\d+)/m)?.[1] ?? '';
  const reload = async (mqtt: Backend[], http?: Backend[]): Promise<void> => {
    const before = await workerPid();
    const loaded = loads;
    current = { mqtt, http: http ?? current.http };
    write();
    child.kill('SIGUSR2');
    // Done when the master loaded a new worker and it answers on the runtime API (the old one finishes its sessions alone).
    const until = Date.now() + 10_000;
    // A master just started sometimes misses the signal (seen with HAProxy 2.6 on a loaded machine):
    // send it again while nothing happened (a second reload of the same file is harmless).
    let resendAt = Date.now() + 1000;
    for (;;) {
      if (loads === loaded && Date.now() > resendAt) { child.kill('SIGUSR2'); resendAt = Date.now() + 1000; }
      if (/Loading failure/.test(tail)) throw new Error(`haproxy refused the new configuration: ${tail}`);
      const now = loads > loaded ? await workerPid().catch(() => '') : '';
      if (now && now !== before) return;
      if (child.exitCode !== null) throw new Error(`haproxy exited on reload: ${tail}`);
      if (Date.now() > until) throw new Error(`haproxy did not reload within 10 s: ${tail}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  };
  const destroy = async (): Promise<void> => { await stop(); rmSync(dir, { recursive: true, force: true }); };
  onCleanup(`haproxy :${mqttPort}`, destroy);
  return {
    mqttPort, httpPort, configFile, get pid() { return child.pid ?? -1; },
    reload, servers, waitForServer, command, output: () => tail, stop, destroy,
  };
}

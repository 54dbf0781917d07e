/**
 * Keng (real processes, dist/) behind a real HAProxy 2.6 in TCP mode:
 * - with mqtt.proxyProtocol "required", devices connecting through HAProxy
 *   (send-proxy-v2 and send-proxy) from 127.0.0.2 and 127.0.0.3 are seen with
 *   their own addresses: mqtt.maxConnectionsPerIp 1 admits one per address
 *   (behind a proxy without the header, every device would share HAProxy's);
 * - a client reaching Keng around HAProxy (no header) and a header sent by a
 *   peer outside mqtt.trustedProxies are refused and counted;
 * - two nodes (separate data dirs, same devices): SIGTERM one, and HAProxy's
 *   /readyz check sends the devices' new connections to the other.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MqttClient, type IClientOptions } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHaproxy, type Haproxy } from '../../tools/haproxy.js';
import { parseMetrics, waitFor } from '../helpers/mqtt.js';
import { spawnKeng, type KengProcess } from '../helpers/process.js';
import { proxyV2 } from '../helpers/proxy-header.js';

const ADMIN = 'cluster-admin-token-0123456789abcdef';
const DEVICES = ['d1', 'd2', 'd3'];

const dirs: string[] = [];
const kengs: KengProcess[] = [];
const proxies: Haproxy[] = [];
const clients: MqttClient[] = [];
let secrets: Record<string, string> = {};
let seedDir = '';

function tempDir(prefix: string): string {
  const d = mkdtempSync(path.join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** Keng behind a proxy: header required, one connection per device address, loopback counted (tests connect from it). */
async function startNode(dataDir: string, extra: Record<string, unknown> = {}): Promise<KengProcess> {
  const cfg = path.join(dataDir, '..', `${path.basename(dataDir)}.json`);
  writeFileSync(cfg, JSON.stringify({ mqtt: { exemptLoopback: false, ...extra } }));
  const k = await spawnKeng({
    KENG_CONFIG: cfg, KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: ADMIN, KENG_LOG_LEVEL: 'debug',
    KENG_MQTT_PROXY_PROTOCOL: 'required', KENG_MQTT_MAX_CONNECTIONS_PER_IP: '1', KENG_MQTT_TRUSTED_PROXIES: '127.0.0.1',
  }, { timeoutMs: 60_000 });
  kengs.push(k);
  return k;
}

async function api(k: KengProcess, method: string, route: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await fetch(k.httpUrl + route, {
    method, headers: { authorization: `Bearer ${ADMIN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : undefined };
}

async function metric(k: KengProcess, name: string): Promise<number> {
  const text = await (await fetch(`${k.httpUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
  return parseMetrics(text).get(name) ?? 0;
}

/** mqtt.js over a socket bound to `localAddress` (mqtt.connect has no such option). */
function device(port: number, id: string, localAddress: string, extra: IClientOptions = {}): MqttClient {
  const c = new MqttClient(() => net.connect({ host: '127.0.0.1', port, localAddress }), {
    protocol: 'mqtt', protocolVersion: 4, clientId: id, username: id, password: secrets[id], reconnectPeriod: 0, connectTimeout: 5000, ...extra,
  } as IClientOptions);
  c.on('error', () => undefined);
  clients.push(c);
  return c;
}

function connected(c: MqttClient): Promise<boolean> {
  return new Promise((resolve) => {
    c.once('connect', () => resolve(true));
    c.once('close', () => resolve(c.connected));
  });
}

/** A raw connection straight to Keng's MQTT port; resolves when Keng closed it. */
function rawClosed(port: number, localAddress: string, bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    s.on('error', () => undefined);
    s.on('connect', () => s.write(bytes));
    s.on('close', () => resolve());
  });
}

beforeAll(async () => {
  // One seeded data dir (areas, devices and their secrets), copied for every node: the same devices everywhere.
  seedDir = tempDir('keng-cluster-seed-');
  const data = path.join(seedDir, 'data');
  const k = await spawnKeng({ KENG_DATA_DIR: data, KENG_ADMIN_TOKEN: ADMIN }, { timeoutMs: 60_000 });
  expect((await api(k, 'POST', '/api/v1/areas', { code: 'p', name: 'Tỉnh', level: 'province' })).status).toBe(201);
  for (const id of DEVICES) {
    const r = await api(k, 'POST', '/api/v1/devices', { id, kind: 'sensor', name: id, area: 'p' });
    expect(r.status).toBe(201);
    secrets[id] = r.body.secret as string;
  }
  k.proc.kill('SIGTERM');
  expect((await k.exited).code).toBe(0);
}, 120_000);

afterAll(async () => {
  for (const c of clients) c.end(true);
  for (const p of proxies) await p.destroy();
  for (const k of kengs) if (k.proc.exitCode === null) { k.proc.kill('SIGKILL'); await k.exited; }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  secrets = {};
});

function nodeDir(): string {
  const d = tempDir('keng-cluster-node-');
  const data = path.join(d, 'data');
  cpSync(path.join(seedDir, 'data'), data, { recursive: true });
  return data;
}

describe('Keng behind HAProxy with the PROXY protocol', () => {
  it('devices are seen with their own addresses through send-proxy-v2 and send-proxy; no header or an untrusted peer: refused and counted', async () => {
    const k = await startNode(nodeDir());
    const backend = [{ host: '127.0.0.1', port: k.mqttPort, checkPort: Number(new URL(k.httpUrl).port) }];
    const v2 = await startHaproxy({ mqttBackends: backend, sendProxy: 'v2' });
    const v1 = await startHaproxy({ mqttBackends: backend, sendProxy: 'v1' });
    proxies.push(v2, v1);
    await v2.waitForServer('n1', 'UP');
    await v1.waitForServer('n1', 'UP');

    const a = device(v2.mqttPort, 'd1', '127.0.0.2');
    expect(await connected(a)).toBe(true);
    const b = device(v1.mqttPort, 'd2', '127.0.0.3');
    expect(await connected(b)).toBe(true); // another address: admitted, whatever the limit of 1
    const c = device(v2.mqttPort, 'd3', '127.0.0.2');
    expect(await connected(c)).toBe(false); // 127.0.0.2 already has its one connection
    expect(await metric(k, 'keng_mqtt_refused_total{op="connect",reason="per_ip_limit"}')).toBe(1);
    expect(await metric(k, 'keng_mqtt_connections')).toBe(2);
    // The log names each device's own address.
    const lines = k.output().split('\n').filter((l) => l.includes('"device connected"'));
    expect(lines.find((l) => l.includes('"deviceId":"d1"'))).toContain('"remote":"127.0.0.2"');
    expect(lines.find((l) => l.includes('"deviceId":"d2"'))).toContain('"remote":"127.0.0.3"');

    // Counted as deltas: in the full suite, clients of other test files that run at the same time (some bound to
    // 127.0.0.x addresses) may reach this node's port if it reuses one theirs had, and are refused too.
    const invalidBefore = await metric(k, 'keng_mqtt_proxy_refused_total{reason="invalid_header"}');
    // Around HAProxy: no header (a device's CONNECT straight to the node).
    await rawClosed(k.mqttPort, '127.0.0.1', Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c]));
    expect(await metric(k, 'keng_mqtt_proxy_refused_total{reason="invalid_header"}') - invalidBefore).toBeGreaterThanOrEqual(1);
    // A header claiming 10.9.9.9, from 127.0.0.9, which is not in mqtt.trustedProxies.
    const untrustedBefore = await metric(k, 'keng_mqtt_proxy_refused_total{reason="untrusted_peer"}');
    await rawClosed(k.mqttPort, '127.0.0.9', proxyV2('10.9.9.9'));
    expect(await metric(k, 'keng_mqtt_proxy_refused_total{reason="untrusted_peer"}') - untrustedBefore).toBeGreaterThanOrEqual(1);
    expect(await metric(k, 'keng_mqtt_connections')).toBe(2);
  }, 120_000);

  it('two nodes: SIGTERM one, HAProxy takes it out (/readyz) and devices reconnect to the other', async () => {
    const n1 = await startNode(nodeDir());
    const n2 = await startNode(nodeDir());
    const nodes = [n1, n2];
    const backends = nodes.map((k) => ({ host: '127.0.0.1', port: k.mqttPort, checkPort: Number(new URL(k.httpUrl).port) }));
    const hp = await startHaproxy({ mqttBackends: backends, sendProxy: 'v2' });
    proxies.push(hp);
    await hp.waitForServer('n1', 'UP');
    await hp.waitForServer('n2', 'UP');

    // Devices that reconnect by themselves, as firmware does.
    const ds = [device(hp.mqttPort, 'd1', '127.0.0.2', { reconnectPeriod: 200 }), device(hp.mqttPort, 'd2', '127.0.0.3', { reconnectPeriod: 200 })];
    await Promise.all(ds.map((d) => connected(d)));
    const counts = async (): Promise<number[]> => Promise.all(nodes.map((k) => metric(k, 'keng_mqtt_connections')));
    expect(await waitFor(async () => ((await counts()).reduce((x, y) => x + y) === 2 ? await counts() : false), 10_000)).toEqual([1, 1]); // leastconn

    const victim = n1;
    const t0 = Date.now();
    victim.proc.kill('SIGTERM');
    expect((await victim.exited).code).toBe(0);
    await hp.waitForServer('n1', 'DOWN', 10_000);
    // The victim's device reconnected through HAProxy to n2; so do new connections.
    await waitFor(async () => (await metric(n2, 'keng_mqtt_connections')) === 2, 20_000, 100);
    const reconnectMs = Date.now() - t0;
    const d3 = device(hp.mqttPort, 'd3', '127.0.0.4');
    expect(await connected(d3)).toBe(true);
    expect(await metric(n2, 'keng_mqtt_connections')).toBe(3);
    expect(ds.every((d) => d.connected)).toBe(true);
    process.stdout.write(`[cluster-haproxy] SIGTERM → device reconnected on the other node: ${reconnectMs} ms\n`);
  }, 180_000);
});

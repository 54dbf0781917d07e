/**
 * Cluster mode, two Keng processes on one real PostgreSQL and one Redis: the
 * state moved to PostgreSQL reaches the other node. A shared attribute set on
 * node A is pushed to a device connected to node B (B's reload, every 5 s);
 * a gateway's creation setting changed on A shows on B; a Modbus unit id
 * taken on A is refused on B. Devices and areas are shared too: they are
 * registered once, on A, and the speaker logs in on B with the token A issued.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnKeng, type KengProcess } from '../helpers/process.js';
import { connectDevice, waitFor } from '../helpers/mqtt.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';

const ADMIN = 'cluster-leaf-admin-token-0123456789';
/** One audit key for both nodes: they append to one audit chain in PostgreSQL. */
const AUDIT_KEY = 'ab'.repeat(32);
let pg: PostgresServer;
let redis: RedisServer;
const nodes: KengProcess[] = [];
const dirs: string[] = [];
const clients: MqttClient[] = [];
let a: KengProcess;
let b: KengProcess;
/** The speaker's access token (issued on node A, valid on every node). */
let speakerToken = '';

async function api(k: KengProcess, method: string, route: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await fetch(k.httpUrl + route, { method, headers: { authorization: `Bearer ${ADMIN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : undefined };
}

async function node(id: string, url: string): Promise<KengProcess> {
  const dataDir = mkdtempSync(path.join(tmpdir(), `keng-leaf-${id}-`));
  dirs.push(dataDir);
  const k = await spawnKeng({ KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: ADMIN, KENG_REDIS_URL: redis.url, KENG_DATABASE_URL: url, KENG_NODE_ID: id, KENG_AUDIT_KEY: AUDIT_KEY });
  nodes.push(k);
  if (id !== 'node-a') return k; // the registry is shared: registered once
  for (const [route, body] of [
    ['/api/v1/areas', { code: 'p1', name: 'Tỉnh 1', level: 'province' }],
    ['/api/v1/areas', { code: 'c1', name: 'Xã 1', level: 'commune', parent: 'p1' }],
    ['/api/v1/devices', { id: 'gw-1', kind: 'gateway', name: 'gw-1', area: 'c1' }],
  ] as const) expect((await api(k, 'POST', route, body)).status).toBe(201);
  const spk = await api(k, 'POST', '/api/v1/devices', { id: 'spk-1', kind: 'speaker', name: 'Loa 1', area: 'c1' });
  expect(spk.status).toBe(201);
  speakerToken = spk.body.accessToken as string;
  return k;
}

beforeAll(async () => {
  [redis, pg] = await Promise.all([startRedis(), startPostgres()]);
  const url = await pg.createDatabase('cluster_leaf');
  a = await node('node-a', url);
  b = await node('node-b', url);
}, 120_000);

afterAll(async () => {
  for (const c of clients) c.end(true);
  for (const k of nodes) if (k.proc.exitCode === null) k.proc.kill('SIGTERM');
  await Promise.all(nodes.map((k) => k.exited));
  await redis?.destroy();
  await pg?.destroy();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('cluster: Modbus settings, shared attributes and gateway settings shared through PostgreSQL', () => {
  it('an area attribute set on node A is pushed to a device connected to node B within its reload interval', async () => {
    const dev = await connectDevice(`mqtt://127.0.0.1:${b.mqttPort}`, speakerToken, undefined, { clean: true });
    clients.push(dev);
    const seen: unknown[] = [];
    dev.on('message', (_t, p) => seen.push(JSON.parse(p.toString())));
    await dev.subscribeAsync('v1/devices/me/attributes', { qos: 1 }); // ThingsBoard style (an access-token login)
    const t0 = Date.now();
    expect((await api(a, 'PUT', '/api/v1/areas/c1/attributes/shared', { volume: 7 })).status).toBe(200);
    await waitFor(() => seen.length >= 1, 20_000, 50);
    const took = Date.now() - t0;
    expect(seen[0]).toEqual({ volume: 7 });
    expect((await api(b, 'GET', '/api/v1/devices/spk-1/attributes/shared')).body.shared).toEqual({ volume: 7 });
    // A deletion on A: B's device is told the key is gone.
    expect((await api(a, 'PUT', '/api/v1/areas/c1/attributes/shared', { volume: null })).status).toBe(200);
    await waitFor(() => seen.length >= 2, 20_000, 50);
    expect(seen[1]).toEqual({ deleted: ['volume'] });
    console.log(`shared attribute from node A reached a device on node B after ${took} ms`);
  }, 60_000);

  it('a gateway allowed to create sub-devices on node A is allowed on node B', async () => {
    expect((await api(b, 'GET', '/api/v1/devices/gw-1')).body.createSubDevices).toBe(false);
    expect((await api(a, 'PATCH', '/api/v1/devices/gw-1', { createSubDevices: true })).status).toBe(200);
    await waitFor(async () => (await api(b, 'GET', '/api/v1/devices/gw-1')).body.createSubDevices === true, 20_000, 200);
  }, 60_000);

  it('a Modbus unit id taken on node A is refused on node B (409)', async () => {
    const modbus = (id: string) => ({
      id, kind: 'sensor', name: id, area: 'c1', registerMap: 'soil-3in1', pollIntervalSec: 600,
      transport: { type: 'modbus-tcp', host: '127.0.0.1', port: 1, unitId: 4 },
    });
    expect((await api(a, 'POST', '/api/v1/devices', modbus('mb-a'))).status).toBe(201);
    const r = await api(b, 'POST', '/api/v1/devices', modbus('mb-b'));
    expect(r.status).toBe(409);
    expect(JSON.stringify(r.body)).toContain('mb-a');
    expect((await api(b, 'GET', '/api/v1/devices/mb-b')).status).toBe(404); // nothing half-registered
  }, 60_000);

  it('a device registered on A connects to B; disabled on A, B closes its connection and refuses it; deleted on A, refused on B', async () => {
    const created = await api(a, 'POST', '/api/v1/devices', { id: 'soil-x', kind: 'sensor', name: 'Soil x', area: 'c1' });
    expect(created.status).toBe(201);
    const secret = created.body.secret as string;
    const url = `mqtt://127.0.0.1:${b.mqttPort}`;
    const dev = await connectDevice(url, 'soil-x', secret); // at once: a login on B checks the registry version first
    clients.push(dev);
    const closed = new Promise<number>((resolve) => dev.once('close', () => resolve(Date.now())));
    const t0 = Date.now();
    expect((await api(a, 'PATCH', '/api/v1/devices/soil-x', { enabled: false })).status).toBe(200);
    const took = (await closed) - t0;
    expect(took).toBeLessThan(5_000); // REGISTRY_POLL_MS (1 s) on a loaded machine
    await expect(connectDevice(url, 'soil-x', secret)).rejects.toThrow(/Not authorized|Connection refused/i);
    expect((await api(a, 'PATCH', '/api/v1/devices/soil-x', { enabled: true })).status).toBe(200);
    const again = await waitFor(async () => connectDevice(url, 'soil-x', secret).catch(() => undefined), 10_000, 200);
    clients.push(again);
    const closedAgain = new Promise<number>((resolve) => again.once('close', () => resolve(Date.now())));
    const t1 = Date.now();
    expect((await api(a, 'DELETE', '/api/v1/devices/soil-x')).status).toBe(204);
    expect((await closedAgain) - t1).toBeLessThan(5_000);
    await expect(connectDevice(url, 'soil-x', secret)).rejects.toThrow(/Not authorized|Bad username|Connection refused/i);
  });
});

/**
 * Presence that expires with its node (docs/cluster.md "Node leases"), with
 * real parts: two Keng processes (dist/src/main.js) on one PostgreSQL 15 and
 * one Redis, devices over real MQTT straight to node A (with the PROXY header
 * HAProxy would send). Node A is SIGKILLed: on node B the devices show
 * offline (API and live feed) once A's lease ran out and a sweep ran, A's
 * session rows are gone, and a device that reconnects to B shows online.
 *
 * Needs a build (npx tsc -p tsconfig.json).
 */
import net from 'node:net';
import { MqttClient, type IClientOptions } from 'mqtt';
import { io as ioc, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NODE_LEASE_DEFAULTS } from '../../src/cluster/index.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { CLUSTER_ADMIN, Cluster, adminApi, metric, removeClusterDirs, seedCluster, within, type ClusterNode, type Seed } from '../helpers/cluster.js';
import { proxyV2 } from '../helpers/proxy-header.js';

const DEVICES = ['lk-1', 'lk-2', 'lk-3', 'lk-4'];

let pg: PostgresServer;
let redis: RedisServer;
let seed: Seed;
let cluster: Cluster;
let a: ClusterNode;
let b: ClusterNode;
const database = 'leasekill';
const clients: MqttClient[] = [];
const sockets: Socket[] = [];

async function connect(n: ClusterNode, id: string): Promise<MqttClient> {
  const c = new MqttClient(() => {
    const s = net.connect({ host: '127.0.0.1', port: n.mqttPort });
    s.write(proxyV2('127.0.0.1'));
    return s;
  }, { protocol: 'mqtt', protocolVersion: 4, clientId: id, username: id, password: seed.secrets[id], reconnectPeriod: 0, connectTimeout: 10_000, keepalive: 60, clean: true } as IClientOptions);
  clients.push(c);
  c.on('error', () => { /* 'close' follows */ });
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('close', () => reject(new Error(`${id} on ${n.name}: closed before CONNACK`)));
  });
  return c;
}

function publish(c: MqttClient, id: string, v: number): Promise<void> {
  return new Promise((resolve, reject) => {
    c.publish(`v1/devices/${id}/telemetry`, JSON.stringify({ ts: Date.now(), values: { v } }), { qos: 1 }, (err) => (err ? reject(err) : resolve()));
  });
}

async function online(n: ClusterNode, id: string): Promise<boolean> {
  return (await adminApi(n.k.httpUrl, 'GET', `/api/v1/devices/${id}`)).online as boolean;
}

beforeAll(async () => {
  [pg, redis] = await Promise.all([startPostgres(), startRedis()]);
  seed = await seedCluster(DEVICES);
  const url = await pg.createDatabase(database);
  cluster = new Cluster(seed, url, redis.url);
  a = await cluster.start('a');
  b = await cluster.start('b');
}, 300_000);

afterAll(async () => {
  for (const c of clients) c.end(true);
  for (const s of sockets) s.close();
  await cluster?.destroy();
  await Promise.all([pg?.destroy(), redis?.destroy()]);
  removeClusterDirs();
});

describe('node leases across real nodes', () => {
  it('node A SIGKILLed: its devices show offline on node B within lease + sweep; a device reconnecting to B shows online', async () => {
    const conns = await Promise.all(DEVICES.map((id) => connect(a, id)));
    await Promise.all(conns.map((c, i) => publish(c, DEVICES[i]!, i)));
    // B learns of A's devices from device_state (A's flush, then B's: two flush periods).
    await within('node B shows the devices online', 20_000, async () => (await Promise.all(DEVICES.map((id) => online(b, id)))).every(Boolean), 200);

    const nodes = await adminApi(b.k.httpUrl, 'GET', '/api/v1/cluster/nodes');
    expect(nodes.mode).toBe('cluster');
    expect(nodes.nodes.map((n: any) => [n.nodeId, n.state, n.self, n.devices])).toEqual([['a', 'alive', false, 4], ['b', 'alive', true, 0]]);
    const ready = await (await fetch(`${b.k.httpUrl}/readyz`, { headers: { authorization: `Bearer ${CLUSTER_ADMIN}` } })).json() as any;
    expect(ready.checks.nodeLease).toMatchObject({ ok: true, detail: { nodeId: 'b', consecutiveFailures: 0 } });

    // A live-feed viewer on B sees the devices go offline.
    const token = await cluster.viewerToken();
    const s = ioc(b.k.httpUrl, { transports: ['websocket'], forceNew: true, auth: { token } });
    sockets.push(s);
    const offlineAt = new Map<string, number>();
    s.on('status', (m: { deviceId: string; online: boolean }) => { if (!m.online && !offlineAt.has(m.deviceId)) offlineAt.set(m.deviceId, Date.now()); });
    await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('connect_error', reject); });
    expect((await s.timeout(5000).emitWithAck('subscribe', { devices: DEVICES })).ok).toBe(true);

    const t0 = Date.now();
    a.k.proc.kill('SIGKILL');
    await a.k.exited;
    const bound = NODE_LEASE_DEFAULTS.leaseMs + NODE_LEASE_DEFAULTS.sweepMs;
    const tookMs = await within('node B shows every device offline', bound + 20_000,
      async () => (await Promise.all(DEVICES.map((id) => online(b, id)))).every((x) => !x), 100);
    console.log(`kill → offline on node B (API): ${tookMs} ms (lease ${NODE_LEASE_DEFAULTS.leaseMs} ms + sweep period ${NODE_LEASE_DEFAULTS.sweepMs} ms)`);
    // Never before the lease (renewed at most renewMs before the kill) could have run out.
    expect(tookMs).toBeGreaterThanOrEqual(NODE_LEASE_DEFAULTS.leaseMs - NODE_LEASE_DEFAULTS.renewMs - 500);
    await within('the live feed on B shows them offline', 5_000, () => offlineAt.size === DEVICES.length, 50);
    console.log(`kill → offline on node B (live feed): ${Math.max(...offlineAt.values()) - t0} ms`);

    const rows = await pg.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM device_sessions', [], database);
    expect(rows.rows[0]!.n).toBe(0);
    const states = await pg.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM device_state WHERE online = 1', [], database);
    expect(states.rows[0]!.n).toBe(0);
    expect(await metric(b.k, 'keng_cluster_devices_expired_total')).toBe(DEVICES.length);
    const after = await adminApi(b.k.httpUrl, 'GET', '/api/v1/cluster/nodes');
    const deadA = after.nodes.find((n: any) => n.nodeId === 'a');
    expect(deadA).toMatchObject({ state: 'expired', devices: 0 });
    expect(deadA.sweptAt).not.toBeNull();
    // The list too.
    const list = await adminApi(b.k.httpUrl, 'GET', '/api/v1/devices');
    expect((list as any[]).filter((d: any) => DEVICES.includes(d.id)).every((d: any) => d.online === false)).toBe(true);

    // lk-1 reconnects to B: online at once, and stays online (the sweep never touches a live node's claim).
    const again = await connect(b, 'lk-1');
    await publish(again, 'lk-1', 9);
    expect(await online(b, 'lk-1')).toBe(true);
    await new Promise((r) => setTimeout(r, 2 * NODE_LEASE_DEFAULTS.sweepMs + 500));
    expect(await online(b, 'lk-1')).toBe(true);
    expect((await pg.query<{ node_id: string }>("SELECT node_id FROM device_sessions WHERE device_id = 'lk-1'", [], database)).rows).toEqual([{ node_id: 'b' }]);
  }, 120_000);
});

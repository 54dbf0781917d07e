/**
 * One MQTT session per device across nodes (docs/cluster.md "One MQTT session
 * per device"), with real parts: two Keng processes (dist/src/main.js, the
 * same seeded data directory copied to each) on one PostgreSQL 15 and one
 * Redis; devices connect to each node directly, with the PROXY header HAProxy
 * would send.
 *
 *  - the same device on node 1, then on node 2: node 1 closes its connection
 *    (Redis notice), the device stays connected exactly once and keeps
 *    publishing;
 *  - the same with Redis stopped: reconciliation in PostgreSQL closes it;
 *  - a device reconnecting to the same node keeps working;
 *  - a node SIGKILLed leaves its rows; the next claim takes them over;
 *  - PostgreSQL down: the CONNECT is refused with CONNACK 3.
 *
 * Needs a build (npx tsc -p tsconfig.json).
 */
import net from 'node:net';
import { MqttClient, type IClientOptions } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { Cluster, metric, removeClusterDirs, seedCluster, sleep, within, type ClusterNode, type Seed } from '../helpers/cluster.js';
import { proxyV2 } from '../helpers/proxy-header.js';

const DEVICES = ['ss-1', 'ss-2', 'ss-3', 'ss-4'];

let pg: PostgresServer;
let redis: RedisServer;
let seed: Seed;
let cluster: Cluster;
let n1: ClusterNode;
let n2: ClusterNode;
let database = '';
const clients: MqttClient[] = [];

interface Conn {
  c: MqttClient;
  /** When the node closed it (0: still open). */
  closedAt: number;
  /** When the TCP connection (and CONNECT) started, and when CONNACK came. */
  startedAt: number;
  connectedAt: number;
}

/** A device connection straight to `n` (PROXY v2 header first, as HAProxy sends); resolves on CONNACK. */
async function connect(n: ClusterNode, id: string): Promise<Conn> {
  const startedAt = Date.now();
  const c = new MqttClient(() => {
    const s = net.connect({ host: '127.0.0.1', port: n.mqttPort });
    s.write(proxyV2('127.0.0.1'));
    return s;
  }, { protocol: 'mqtt', protocolVersion: 4, clientId: id, username: id, password: seed.secrets[id], reconnectPeriod: 0, connectTimeout: 10_000, keepalive: 60, clean: true } as IClientOptions);
  clients.push(c);
  const conn: Conn = { c, closedAt: 0, startedAt, connectedAt: 0 };
  c.on('error', () => { /* 'close' follows */ });
  c.on('close', () => { conn.closedAt ||= Date.now(); });
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => { conn.connectedAt = Date.now(); resolve(); });
    c.once('close', () => reject(new Error(`${id} on ${n.name}: closed before CONNACK`)));
  });
  return conn;
}

/** A QoS 1 reading; resolves when PUBACKed. */
function publish(conn: Conn, id: string, v: number): Promise<void> {
  return new Promise((resolve, reject) => {
    conn.c.publish(`v1/devices/${id}/telemetry`, JSON.stringify({ ts: Date.now(), values: { v } }), { qos: 1 }, (err) => (err ? reject(err) : resolve()));
  });
}

async function sessionRow(id: string): Promise<{ node_id: string; epoch: number } | undefined> {
  return (await pg.query<{ node_id: string; epoch: number }>('SELECT node_id, epoch::int AS epoch FROM device_sessions WHERE device_id = $1', [id], database)).rows[0];
}

beforeAll(async () => {
  [pg, redis] = await Promise.all([startPostgres(), startRedis()]);
  seed = await seedCluster(DEVICES);
  database = 'sessions';
  const url = await pg.createDatabase(database);
  cluster = new Cluster(seed, url, redis.url);
  n1 = await cluster.start('n1');
  n2 = await cluster.start('n2');
}, 300_000);

afterAll(async () => {
  for (const c of clients) c.end(true);
  await cluster?.destroy();
  await Promise.all([pg?.destroy(), redis?.destroy()]);
  removeClusterDirs();
});

describe('one MQTT session per device across nodes', () => {
  it('the same device on node 1 then node 2: node 1 closes its connection; the device stays connected once and publishes', async () => {
    const id = 'ss-1';
    const on1 = await connect(n1, id);
    await publish(on1, id, 1);
    expect(await sessionRow(id)).toMatchObject({ node_id: 'n1' });
    const before = await metric(n1.k, 'keng_cluster_sessions_taken_over_total');
    const on2 = await connect(n2, id);
    await within('node 1 closes the old connection', 5_000, () => on1.closedAt > 0, 20);
    console.log(`takeover with Redis: node 2's CONNACK after ${on2.connectedAt - on2.startedAt} ms, node 1 closed the old connection ${on1.closedAt - on2.startedAt} ms after the new one started`);
    expect(await sessionRow(id)).toMatchObject({ node_id: 'n2' });
    // Past two reconciliations: still connected on node 2 only, and it works.
    await sleep(4_500);
    expect(on2.closedAt).toBe(0);
    await publish(on2, id, 2);
    expect(await metric(n1.k, 'keng_mqtt_connections')).toBe(0);
    expect(await metric(n2.k, 'keng_mqtt_connections')).toBe(1);
    expect(await metric(n1.k, 'keng_cluster_sessions_taken_over_total') - before).toBe(1);
    expect(await metric(n1.k, 'keng_cluster_sessions_taken_over_total{path="bus"}')).toBe(1);
    expect(await metric(n2.k, 'keng_cluster_sessions_taken_over_total')).toBe(0);
    on2.c.end(true);
    // A clean end deletes the row of the claim that ends.
    await within('the row is released', 5_000, async () => (await sessionRow(id)) === undefined);
  }, 60_000);

  it('a device reconnecting to the same node keeps working', async () => {
    const id = 'ss-2';
    const first = await connect(n1, id);
    const epoch1 = (await sessionRow(id))!.epoch;
    const second = await connect(n1, id);
    await within('aedes closes the first connection', 5_000, () => first.closedAt > 0, 20);
    const epoch2 = (await sessionRow(id))!.epoch;
    expect(epoch2).toBeGreaterThan(epoch1);
    expect((await sessionRow(id))!.node_id).toBe('n1');
    await sleep(4_500);
    expect(second.closedAt).toBe(0);
    await publish(second, id, 1);
    expect(await sessionRow(id)).toEqual({ node_id: 'n1', epoch: epoch2 });
    second.c.end(true);
    await within('the row is released', 5_000, async () => (await sessionRow(id)) === undefined);
  }, 60_000);

  it('with Redis stopped, reconciliation closes the old connection within a few seconds', async () => {
    const id = 'ss-3';
    await redis.stop();
    try {
      const on2 = await connect(n2, id);
      const before = await metric(n2.k, 'keng_cluster_sessions_taken_over_total{path="reconcile"}');
      const on1 = await connect(n1, id);
      await within('node 2 closes the old connection', 8_000, () => on2.closedAt > 0, 20);
      console.log(`takeover without Redis: node 1's CONNACK after ${on1.connectedAt - on1.startedAt} ms, node 2 closed the old connection ${on2.closedAt - on1.startedAt} ms after the new one started`);
      await sleep(4_500);
      expect(on1.closedAt).toBe(0);
      await publish(on1, id, 1);
      expect(await metric(n2.k, 'keng_cluster_sessions_taken_over_total{path="reconcile"}') - before).toBe(1);
      expect(await sessionRow(id)).toMatchObject({ node_id: 'n1' });
      on1.c.end(true);
    } finally {
      await redis.restart();
    }
  }, 60_000);

  it('a node SIGKILLed leaves its rows; the next claim on another node takes them over', async () => {
    const id = 'ss-4';
    const on1 = await connect(n1, id);
    const row = await sessionRow(id);
    expect(row).toMatchObject({ node_id: 'n1' });
    n1.k.proc.kill('SIGKILL');
    await n1.k.exited;
    await within('the socket closes', 5_000, () => on1.closedAt > 0, 20);
    expect(await sessionRow(id)).toEqual(row); // nobody released it
    const on2 = await connect(n2, id);
    const taken = await sessionRow(id);
    expect(taken!.node_id).toBe('n2');
    expect(taken!.epoch).toBeGreaterThan(row!.epoch);
    await sleep(4_500);
    expect(on2.closedAt).toBe(0);
    await publish(on2, id, 1);
  }, 60_000);

  it('PostgreSQL down: a CONNECT is refused with CONNACK 3 (server unavailable); accepted again once it is back', async () => {
    const id = 'ss-1';
    const refusedBefore = await metric(n2.k, 'keng_mqtt_refused_total{op="connect",reason="session_claim_unavailable"}');
    await pg.stop();
    try {
      const code = await new Promise<number | undefined>((resolve) => {
        const c = new MqttClient(() => {
          const sock = net.connect({ host: '127.0.0.1', port: n2.mqttPort });
          sock.write(proxyV2('127.0.0.1'));
          return sock;
        }, { protocol: 'mqtt', protocolVersion: 4, clientId: id, username: id, password: seed.secrets[id], reconnectPeriod: 0, connectTimeout: 15_000, clean: true } as IClientOptions);
        clients.push(c);
        c.on('error', (err: Error & { code?: number }) => resolve(err.code));
        c.on('connect', () => resolve(0));
        c.on('close', () => resolve(undefined));
      });
      expect(code).toBe(3);
      expect(await metric(n2.k, 'keng_mqtt_refused_total{op="connect",reason="session_claim_unavailable"}') - refusedBefore).toBe(1);
    } finally {
      await pg.restart();
    }
    await within('connects again', 30_000, async () => {
      try { (await connect(n2, id)).c.end(true); return true; } catch { return false; }
    }, 500);
  }, 90_000);
});

/**
 * The self-fence with two real Keng processes (dist/src/main.js) on one PostgreSQL and one Redis, with the default
 * lease (10 s, fenced 8 s after the last renewal was sent): node n1 reaches PostgreSQL through a blackhole proxy
 * (tools/blackhole.ts). A speaker connects to n1 directly (PROXY v2 header, as HAProxy sends it); n1 is cut from
 * PostgreSQL. Asserted: /readyz 503 with `nodeLease` failing (`fenced`) before n1's lease runs out on PostgreSQL's
 * clock, the speaker's connection closed by n1 and a new CONNECT refused with 3; a command created on n2 reaches the
 * speaker once, from n2, after it reconnected there; healed, n1 is ready again and never sent it.
 *
 * Needs a build (npx tsc -p tsconfig.json).
 */
import net from 'node:net';
import { MqttClient, type IClientOptions } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBlackhole, type Blackhole } from '../../tools/blackhole.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { adminApi, CLUSTER_ADMIN, Cluster, readyz, removeClusterDirs, seedCluster, sleep, within, type Seed } from '../helpers/cluster.js';
import { parseMetrics } from '../helpers/mqtt.js';
import { proxyV2 } from '../helpers/proxy-header.js';

let pg: PostgresServer;
let redis: RedisServer;
let seed: Seed;
let cluster: Cluster | null = null;
let hole: Blackhole | null = null;
const clients: MqttClient[] = [];

beforeAll(async () => {
  [pg, redis] = await Promise.all([startPostgres(), startRedis()]);
  seed = await seedCluster(['fence-sensor']);
}, 300_000);

afterAll(async () => {
  for (const c of clients) c.end(true);
  await cluster?.destroy();
  await hole?.close();
  await redis?.destroy();
  await pg?.destroy();
  removeClusterDirs();
});

/** A device's connection straight to a node (PROXY v2 header first); resolves on CONNACK 0, rejects with its code. */
function connectTo(port: number, id: string, secret: string): Promise<MqttClient> {
  const c = new MqttClient(() => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.write(proxyV2('127.0.0.1'));
    return s;
  }, { protocol: 'mqtt', protocolVersion: 4, clientId: id, username: id, password: secret, reconnectPeriod: 0, connectTimeout: 15_000, clean: true } as IClientOptions);
  clients.push(c);
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c));
    c.once('error', (e: Error & { code?: number }) => { c.end(true); reject(e); });
    c.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

async function metrics(httpUrl: string): Promise<Map<string, number>> {
  return parseMetrics(await (await fetch(`${httpUrl}/metrics`, { headers: { authorization: `Bearer ${CLUSTER_ADMIN}` } })).text());
}

describe('self-fence with two Keng processes', () => {
  it('n1 cut from PostgreSQL: not ready (nodeLease fenced) and its speaker closed before its lease runs out; CONNECT refused with 3; a command made on n2 reaches the speaker once, from n2; healed: ready again', async () => {
    const url = await pg.createDatabase('fence_nodes');
    const u = new URL(url);
    hole = await startBlackhole({ host: u.hostname, port: Number(u.port) });
    u.port = String(hole.port);
    cluster = new Cluster(seed, url, redis.url);
    const n1 = await cluster.start('n1', { databaseUrl: u.toString() });
    const n2 = await cluster.start('n2');
    const secret = (await adminApi(n2.k.httpUrl, 'POST', '/api/v1/devices', { id: 'spk-f', kind: 'speaker', name: 'Loa', area: 'p1' })).secret as string;

    // Every command the speaker gets, with the node whose connection brought it.
    const got: Array<{ node: string; method: string; topic: string }> = [];
    const listen = async (c: MqttClient, node: string): Promise<void> => {
      c.on('message', (topic, p) => { got.push({ node, topic, method: (JSON.parse(String(p)) as { method: string }).method }); });
      await c.subscribeAsync('v1/devices/spk-f/rpc/request/+', { qos: 1 });
    };
    const onN1 = await connectTo(n1.mqttPort, 'spk-f', secret);
    await listen(onN1, 'n1');
    let closedAt = 0;
    onN1.on('close', () => { closedAt ||= Date.now(); });
    expect((await readyz(n1.k)).status).toBe(200);

    hole.pause();
    const cut = Date.now();
    const fencedMs = await within('n1 /readyz: nodeLease fenced', 60_000, async () => {
      const r = await readyz(n1.k, 10_000);
      return r.status === 503 && r.checks.nodeLease?.ok === false && typeof r.checks.nodeLease.detail?.fenced === 'string';
    }, 200);
    await within('n1 closes the speaker\'s connection', 30_000, () => closedAt > 0);
    // n1's lease as PostgreSQL has it (n2 reads it): it ran out after n1 fenced itself and closed the speaker.
    const listed = await adminApi(n2.k.httpUrl, 'GET', '/api/v1/cluster/nodes') as { nodes?: Array<{ nodeId: string; leaseUntil: string | number }> } | Array<{ nodeId: string; leaseUntil: string | number }>;
    const rows = Array.isArray(listed) ? listed : listed.nodes ?? [];
    const leaseUntil = new Date(rows.find((n) => n.nodeId === 'n1')!.leaseUntil).getTime();
    expect(closedAt).toBeLessThan(leaseUntil); // one host: one clock for PostgreSQL and this process
    console.log(`n1 fenced (readyz) ${fencedMs} ms after the cut; speaker closed ${closedAt - cut} ms after the cut, ${leaseUntil - closedAt} ms before n1's lease ran out`);

    // A CONNECT to n1 now is refused with 3 (server unavailable), without waiting for the database.
    const t0 = Date.now();
    await expect(connectTo(n1.mqttPort, 'spk-f', secret)).rejects.toMatchObject({ code: 3 });
    expect(Date.now() - t0).toBeLessThan(5_000);

    // A command made on n2 while the speaker is away; it reconnects (as through the balancer) to n2.
    const cmd = await adminApi(n2.k.httpUrl, 'POST', '/api/v1/devices/spk-f/volume', { volume: 55, validForSec: 600 }) as { id: string };
    const onN2 = await connectTo(n2.mqttPort, 'spk-f', secret);
    await listen(onN2, 'n2');
    await within('the speaker gets the command from n2', 30_000, () => got.some((g) => g.topic.endsWith(`/${cmd.id}`)));

    hole.heal();
    await within('n1 ready again', 60_000, async () => (await readyz(n1.k, 10_000)).status === 200, 200);
    await sleep(3_000); // n1's pickups, adoptions and checks run a few rounds
    expect(got).toEqual([{ node: 'n2', method: 'speaker.setVolume', topic: `v1/devices/spk-f/rpc/request/${cmd.id}` }]);
    const m = await metrics(n1.k.httpUrl);
    expect(m.get('keng_cluster_lease_fences_total')).toBe(1);
    expect(m.get('keng_cluster_lease_fenced')).toBe(0);
    expect(m.get('keng_mqtt_refused_total{op="connect",reason="node_fenced"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('keng_cluster_sessions_taken_over_total{path="fence"}')).toBe(1);
    const cmdNow = await adminApi(n2.k.httpUrl, 'GET', `/api/v1/devices/spk-f/commands/${cmd.id}`) as { state: string };
    expect(cmdNow.state).toBe('sent');
    // Devices are accepted again by n1.
    onN2.end(true);
    (await connectTo(n1.mqttPort, 'spk-f', secret)).end(true);
  }, 240_000);
});

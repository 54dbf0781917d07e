/**
 * Two real Keng processes in cluster mode (one PostgreSQL 15, one Redis) and two
 * real Modbus TCP gateways (python3-pymodbus), one sensor behind each, polled every
 * second (docs/cluster.md "Modbus lines"):
 *  - each gateway is connected to by one node only and polled once per interval:
 *    every stored reading matches one request the gateway answered, no doubles;
 *  - `polledBy` on the device routes names the node polling it, on both nodes;
 *  - a write sent to either node goes out on the holder's connection;
 *  - the node polling a gateway is SIGKILLed: the other node polls it within the
 *    lease plus one claim period (measured: the gateway's own request log).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLAIM_PERIOD_MS, LEASE_MS } from '../../src/modbus/leases.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { CLUSTER_ADMIN, Cluster, adminApi, alive, metric, removeClusterDirs, seedCluster, sleep, within, type Seed } from '../helpers/cluster.js';
import { startPymodbus, type PyServer } from '../helpers/modbus.js';
import { freshStateDatabase, statePostgres, stopStatePostgres } from '../helpers/state-dialects.js';

let redis: RedisServer;
let seed: Seed;
const gateways: PyServer[] = [];
const MAP = { registers: [{ field: 'level', function: 'holding', address: 0, type: 'uint16' }] };

beforeAll(async () => {
  redis = await startRedis();
  seed = await seedCluster([]);
  for (let i = 0; i < 2; i++) gateways.push(await startPymodbus({ tcp: 0, units: [1], data: { 1: { hr: { 0: [100 + i] } } } }));
}, 240_000);
afterAll(async () => {
  for (const g of gateways) await g.stop();
  await redis?.destroy();
  await stopStatePostgres();
  removeClusterDirs();
});

/** Reads of the sensor's register the gateway answered, by the time the test saw them (ms). */
const reads = (g: PyServer): number[] => g.requests.filter((r) => r.fc === 3).map((r) => r.at);
const gaps = (xs: number[]): number[] => xs.slice(1).map((x, i) => x - xs[i]!);

describe('Modbus on two nodes', () => {
  it('each gateway polled by one node, readings stored once per poll, taken over after a SIGKILL', async () => {
    const url = await freshStateDatabase();
    const database = url.split('/').pop()!;
    const pg = await statePostgres();
    const cluster = new Cluster(seed, url, redis.url);
    try {
      const [n1, n2] = [await cluster.start('n1'), await cluster.start('n2')];
      for (const [i, g] of gateways.entries()) {
        await adminApi(n1.k.httpUrl, 'POST', '/api/v1/devices', {
          id: `muc-nuoc-${i}`, kind: 'sensor', name: `Mực nước ${i}`, area: 'p1',
          transport: { type: 'modbus-tcp', host: '127.0.0.1', port: g.port, unitId: 1 }, registerMap: MAP, pollIntervalSec: 1,
        });
      }
      // Both nodes know both devices (each reloads the settings every 5 s) and both lines are held.
      const polledBy = async (base: string, id: string): Promise<string | null> => (await adminApi(base, 'GET', `/api/v1/devices/${id}`)).polledBy as string | null;
      await within('both lines held', 30_000, async () => (await metric(n1.k, 'keng_modbus_lines_held')) + (await metric(n2.k, 'keng_modbus_lines_held')) === 2, 200);
      await sleep(8_000); // past the other node's reload: it knows the devices and could poll them, but must not
      // The fair share counts both nodes' leases (NodeLeases): one line each, whichever claimed first.
      await within('one line per node', 30_000, async () => (await metric(n1.k, 'keng_modbus_lines_held')) === 1 && (await metric(n2.k, 'keng_modbus_lines_held')) === 1, 200);
      const holders = await Promise.all(gateways.map((_, i) => polledBy(n1.k.httpUrl, `muc-nuoc-${i}`)));
      for (const [i] of gateways.entries()) expect(await polledBy(n2.k.httpUrl, `muc-nuoc-${i}`)).toBe(holders[i]);
      expect(holders.every((h) => h === 'n1' || h === 'n2')).toBe(true);
      const list = await adminApi(n2.k.httpUrl, 'GET', '/api/v1/devices') as Array<{ id: string; polledBy?: string | null }>;
      expect(list.filter((d) => d.id.startsWith('muc-nuoc-')).map((d) => d.polledBy)).toEqual(holders);

      // One connection per gateway; one read per second; every stored reading is one answered read.
      for (const g of gateways) {
        expect(g.connections()).toBe(1);
        const r = reads(g);
        expect(r.length).toBeGreaterThanOrEqual(6);
        expect(Math.min(...gaps(r))).toBeGreaterThan(500); // two pollers would read about twice a second
      }
      const stored = async (id: string): Promise<number> => (await pg.query<{ n: number }>(
        "SELECT COUNT(*)::int AS n FROM telemetry_readings WHERE device = $1 AND field = 'level'", [id], database)).rows[0]!.n;
      for (const [i, g] of gateways.entries()) {
        const r1 = reads(g).length;
        const s = await stored(`muc-nuoc-${i}`);
        const r2 = reads(g).length;
        // Taken between two looks at the gateway's log: the reads in between may not be committed yet.
        expect(s).toBeGreaterThanOrEqual(r1 - 1);
        expect(s).toBeLessThanOrEqual(r2);
      }

      // A write goes out from the node polling the line only: the other node forwards it there instead of opening a
      // second connection (test/integration/cluster-modbus-write.test.ts has the failures).
      const write = (base: string): Promise<Response> => fetch(`${base}/api/v1/devices/muc-nuoc-0/modbus/write`, {
        method: 'POST', headers: { authorization: `Bearer ${CLUSTER_ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ field: 'level', value: 7 }),
      });
      const holder0 = cluster.node(holders[0]!), other0 = holder0 === n1 ? n2 : n1;
      expect((await write(other0.k.httpUrl)).status).toBe(200);
      expect((await write(holder0.k.httpUrl)).status).toBe(200);
      expect(gateways[0]!.requests.filter((r) => r.fc === 6)).toHaveLength(2);
      expect(gateways[0]!.connections()).toBe(1);

      // SIGKILL the node polling gateway 0; the other one takes its line over.
      const victim = cluster.node(holders[0]!);
      const survivor = victim === n1 ? n2 : n1;
      victim.k.proc.kill('SIGKILL');
      await victim.k.exited;
      const killedAt = Date.now();
      const before = reads(gateways[0]!).filter((t) => t <= killedAt);
      const lastBefore = before[before.length - 1]!;
      await within('gateway 0 read again', LEASE_MS + CLAIM_PERIOD_MS + 20_000, () => reads(gateways[0]!).some((t) => t > killedAt), 50);
      const firstAfter = reads(gateways[0]!).find((t) => t > killedAt)!;
      const gap = firstAfter - lastBefore;
      console.log(`[cluster-modbus] holders ${holders.join(',')}; killed ${victim.name}: gateway 0's last read before the kill ${killedAt - lastBefore} ms before it, `
        + `first read by ${survivor.name} ${firstAfter - killedAt} ms after it: gap ${gap} ms (lease ${LEASE_MS} ms, claim period ${CLAIM_PERIOD_MS} ms)`);
      // Not before the dead node's lease could have expired; within the lease, a claim period and the first poll's spread (plus load).
      expect(gap).toBeGreaterThan(LEASE_MS - CLAIM_PERIOD_MS - 1_000);
      expect(firstAfter - killedAt).toBeLessThan(LEASE_MS + CLAIM_PERIOD_MS + 10_000);
      expect(await polledBy(survivor.k.httpUrl, 'muc-nuoc-0')).toBe(survivor.name);
      expect(await metric(survivor.k, 'keng_modbus_lines_held')).toBe(2);
      await sleep(4_000);
      const after = reads(gateways[0]!).filter((t) => t >= firstAfter);
      expect(Math.min(...gaps(after))).toBeGreaterThan(500);
      expect(alive(survivor.k)).toBe(true);
    } finally {
      await cluster.destroy();
    }
  }, 240_000);
});

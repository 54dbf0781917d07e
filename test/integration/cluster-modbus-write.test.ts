/**
 * A Modbus write sent to any node (docs/cluster.md "Modbus writes from any node"), with real
 * parts: two Keng processes in cluster mode (one PostgreSQL 15, one Redis) and a real Modbus TCP
 * gateway (python3-pymodbus) whose line node n1 holds. Writes sent to node n2:
 *  - are forwarded to n1 and performed once on the device (the gateway's request log, and the
 *    register read back from it), with one audit entry naming the caller (an operator's API
 *    token), the node that wrote and the node asked;
 *  - the device's refusal comes back with the code and details n1 itself answers with; a value
 *    the register cannot hold is refused by n2 before anything is sent;
 *  - n1 stopped (SIGSTOP: its bus reader, and everything else, stands still): n2 answers
 *    504 KENG_ERR_MODBUS_OUTCOME_UNKNOWN within the forwarding timeout; when n1 runs again it
 *    does not carry out the request it reads late;
 *  - Redis stopped: n2 answers 503 KENG_ERR_MODBUS_UNREACHABLE at once (nothing was sent), and
 *    forwarding works again once Redis is back.
 */
import ModbusSerial from 'modbus-serial';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forwardTimeoutMs } from '../../src/modbus/writes.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { CLUSTER_ADMIN, Cluster, adminApi, alive, metric, readyz, removeClusterDirs, seedCluster, sleep, within, type Seed } from '../helpers/cluster.js';
import { startPymodbus, type PyServer } from '../helpers/modbus.js';
import { freshStateDatabase, stopStatePostgres } from '../helpers/state-dialects.js';

let redis: RedisServer;
let seed: Seed;
let gw: PyServer;
// `far` is outside the gateway's 1000 registers: a write to it is refused with exception 2 (illegal data address).
const MAP = { registers: [{ field: 'level', function: 'holding', address: 0, type: 'uint16' }, { field: 'far', function: 'holding', address: 1500, type: 'uint16' }] };
const DEVICE = 'cong-xa-1';
const TIMEOUT = forwardTimeoutMs(1000); // modbus.requestTimeoutMs is left at its default

beforeAll(async () => {
  redis = await startRedis();
  seed = await seedCluster([]);
  gw = await startPymodbus({ tcp: 0, units: [1], data: { 1: { hr: { 0: [100] } } } });
}, 240_000);
afterAll(async () => {
  await gw?.stop();
  await redis?.destroy();
  await stopStatePostgres();
  removeClusterDirs();
});

/** Register writes (functions 6 and 16) the gateway received. */
const writesSeen = (): number => gw.requests.filter((r) => r.fc === 6 || r.fc === 16).length;

async function readBack(address: number): Promise<number> {
  const c = new ModbusSerial.default();
  await c.connectTCP('127.0.0.1', { port: gw.port! });
  c.setID(1);
  c.setTimeout(3000);
  try { return (await c.readHoldingRegisters(address, 1)).data[0]!; } finally { await new Promise<void>((r) => c.close(() => r())); }
}

/** The calls counters of a node, as /metrics shows them (for the log). */
async function callLines(base: string): Promise<string[]> {
  const text = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${CLUSTER_ADMIN}` } })).text();
  return text.split('\n').filter((l) => l.startsWith('keng_cluster_calls'));
}

interface Answer { status: number; body: any; ms: number }
async function write(base: string, token: string, field: string, value: unknown): Promise<Answer> {
  const t0 = Date.now();
  const r = await fetch(`${base}/api/v1/devices/${DEVICE}/modbus/write`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ field, value }),
    signal: AbortSignal.timeout(60_000),
  });
  return { status: r.status, body: await r.json(), ms: Date.now() - t0 };
}

describe('a Modbus write from any node', () => {
  it('is forwarded to the node polling the line, done once, audited with the caller; failures are said as such', async () => {
    const url = await freshStateDatabase();
    const cluster = new Cluster(seed, url, redis.url);
    try {
      const n1 = await cluster.start('n1');
      await adminApi(n1.k.httpUrl, 'POST', '/api/v1/devices', {
        id: DEVICE, kind: 'sensor', name: 'Cống xã 1', area: 'p1',
        transport: { type: 'modbus-tcp', host: '127.0.0.1', port: gw.port, unitId: 1 }, registerMap: MAP, pollIntervalSec: 1,
      });
      await within('n1 holds the line', 30_000, async () => (await metric(n1.k, 'keng_modbus_lines_held')) === 1, 200);
      // One line, two nodes: n1 keeps it (the share is one line; n2 holding none is only one fewer).
      const n2 = await cluster.start('n2');
      const op = await adminApi(n1.k.httpUrl, 'POST', '/api/v1/tokens', { name: 'operator p1', role: 'operator', areas: ['p1'] }) as { id: string; token: string };
      await within('n2 knows the device and the holder', 30_000, async () => (await adminApi(n2.k.httpUrl, 'GET', `/api/v1/devices/${DEVICE}`)).polledBy === 'n1', 200);
      expect(await metric(n2.k, 'keng_modbus_lines_held')).toBe(0);

      // 1. Sent to n2, written by n1, once.
      const before = writesSeen();
      const ok = await write(n2.k.httpUrl, op.token, 'level', 7);
      expect(ok.status, JSON.stringify(ok.body)).toBe(200);
      expect(ok.body).toMatchObject({ deviceId: DEVICE, field: 'level', value: 7, function: 'holding', address: 0, sent: [7], confirmation: { address: 0, value: 7 } });
      expect(writesSeen() - before).toBe(1);
      expect(gw.requests.filter((r) => r.fc === 6).at(-1)).toMatchObject({ unit: 1, address: 0 });
      expect(gw.connections()).toBe(1); // n1's connection only: n2 never opened one
      expect(await readBack(0)).toBe(7);
      console.log(`[cluster-modbus-write] a write sent to n2 answered in ${ok.ms} ms (forwarding timeout ${TIMEOUT} ms)`);

      const audit = async (): Promise<Array<{ actor: string; ip: string; before: any; after: any }>> =>
        ((await adminApi(n2.k.httpUrl, 'GET', '/api/v1/audit?action=device.modbus_write&limit=50')).entries as any[]).reverse();
      const first = await audit();
      expect(first).toHaveLength(1); // recorded by n1 only, not again by n2
      expect(first[0]).toMatchObject({ actor: `token:${op.id}`, after: { field: 'level', value: 7, node: 'n1', via: 'n2', confirmation: { address: 0, value: 7 } } });
      expect(first[0]!.ip).toMatch(/127\.0\.0\.1/);
      expect(typeof first[0]!.after.requestId).toBe('string');

      // 2. The device's refusal comes back as n1 answers it itself.
      const direct = await write(n1.k.httpUrl, op.token, 'far', 1);
      const viaN2 = await write(n2.k.httpUrl, op.token, 'far', 1);
      expect(direct.status).toBe(502);
      expect(viaN2.status).toBe(502);
      expect(viaN2.body.error).toMatchObject({ code: 'KENG_ERR_MODBUS_EXCEPTION', details: { exceptionCode: 2, meaning: 'illegal data address' } });
      expect(viaN2.body.error).toEqual(direct.body.error);
      // A value the register cannot hold: refused by n2, nothing sent to n1 or the device.
      const n = writesSeen();
      const bad = await write(n2.k.httpUrl, op.token, 'level', 70_000);
      expect(bad.status).toBe(400);
      expect(bad.body.error.code).toBe('KENG_ERR_VALIDATION');
      expect(writesSeen()).toBe(n);

      // 3. n1 stops reading the bus (SIGSTOP): the write is sent, no answer comes: outcome unknown, within the bound.
      const sentBefore = writesSeen();
      n1.k.proc.kill('SIGSTOP');
      let lost: Answer;
      try {
        lost = await write(n2.k.httpUrl, op.token, 'level', 9);
      } finally {
        n1.k.proc.kill('SIGCONT');
      }
      console.log(`[cluster-modbus-write] n1 stopped: n2 answered ${lost.status} ${lost.body.error?.code} after ${lost.ms} ms`);
      expect(lost.status).toBe(504);
      expect(lost.body.error).toMatchObject({ code: 'KENG_ERR_MODBUS_OUTCOME_UNKNOWN', details: { node: 'n1', timeoutMs: TIMEOUT } });
      expect(lost.body.error.message).toMatch(/[Rr]ead the register back/);
      expect(lost.ms).toBeGreaterThanOrEqual(TIMEOUT - 100);
      expect(lost.ms).toBeLessThan(TIMEOUT + 5_000);
      // n1 runs again and reads the request late: its caller gave up, so it is not carried out.
      await sleep(6_000);
      expect(alive(n1.k)).toBe(true);
      expect(writesSeen()).toBe(sentBefore);
      expect(await readBack(0)).toBe(7);
      const unknownEntry = (await audit()).find((e) => e.after.error === 'KENG_ERR_MODBUS_OUTCOME_UNKNOWN');
      expect(unknownEntry).toMatchObject({ actor: `token:${op.id}`, after: { node: 'n2', forwardedTo: 'n1', requestId: lost.body.error.details.requestId } });
      console.log(`[cluster-modbus-write] n1 after SIGCONT: ${(await callLines(n1.k.httpUrl)).join(', ')}; n2: ${(await callLines(n2.k.httpUrl)).join(', ')}`);

      // 4. Redis down: nothing can be sent to n1: 503 at once, not written.
      await redis.stop();
      try {
        await within('n2 sees Redis down', 30_000, async () => (await readyz(n2.k)).checks.liveBus?.detail?.degraded === true, 200);
        const refused = await write(n2.k.httpUrl, op.token, 'level', 11);
        console.log(`[cluster-modbus-write] Redis down: n2 answered ${refused.status} ${refused.body.error?.code} after ${refused.ms} ms`);
        expect(refused.status).toBe(503);
        expect(refused.body.error.code).toBe('KENG_ERR_MODBUS_UNREACHABLE');
        expect(refused.body.error.message).toMatch(/Redis/);
        expect(refused.ms).toBeLessThan(3_000);
        expect(writesSeen()).toBe(sentBefore);
      } finally {
        await redis.restart();
      }
      // Redis back (empty): forwarding works again.
      let again: Answer | null = null;
      await within('a forwarded write works again', 60_000, async () => {
        again = await write(n2.k.httpUrl, op.token, 'level', 12);
        return again.status === 200;
      }, 500);
      expect(await readBack(0)).toBe(12);
      expect(writesSeen()).toBe(sentBefore + 1);
    } finally {
      await cluster.destroy();
    }
  }, 300_000);
});

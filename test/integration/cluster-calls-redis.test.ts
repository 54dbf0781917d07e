/**
 * Calls between nodes (src/cluster/calls.ts) over the live bus's stream on a
 * real redis-server (tools/redis.ts), two nodes in one process:
 *  - a request whose stream entry is old by Redis's own clock (an entry id 20 s
 *    in the past: what a node that stalled reads late) arrives with that age and
 *    is not run;
 *  - a call is answered, its request and answer carried as messages to one node;
 *  - the serving node's bus gone (its subscription closed): no_answer after the
 *    caller's timeout, not sooner, not later;
 *  - Redis stopped: unsent, at once.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BusCalls, RedisClusterBus, type DirectMessage } from '../../src/cluster/index.js';
import { Metrics, createLogger, systemClock } from '../../src/core/index.js';
import { parseMetrics, waitFor } from '../helpers/mqtt.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';

const STREAM = 'keng:live';
let redis: RedisServer;
let probe: Redis;
const parts: Array<{ stop(): Promise<void> }> = [];

interface Node { bus: RedisClusterBus; calls: BusCalls; metrics: Metrics; received: DirectMessage[] }

async function node(nodeId: string): Promise<Node> {
  const metrics = new Metrics({ defaultMetrics: false });
  const logger = createLogger('silent');
  const received: DirectMessage[] = [];
  const n = {} as Node;
  n.bus = new RedisClusterBus({
    url: redis.url, nodeId, logger, clock: systemClock, metrics, remote: () => undefined,
    direct: (m) => { received.push(m); n.calls.received(m); },
    tuning: { backoffMaxMs: 500, blockMs: 500 },
  });
  n.calls = new BusCalls({ bus: n.bus, nodeId, logger, metrics });
  n.metrics = metrics;
  n.received = received;
  await n.bus.start();
  await n.calls.start();
  parts.push(n.calls, n.bus);
  await waitFor(() => n.bus.report().detail.degraded === false, 15_000);
  return n;
}

async function counter(m: Metrics, name: string, label: string): Promise<number> {
  let sum = 0;
  for (const [k, v] of parseMetrics(await m.registry.metrics())) if (k.startsWith(`${name}{`) && k.includes(label)) sum += v;
  return sum;
}

beforeAll(async () => {
  redis = await startRedis();
  probe = new Redis(redis.url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => 100 });
  probe.on('error', () => undefined);
  await probe.connect();
}, 60_000);

afterAll(async () => {
  for (const p of parts.reverse()) await p.stop();
  probe?.disconnect();
  await redis?.destroy();
});

describe('calls between nodes over Redis', () => {
  it('answered; an old request is not run; no answer from a node whose bus is gone; unsent without Redis', async () => {
    const a = await node('a');
    const b = await node('b');
    const ran: unknown[] = [];
    b.calls.serve('write', async (payload, ctx) => { ran.push(payload); return { by: 'b', remainingMs: ctx.remainingMs }; });

    // An entry added with an id 20 s in the past: B reads it now, 20 s old by Redis's clock, and does not run it.
    const [sec] = await probe.time();
    const old = `${Number(sec) * 1000 - 20_000}-0`;
    // First on the fresh stream: stream ids only grow, so an old one can be added only before any other.
    expect(await probe.xlen(STREAM)).toBe(0);
    await probe.xadd(STREAM, old, 'i', 'forger', 'n', 'a', 's', 1, 't', Date.now(), 'd', 'b',
      'm', JSON.stringify({ q: 'old-call', k: 'write', w: 10_000, p: { v: 'late' } }));
    await waitFor(() => b.received.length === 1, 10_000);
    expect(b.received[0]!.ageMs).toBeGreaterThanOrEqual(19_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(ran).toEqual([]);
    expect(await counter(b.metrics, 'keng_cluster_calls_served_total', 'result="stale"')).toBe(1);

    // Answered.
    const t0 = Date.now();
    const ok = await a.calls.call('b', 'write', { v: 1 }, 5_000);
    const ms = Date.now() - t0;
    expect(ok).toMatchObject({ status: 'answered', answer: { by: 'b' } });
    expect(ran).toEqual([{ v: 1 }]);
    expect(b.received).toHaveLength(2);
    expect(b.received[1]!.from).toBe('a');
    expect(b.received[1]!.ageMs).toBeGreaterThanOrEqual(0);
    expect(b.received[1]!.ageMs).toBeLessThan(2_000);
    console.log(`[cluster-calls-redis] a call answered in ${ms} ms; the request was ${b.received[1]!.ageMs} ms old on arrival (Redis clock)`);

    // B's bus gone (its connections closed): A's request is sent, nobody answers: no_answer at the timeout.
    await b.bus.stop();
    const t1 = Date.now();
    const lost = await a.calls.call('b', 'write', { v: 2 }, 1_500);
    const lostMs = Date.now() - t1;
    expect(lost.status).toBe('no_answer');
    expect(lostMs).toBeGreaterThanOrEqual(1_450);
    expect(lostMs).toBeLessThan(4_000);
    expect(ran).toEqual([{ v: 1 }]);

    // Redis gone: nothing can be sent: unsent, at once.
    await redis.stop();
    await waitFor(() => a.bus.report().detail.degraded === true, 15_000);
    const t2 = Date.now();
    expect((await a.calls.call('b', 'write', { v: 3 }, 10_000)).status).toBe('unsent');
    expect(Date.now() - t2).toBeLessThan(500);
    expect(await counter(a.metrics, 'keng_cluster_calls_total', 'outcome="unsent"')).toBe(1);
    await redis.restart();
  }, 120_000);
});

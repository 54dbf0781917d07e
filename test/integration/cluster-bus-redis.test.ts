/**
 * The live bus adapter (src/cluster/redis-bus.ts) against a real
 * redis-server (tools/redis.ts): two nodes on one Redis exchange committed
 * batches as one stream entry each and skip their own; while Redis is gone
 * publish() neither throws nor blocks, the outage is logged once and counted,
 * and after Redis comes back (empty, on the same port) reading resumes for
 * new batches, with the gap counted.
 */
import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommitRelay, RedisClusterBus } from '../../src/cluster/index.js';
import { EventBus, Metrics, createLogger, systemClock, type TelemetryEvent } from '../../src/core/index.js';
import { parseMetrics, waitFor } from '../helpers/mqtt.js';
import { freePort } from '../../tools/ports.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';

interface Node { bus: RedisClusterBus; got: TelemetryEvent[][]; metrics: Metrics; logs: Array<{ level: number; msg: string }>; nudged: number }

let redis: RedisServer;
const nodes: Node[] = [];
let probe: Redis;

function node(url: string, nodeId: string): Node {
  const metrics = new Metrics({ defaultMetrics: false });
  const logs: Array<{ level: number; msg: string }> = [];
  const out = new PassThrough();
  out.on('data', (b: Buffer) => { for (const l of b.toString().split('\n')) if (l) logs.push(JSON.parse(l)); });
  const got: TelemetryEvent[][] = [];
  const bus = new RedisClusterBus({
    url, nodeId, logger: createLogger('info', { destination: out }), clock: systemClock, metrics,
    remote: (events) => { got.push([...events]); },
    rpcNudged: () => { n.nudged++; },
    tuning: { backoffMaxMs: 500, blockMs: 500 },
  });
  const n: Node = { bus, got, metrics, logs, nudged: 0 };
  nodes.push(n);
  return n;
}

const batch = (device: string, n: number, t0 = Date.now()): TelemetryEvent[] =>
  Array.from({ length: n }, (_, i) => ({ deviceId: device, area: 'va1', kind: 'sensor', ts: t0 + i, values: { soil_moisture: i } }));

/** A metric summed over its labels. */
async function metric(n: Node, name: string): Promise<number> {
  let sum = 0;
  for (const [k, v] of parseMetrics(await n.metrics.registry.metrics())) if (k === name || k.startsWith(name + '{')) sum += v;
  return sum;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  redis = await startRedis();
  probe = new Redis(redis.url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => 100 });
  probe.on('error', () => undefined);
  await probe.connect();
});

afterAll(async () => {
  for (const n of nodes) await n.bus.stop();
  probe?.disconnect();
  await redis?.destroy();
});

describe('live bus over a real Redis', () => {
  let a: Node;
  let b: Node;

  it('two nodes exchange batches, one entry per batch, and skip their own', async () => {
    a = node(redis.url, 'node-a');
    b = node(redis.url, 'node-b');
    await a.bus.start();
    await b.bus.start();
    await waitFor(async () => (await metric(a, 'keng_cluster_bus_up')) === 1 && (await metric(b, 'keng_cluster_bus_up')) === 1, 10_000);
    await sleep(200); // both readers are blocked on the stream's end

    const fromA = batch('soil-a', 250);
    const fromB = batch('soil-b', 3);
    a.bus.publish(fromA);
    b.bus.publish(fromB);
    await waitFor(() => b.got.length >= 1 && a.got.length >= 1, 10_000);
    await sleep(300);
    expect(b.got).toEqual([fromA]); // one entry, the whole batch, in order
    expect(a.got).toEqual([fromB]); // and never its own
    expect(await probe.xlen('keng:live')).toBe(2);
    const fields = (await probe.xrange('keng:live', '-', '+', 'COUNT', 1))[0]![1];
    expect(fields.filter((_, i) => i % 2 === 0)).toEqual(['i', 'n', 's', 't', 'b']);
    expect(fields[3]).toBe('node-a');
    expect(await metric(a, 'keng_cluster_bus_readings_total')).toBe(250 + 3); // sent 250, received 3
    expect(parseMetrics(await b.metrics.registry.metrics()).get('keng_cluster_bus_entries_total{direction="received"}')).toBe(1);
  });

  it('an entry it cannot decode (another writer, another version) is counted and skipped; the next one still arrives', async () => {
    const before = b.got.length;
    await probe.xadd('keng:live', '*', 'i', 'someone', 'n', 'x', 's', '1', 't', String(Date.now()), 'b', '[["d","a","k",[1,{"v":null}]]]');
    await probe.xadd('keng:live', '*', 'n', 'x'); // no fields to speak of
    const list = batch('soil-a', 2);
    a.bus.publish(list);
    await waitFor(() => b.got.length > before, 10_000);
    expect(b.got.at(-1)).toEqual(list);
    expect(await metric(b, 'keng_cluster_bus_bad_entries_total')).toBe(2);
  });

  it('an RPC pickup hint reaches only the node it names', async () => {
    const bad = await metric(a, 'keng_cluster_bus_bad_entries_total');
    a.bus.nudgeRpc('node-b');
    b.bus.nudgeRpc('node-x'); // another node: nobody here acts on it
    await waitFor(() => b.nudged === 1, 10_000);
    await sleep(300);
    expect([a.nudged, b.nudged]).toEqual([0, 1]);
    expect(await metric(a, 'keng_cluster_bus_bad_entries_total')).toBe(bad);
  });

  it('the relay turns one commit\'s readings (emitted together) into one entry', async () => {
    const bus = new EventBus();
    const relay = new CommitRelay({ bus, cluster: a.bus });
    await relay.start();
    const before = await probe.xlen('keng:live');
    const seen = b.got.length;
    const list = batch('soil-r', 40);
    for (const e of list) bus.emit('telemetry', e); // what ingest's post-commit step does for one group commit
    await waitFor(() => b.got.length > seen, 10_000);
    expect(b.got.at(-1)).toEqual(list);
    expect(await probe.xlen('keng:live')).toBe(before + 1);
    bus.emit('telemetry.accepted', batch('soil-r', 1)[0]!); // not committed yet: not shared
    await relay.stop();
    await sleep(300);
    expect(b.got).toHaveLength(seen + 1);
  });

  it('Redis killed mid-stream: publish never throws or blocks, the outage is logged once; after restart reading resumes', async () => {
    const warnBefore = a.logs.filter((l) => l.level === 40).length;
    let stopPublishing = false;
    let maxPublishMs = 0;
    let published = 0;
    const publisher = (async () => {
      while (!stopPublishing) {
        const t0 = performance.now();
        a.bus.publish(batch('soil-a', 5));
        maxPublishMs = Math.max(maxPublishMs, performance.now() - t0);
        published++;
        await sleep(20);
      }
    })();
    await waitFor(() => b.got.length >= 5, 10_000);
    await redis.stop(); // SIGKILL: a crash, nothing kept
    await sleep(2500); // several back-off rounds and ~100 batches while down
    const downUnsent = await metric(a, 'keng_cluster_bus_unsent_readings_total');
    expect(downUnsent).toBeGreaterThan(0);
    expect(await metric(a, 'keng_cluster_bus_up')).toBe(0);
    const gotWhileDown = b.got.length;

    await redis.restart(); // same port, empty
    await waitFor(async () => (await metric(a, 'keng_cluster_bus_up')) === 1 && (await metric(b, 'keng_cluster_bus_up')) === 1, 15_000);
    const t0 = Date.now();
    await waitFor(() => b.got.length > gotWhileDown + 3, 15_000);
    const resumeMs = Date.now() - t0;
    stopPublishing = true;
    await publisher;

    expect(maxPublishMs).toBeLessThan(50); // synchronous, no network wait (generous for a loaded machine)
    expect(published).toBeGreaterThan(100);
    // Only new readings after the restart: every batch received after the outage was sent after Redis came back.
    const newest = b.got.slice(gotWhileDown).map((x) => x[0]!.ts);
    expect(Math.min(...newest)).toBeGreaterThan(t0 - 20_000);
    // Logged once per outage per node (not per batch, not per reconnect attempt), and once for the recovery.
    const warns = a.logs.filter((l) => l.level === 40).slice(warnBefore);
    expect(warns).toHaveLength(1);
    expect(warns[0]!.msg).toMatch(/Redis unreachable/);
    expect(a.logs.filter((l) => /Redis reachable/.test(l.msg)).length).toBe(2); // at start, after the restart
    expect(await metric(a, 'keng_cluster_bus_outages_total')).toBe(1);
    expect(await metric(b, 'keng_cluster_bus_missed_entries_total')).toBeGreaterThan(0); // the gap, counted
    console.log(`live bus: resumed ${resumeMs} ms after both nodes reconnected; ${downUnsent} readings unsent while down`);
  }, 60_000);

  it('Redis stalled (SIGSTOP, connections stay open): publish still never blocks, calls time out, outstanding XADDs are capped; it recovers on SIGCONT', async () => {
    const unsentBefore = await metric(a, 'keng_cluster_bus_unsent_readings_total');
    const outagesBefore = await metric(a, 'keng_cluster_bus_outages_total');
    const pid = redis.pid;
    process.kill(pid, 'SIGSTOP');
    let maxPublishMs = 0;
    try {
      for (let i = 0; i < 150; i++) {
        const t0 = performance.now();
        a.bus.publish(batch('soil-a', 5));
        maxPublishMs = Math.max(maxPublishMs, performance.now() - t0);
        await sleep(10);
      }
      await waitFor(async () => (await metric(a, 'keng_cluster_bus_up')) === 0, 10_000); // the 1-s command timeout
      const text = await a.metrics.registry.metrics();
      expect(parseMetrics(text).get('keng_cluster_bus_unsent_readings_total{reason="backlog"}')).toBeGreaterThan(0); // over 64 outstanding
      expect(await metric(a, 'keng_cluster_bus_unsent_readings_total')).toBeGreaterThan(unsentBefore);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(maxPublishMs).toBeLessThan(50);
    await waitFor(async () => (await metric(a, 'keng_cluster_bus_up')) === 1 && (await metric(b, 'keng_cluster_bus_up')) === 1, 15_000);
    expect(await metric(a, 'keng_cluster_bus_outages_total')).toBe(outagesBefore + 1);
    const seen = b.got.length;
    const list = batch('soil-a', 3, Date.now() + 60_000);
    let delivered = false;
    for (let i = 0; i < 50 && !delivered; i++) {
      a.bus.publish(list);
      await sleep(200);
      delivered = b.got.slice(seen).some((x) => x[0]!.ts === list[0]!.ts);
    }
    expect(delivered).toBe(true);
  }, 60_000);

  it('a node started while Redis is down runs, counts what it cannot send, and joins when Redis appears', async () => {
    const port = await freePort();
    const late = node(`redis://127.0.0.1:${port}`, 'node-late');
    const other = node(`redis://127.0.0.1:${port}`, 'node-other');
    await late.bus.start(); // does not wait for Redis
    await other.bus.start();
    late.bus.publish(batch('soil-l', 7));
    expect(await metric(late, 'keng_cluster_bus_unsent_readings_total')).toBe(7);
    await waitFor(() => late.logs.some((l) => l.level === 40), 5000);
    await sleep(1500); // several reconnect attempts: still one line
    expect(late.logs.filter((l) => l.level === 40)).toHaveLength(1);
    const r2 = await startRedis({ port });
    try {
      await waitFor(async () => (await metric(late, 'keng_cluster_bus_up')) === 1 && (await metric(other, 'keng_cluster_bus_up')) === 1, 15_000);
      await sleep(300);
      const list = batch('soil-l', 4);
      late.bus.publish(list);
      await waitFor(() => other.got.length >= 1, 10_000);
      expect(other.got).toEqual([list]);
    } finally {
      await late.bus.stop();
      await other.bus.stop();
      await r2.destroy();
    }
  }, 60_000);
});

/**
 * Calls between nodes (src/cluster/calls.ts) over an in-memory bus whose
 * deliveries the test controls (lost, copied, late): the outcomes a caller can
 * tell apart (answered, unsent, no answer, refused, failed), a call run at
 * most once per id however often its request arrives, and a request older than
 * its caller's timeout never run. Over real Redis: test/integration/cluster-modbus.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BusCalls, RecentCalls, type CallContext, type DirectMessage } from '../../src/cluster/index.js';
import { Metrics } from '../../src/core/metrics.js';
import { createLogger } from '../../src/core/logger.js';

const logger = createLogger('silent');

/** Messages "on the bus", for the test to deliver, copy or drop. */
interface Sent { from: string; to: string; body: string }

function rig() {
  const sent: Sent[] = [];
  const up = { a: true, b: true };
  const metrics = new Metrics({ defaultMetrics: false });
  const a = new BusCalls({ bus: { sendDirect: (to, body) => up.a && !!sent.push({ from: 'a', to, body }) }, nodeId: 'a', logger, metrics });
  const b = new BusCalls({ bus: { sendDirect: (to, body) => up.b && !!sent.push({ from: 'b', to, body }) }, nodeId: 'b', logger });
  const nodes = { a, b };
  /** Hands message `i` to its node, `ageMs` old. */
  const deliver = (i: number, ageMs: number | null = 5): void => {
    const s = sent[i]!;
    nodes[s.to as 'a' | 'b'].received({ from: s.from, body: s.body, ageMs } satisfies DirectMessage);
  };
  return { sent, up, a, b, deliver, metrics };
}

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));
const stops: Array<() => Promise<void>> = [];
afterEach(async () => { for (const s of stops.splice(0)) await s(); });

async function started() {
  const r = rig();
  await r.a.start();
  await r.b.start();
  stops.push(() => r.a.stop(), () => r.b.stop());
  return r;
}

async function counter(m: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const j = await m.registry.getSingleMetric(name)!.get();
  return j.values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((s, v) => s + v.value, 0);
}

describe('calls between nodes', () => {
  it('a call is answered with what the handler returns; the handler learns who asked and how long they still wait', async () => {
    const r = await started();
    const seen: Array<{ payload: unknown; ctx: CallContext }> = [];
    r.b.serve('echo', async (payload, ctx) => { seen.push({ payload, ctx }); return { got: payload }; });
    const call = r.a.call('b', 'echo', { x: 1 }, 5_000);
    expect(r.sent).toHaveLength(1);
    expect(r.sent[0]!.to).toBe('b');
    r.deliver(0, 1_200);
    await flush();
    expect(seen).toHaveLength(1);
    expect(seen[0]!.payload).toEqual({ x: 1 });
    expect(seen[0]!.ctx).toMatchObject({ from: 'a', remainingMs: 3_800 });
    expect(r.sent).toHaveLength(2);
    expect(r.sent[1]!.to).toBe('a');
    r.deliver(1);
    const out = await call;
    expect(out).toEqual({ status: 'answered', id: seen[0]!.ctx.id, answer: { got: { x: 1 } } });
    expect(await counter(r.metrics, 'keng_cluster_calls_total', { kind: 'echo', outcome: 'answered' })).toBe(1);
  });

  it('a request delivered again (while it runs, and after) is run once; the later copy gets the first answer again', async () => {
    const r = await started();
    let runs = 0;
    let finish!: () => void;
    r.b.serve('write', () => { runs++; return new Promise((res) => { finish = () => res({ n: runs }); }); });
    const call = r.a.call('b', 'write', {}, 5_000);
    r.deliver(0);
    r.deliver(0); // a copy while the first runs: dropped
    await flush();
    expect(runs).toBe(1);
    finish();
    await flush();
    expect(r.sent.map((s) => s.to)).toEqual(['b', 'a']);
    r.deliver(0); // a copy after the answer: answered again, not run
    await flush();
    expect(runs).toBe(1);
    expect(r.sent.map((s) => s.to)).toEqual(['b', 'a', 'a']);
    expect(r.sent[2]!.body).toBe(r.sent[1]!.body);
    r.deliver(1);
    r.deliver(2); // the second answer finds no call waiting: ignored
    expect(await call).toMatchObject({ status: 'answered', answer: { n: 1 } });
  });

  it('a request older than its caller\'s timeout (by Redis\'s clock), or of unknown age, is not run', async () => {
    const r = await started();
    let runs = 0;
    r.b.serve('write', async () => { runs++; return null; });
    const late = r.a.call('b', 'write', {}, 300);
    r.deliver(0, 300);
    const unknownAge = r.a.call('b', 'write', {}, 300);
    r.deliver(1, null);
    await flush();
    expect(runs).toBe(0);
    expect(r.sent).toHaveLength(2); // no answers
    expect((await late).status).toBe('no_answer');
    expect((await unknownAge).status).toBe('no_answer');
  });

  it('not sent: said at once, without waiting for the timeout', async () => {
    const r = await started();
    r.up.a = false;
    const t0 = Date.now();
    const out = await r.a.call('b', 'write', {}, 60_000);
    expect(out.status).toBe('unsent');
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(await counter(r.metrics, 'keng_cluster_calls_total', { outcome: 'unsent' })).toBe(1);
  });

  it('sent, answer lost: no_answer after the timeout; the late answer changes nothing', async () => {
    const r = await started();
    r.b.serve('write', async () => 'done');
    const t0 = Date.now();
    const call = r.a.call('b', 'write', {}, 400);
    r.deliver(0);
    await flush();
    expect(r.sent).toHaveLength(2); // the answer, not delivered yet
    const out = await call;
    expect(out.status).toBe('no_answer');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(390);
    r.deliver(1);
    expect(await counter(r.metrics, 'keng_cluster_calls_total', { outcome: 'no_answer' })).toBe(1);
    expect(await counter(r.metrics, 'keng_cluster_calls_total', { outcome: 'answered' })).toBe(0);
  });

  it('a kind the other node does not serve is refused; a handler that throws answers failed', async () => {
    const r = await started();
    r.b.serve('boom', async () => { throw new Error('broken'); });
    const refused = r.a.call('b', 'nothing', {}, 5_000);
    r.deliver(0);
    await flush();
    r.deliver(1);
    expect(await refused).toMatchObject({ status: 'refused' });
    const failed = r.a.call('b', 'boom', {}, 5_000);
    r.deliver(2);
    await flush();
    r.deliver(3);
    expect(await failed).toMatchObject({ status: 'failed', reason: 'broken' });
  });

  it('answers are matched by id: two calls in flight get their own answers, in any order', async () => {
    const r = await started();
    r.b.serve('echo', async (p) => p);
    const one = r.a.call('b', 'echo', 1, 5_000);
    const two = r.a.call('b', 'echo', 2, 5_000);
    r.deliver(1);
    r.deliver(0);
    await flush();
    r.deliver(3);
    r.deliver(2);
    expect([(await one as { answer: unknown }).answer, (await two as { answer: unknown }).answer]).toEqual([1, 2]);
  });

  it('stop: calls waiting end as no_answer; calls being served finish and answer first', async () => {
    const r = rig();
    await r.a.start();
    await r.b.start();
    let finish!: () => void;
    r.b.serve('slow', () => new Promise((res) => { finish = () => res('ok'); }));
    const call = r.a.call('b', 'slow', {}, 60_000);
    r.deliver(0);
    await flush();
    await r.a.stop();
    expect((await call).status).toBe('no_answer');
    let stopped = false;
    const stopping = r.b.stop().then(() => { stopped = true; });
    await flush();
    expect(stopped).toBe(false);
    finish();
    await stopping;
    expect(r.sent.map((s) => s.to)).toEqual(['b', 'a']);
    expect((await r.a.call('b', 'slow', {}, 1_000)).status).toBe('unsent'); // not running: nothing sent
  });
});

describe('recent call ids', () => {
  it('an id is new once, then running, then done with its answer; forgotten after rememberMs or beyond the cap', () => {
    let now = 0;
    const rc = new RecentCalls(1_000, 3, () => now);
    expect(rc.admit('x')).toEqual({ state: 'new' });
    expect(rc.admit('x')).toEqual({ state: 'running' });
    rc.answered('x', 'A');
    expect(rc.admit('x')).toEqual({ state: 'done', answer: 'A' });
    now = 500;
    rc.admit('y');
    now = 1_000; // x is 1000 ms old: forgotten; y is kept
    expect(rc.admit('y')).toEqual({ state: 'running' });
    expect(rc.size).toBe(1);
    rc.admit('z1');
    rc.admit('z2');
    rc.admit('z3'); // over the cap of 3: the oldest (y) goes
    expect(rc.size).toBe(3);
    expect(rc.admit('z1')).toEqual({ state: 'running' });
    expect(rc.admit('y')).toEqual({ state: 'new' });
  });
});

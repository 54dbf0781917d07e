/**
 * The self-fence's clock (src/cluster/lease-fence.ts) on a fake monotonic clock: the deadline is the renewal's
 * send time + lease − margin, fenced past it until a renewal, events and metrics once per fence.
 */
import { Writable } from 'node:stream';
import { Registry } from 'prom-client';
import { describe, expect, it, vi } from 'vitest';
import { defaultFenceMargin, LeaseFence } from '../../src/cluster/index.js';
import { createLogger } from '../../src/core/index.js';

function rig(o: { leaseMs?: number; marginMs?: number } = {}) {
  let t = 1_000;
  const lines: Array<{ level: number; msg: string }> = [];
  const destination = new Writable({ write(chunk: Buffer, _e, cb) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l)); cb(); } });
  const registry = new Registry();
  const fence = new LeaseFence({
    leaseMs: o.leaseMs ?? 10_000, marginMs: o.marginMs ?? 2_000, logger: createLogger('info', { destination }), metrics: { registry },
    now: () => t, timers: false,
  });
  const events: boolean[] = [];
  fence.onChange((f) => events.push(f));
  const metric = async (name: string): Promise<number> => Number((await registry.getMetricsAsJSON()).find((m) => m.name === name)?.values[0]?.value ?? 0);
  return { fence, events, lines, metric, at: (ms: number) => { t = ms; }, now: () => t };
}

describe('lease fence', () => {
  it('the default margin is a fifth of the lease, less than lease − renewal period for the defaults', () => {
    expect(defaultFenceMargin(10_000)).toBe(2_000);
    expect(defaultFenceMargin(800)).toBe(160);
    expect(10_000 - defaultFenceMargin(10_000)).toBeGreaterThan(2_000 * 3); // several 2 s renewals may fail first
  });

  it('not valid before the first renewal, without a fenced event (nothing runs yet)', () => {
    const r = rig();
    expect(r.fence.valid()).toBe(false);
    expect(r.fence.isFenced()).toBe(false);
    expect(r.fence.remainingMs()).toBeNull();
    expect(r.events).toEqual([]);
  });

  it('deadline = send time + lease − margin; fenced past it (once), unfenced by the next renewal', async () => {
    const r = rig();
    r.at(5_000);
    const sent = r.fence.mark();
    r.at(5_300); // the answer comes 300 ms later: the deadline still counts from the send
    r.fence.renewed(sent);
    expect(r.fence.remainingMs()).toBe(5_000 + 10_000 - 2_000 - 5_300);
    r.at(12_999);
    expect(r.fence.valid()).toBe(true);
    expect(r.events).toEqual([]);
    r.at(13_000); // = 5,000 + 10,000 − 2,000
    expect(r.fence.valid()).toBe(false);
    expect(r.fence.valid()).toBe(false);
    expect(r.fence.isFenced()).toBe(true);
    expect(r.events).toEqual([true]);
    expect(await r.metric('keng_cluster_lease_fences_total')).toBe(1);
    expect(await r.metric('keng_cluster_lease_fenced')).toBe(1);
    expect(r.lines.filter((l) => l.level === 40 && /fenced/.test(l.msg))).toHaveLength(1);

    // A renewal that succeeds: valid again, one unfenced event and one info line.
    r.at(20_000);
    const again = r.fence.mark();
    r.at(20_100);
    r.fence.renewed(again);
    expect(r.fence.valid()).toBe(true);
    expect(r.events).toEqual([true, false]);
    expect(await r.metric('keng_cluster_lease_fenced')).toBe(0);
    expect(r.lines.filter((l) => l.level === 30 && /unfenced/.test(l.msg))).toHaveLength(1);
    r.at(28_000);
    expect(r.fence.valid()).toBe(false);
    expect(r.events).toEqual([true, false, true]);
    expect(await r.metric('keng_cluster_lease_fences_total')).toBe(2);
  });

  it('a renewal that took longer than lease − margin does not unfence (its lease is not surely valid)', () => {
    const r = rig({ leaseMs: 1_000, marginMs: 200 });
    r.fence.renewed(r.fence.mark());
    r.at(r.now() + 900);
    expect(r.fence.valid()).toBe(false);
    const sent = r.fence.mark();
    r.at(sent + 850); // answered after 850 ms: sent + 1,000 − 200 has passed
    r.fence.renewed(sent);
    expect(r.fence.valid()).toBe(false);
    expect(r.events).toEqual([true]);
  });

  it('a late answer of an older renewal never moves the deadline back', () => {
    const r = rig();
    const old = r.fence.mark();
    r.at(3_000);
    const newer = r.fence.mark();
    r.fence.renewed(newer);
    r.fence.renewed(old);
    expect(r.fence.remainingMs()).toBe(3_000 + 8_000 - 3_000);
  });

  it('a timer that fires before the deadline by the fence\'s clock is set again, so the fenced event still comes', async () => {
    // Node's timers run on the event loop's cached time, which can lag the monotonic clock: the fence's timer may
    // fire while its clock still reads before the deadline. Here the clock does not move until told.
    let t = 0;
    const events: boolean[] = [];
    const fence = new LeaseFence({ leaseMs: 300, marginMs: 100, logger: createLogger('silent'), now: () => t });
    fence.onChange((f) => events.push(f));
    fence.renewed(fence.mark()); // deadline 200 on the fence's clock; its timer in ~201 ms
    await new Promise((r) => setTimeout(r, 300)); // the timer has fired: too early by the fence's clock
    expect(events).toEqual([]);
    t = 250;
    await vi.waitFor(() => expect(events).toEqual([true]), { timeout: 5_000, interval: 20 });
    fence.stop();
  });

  it('with timers, the fenced event comes by itself at the deadline (real clock)', async () => {
    const events: boolean[] = [];
    const fence = new LeaseFence({ leaseMs: 300, marginMs: 100, logger: createLogger('silent') });
    fence.onChange((f) => events.push(f));
    fence.renewed(fence.mark());
    await new Promise((r) => setTimeout(r, 100));
    expect(events).toEqual([]);
    // Nothing is called here: the fence's own timer must fire. A loaded machine (CI runs test files in parallel)
    // fires timers late, so wait for it rather than for a fixed time.
    await vi.waitFor(() => expect(events).toEqual([true]), { timeout: 5_000, interval: 20 });
    fence.renewed(fence.mark());
    expect(events).toEqual([true, false]);
    fence.stop();
  });
});

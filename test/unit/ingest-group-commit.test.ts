import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { GroupCommitter, countReadings } from '../../src/ingest/group-commit.js';
import type { TelemetryRecord, WriteResult } from '../../src/storage/telemetry/types.js';

interface Deferred { resolve(r: WriteResult): void; reject(e: unknown): void }

/** A fake store: records every writeBatch; writes complete when the test says so (or at once). */
class FakeStore {
  calls: TelemetryRecord[][] = [];
  pending: Deferred[] = [];
  auto = true;
  failWith: unknown = null;
  throwSync: unknown = null;
  writeBatch(records: TelemetryRecord[]): Promise<WriteResult> {
    if (this.throwSync) throw this.throwSync;
    this.calls.push(records);
    if (this.failWith) return Promise.reject(this.failWith);
    if (this.auto) return Promise.resolve({ written: countReadings(records), duplicates: 0 });
    return new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
  }
  /** Fails the oldest pending write. */
  fail(err: unknown): void { this.pending.shift()!.reject(err); }
  /** Completes the oldest pending write. */
  complete(dups = 0): void {
    const d = this.pending.shift()!;
    const n = countReadings(this.calls[this.calls.length - 1 - this.pending.length]!);
    d.resolve({ written: n - dups, duplicates: dups });
  }
}

const rec = (i: number, fields = 1): TelemetryRecord => {
  const values: Record<string, number> = {};
  for (let f = 0; f < fields; f++) values[`f${f}`] = i;
  return { deviceId: 'dev-1', kind: 'sensor', ts: 1_000 + i, values };
};

function setup(opts: { intervalMs?: number; maxReadings?: number; maxInFlight?: number; spacingMs?: number; fakeClock?: boolean } = {}) {
  const store = new FakeStore();
  let clock = 0;
  const observe = vi.fn();
  const warn = vi.fn();
  const gc = new GroupCommitter({
    store, intervalMs: opts.intervalMs ?? 4, maxReadings: opts.maxReadings ?? 1000, maxInFlight: opts.maxInFlight ?? 1,
    spacingMs: opts.spacingMs,
    metrics: { commitLatency: { observe } as never }, logger: { warn, error: vi.fn() } as never,
    // fakeClock: the fake timers' Date, so time moves as the test advances the timers.
    now: opts.fakeClock ? () => Date.now() : () => clock,
  });
  return { store, gc, observe, warn, setClock: (t: number) => { clock = t; } };
}

/** Settles a promise's state without awaiting it. */
function track<T>(p: Promise<T>) {
  const s: { done: boolean; value?: T; error?: unknown } = { done: false };
  p.then((v) => { s.done = true; s.value = v; }, (e: unknown) => { s.done = true; s.error = e; });
  return s;
}

describe('GroupCommitter', () => {
  beforeEach(() => { vi.useFakeTimers(); });
  afterEach(() => { vi.useRealTimers(); });

  it('an idle writer writes at the next turn, not after commitIntervalMs: one writeBatch for the turn, in submission order', async () => {
    const { store, gc } = setup({ intervalMs: 1000 });
    const a = track(gc.submit([rec(1), rec(2)]));
    const b = track(gc.submit([rec(3)]));
    const c = track(gc.submit([rec(4)]));
    expect(store.calls).toHaveLength(0); // not synchronously: the rest of this turn may still join
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls).toHaveLength(1);
    expect(store.calls[0]!.map((r) => r.ts)).toEqual([1001, 1002, 1003, 1004]);
    expect(a.done && b.done && c.done).toBe(true);
    expect(a.value).toEqual({ readings: 2, batchReadings: 4, batch: { written: 4, duplicates: 0 } });
    expect(b.value?.readings).toBe(1);
    expect(gc.batches).toBe(1);
  });

  it('a busy writer batches: what arrives during a write goes as ONE batch the moment it completes, without a timer', async () => {
    const { store, gc } = setup({ intervalMs: 1000, maxInFlight: 1 });
    store.auto = false;
    const first = track(gc.submit([rec(1)]));
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls).toHaveLength(1);
    const later = [3, 4, 5].map((i) => track(gc.submit([rec(i)])));
    await vi.advanceTimersByTimeAsync(2);
    const last = track(gc.submit([rec(6)]));
    await vi.advanceTimersByTimeAsync(5);
    expect(store.calls).toHaveLength(1); // gathering while the write is under way
    expect(later.some((s) => s.done) || last.done).toBe(false);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(first.done).toBe(true);
    expect(store.calls).toHaveLength(2);
    expect(store.calls[1]!.map((r) => r.ts)).toEqual([1003, 1004, 1005, 1006]);
    expect(later.some((s) => s.done) || last.done).toBe(false); // not before their own write is durable
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(later.every((s) => s.done) && last.done).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a failed write rejects only its own batch; the batch gathered behind it is written and resolves', async () => {
    const { store, gc } = setup({ maxInFlight: 1 });
    store.auto = false;
    const err = new Error('disk full');
    const a = gc.submit([rec(1)]).then(() => 'ok', (e: unknown) => e);
    await vi.advanceTimersByTimeAsync(0);
    const b = gc.submit([rec(2)]).then(() => 'ok', (e: unknown) => e);
    store.fail(err);
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls).toHaveLength(2);
    store.complete();
    expect(await a).toBe(err);
    expect(await b).toBe('ok');
  });

  it('resolves nobody before the write is durable', async () => {
    const { store, gc } = setup();
    store.auto = false;
    const a = track(gc.submit([rec(1)]));
    await vi.advanceTimersByTimeAsync(10);
    expect(store.calls).toHaveLength(1);
    expect(a.done).toBe(false);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(a.done).toBe(true);
  });

  it('flushes immediately when commitMaxReadings is reached', async () => {
    const { store, gc } = setup({ maxReadings: 10, intervalMs: 1000 });
    const a = track(gc.submit([rec(1, 6)]));
    const b = track(gc.submit([rec(2, 4)]));
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls).toHaveLength(1);
    expect(a.done && b.done).toBe(true);
    expect(vi.getTimerCount()).toBe(0); // the batch timer was cancelled
  });

  it('keeps one writeBatch in flight; the next batch accumulates meanwhile and grows', async () => {
    const { store, gc } = setup();
    store.auto = false;
    const first = track(gc.submit([rec(1)]));
    await vi.advanceTimersByTimeAsync(4);
    expect(store.calls).toHaveLength(1);
    // The write is slow: messages keep arriving for 50 ms.
    const later: ReturnType<typeof track>[] = [];
    for (let i = 0; i < 50; i++) {
      later.push(track(gc.submit([rec(10 + i)])));
      await vi.advanceTimersByTimeAsync(1);
    }
    expect(store.calls).toHaveLength(1); // still only the first write
    expect(gc.pendingReadings).toBe(50);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(first.done).toBe(true);
    expect(store.calls).toHaveLength(2); // due batch written right after
    expect(store.calls[1]).toHaveLength(50);
    expect(later.some((s) => s.done)).toBe(false);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(later.every((s) => s.done && s.value)).toBe(true);
  });

  it('with maxInFlight 2, the next due batch goes to the store while one commits; a third waits', async () => {
    const { store, gc } = setup({ maxInFlight: 2 });
    store.auto = false;
    const a = track(gc.submit([rec(1)]));
    await vi.advanceTimersByTimeAsync(4);
    const b = track(gc.submit([rec(2)]));
    await vi.advanceTimersByTimeAsync(4);
    expect(store.calls).toHaveLength(2); // overlapping writes
    const c = track(gc.submit([rec(3)]));
    await vi.advanceTimersByTimeAsync(4);
    expect(store.calls).toHaveLength(2); // at most two in flight: c waits
    expect(gc.pendingReadings).toBe(1);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(a.done).toBe(true);
    expect(b.done).toBe(false);
    expect(store.calls).toHaveLength(3); // c goes as soon as a slot frees
    store.complete(); store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(b.done && c.done).toBe(true);
    await gc.flush();
  });

  it('with a write under way and a slot free, a batch goes when the write completes if that comes before commitIntervalMs', async () => {
    const { store, gc } = setup({ intervalMs: 10, maxInFlight: 2 });
    store.auto = false;
    gc.submit([rec(1)]);
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls).toHaveLength(1);
    const b = track(gc.submit([rec(2)])); // the 10 ms bound starts now
    await vi.advanceTimersByTimeAsync(2);
    expect(store.calls).toHaveLength(1);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls).toHaveLength(2); // at 2 ms, not 10
    expect(b.done).toBe(false);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(b.done).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('commitIntervalMs 0: each turn\'s batch goes while a slot is free; with all slots busy they gather until one completes', async () => {
    const { store, gc } = setup({ intervalMs: 0, maxInFlight: 3 });
    store.auto = false;
    const early = [1, 2, 3].map((i) => track(gc.submit([rec(i)])));
    await vi.advanceTimersByTimeAsync(0); // turn 1
    expect(store.calls).toHaveLength(1);
    const turn2 = track(gc.submit([rec(4)]));
    await vi.advanceTimersByTimeAsync(0);
    const turn3 = track(gc.submit([rec(5)]));
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls.map((c) => c.map((r) => r.ts))).toEqual([[1001, 1002, 1003], [1004], [1005]]);
    const waiting = [6, 7].map((i) => track(gc.submit([rec(i)])));
    await vi.advanceTimersByTimeAsync(5);
    expect(store.calls).toHaveLength(3); // all three slots busy: gathering
    expect(gc.pendingReadings).toBe(2);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(early.every((x) => x.done)).toBe(true);
    expect(turn2.done || turn3.done || waiting.some((x) => x.done)).toBe(false);
    expect(store.calls[3]!.map((r) => r.ts)).toEqual([1006, 1007]);
    store.complete(); store.complete(); store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(turn2.done && turn3.done && waiting.every((x) => x.done)).toBe(true);
  });

  it('never splits a submission; a large backlog beyond maxReadings is written in chunks of whole submissions', async () => {
    const { store, gc } = setup({ maxReadings: 10 });
    store.auto = false;
    const s = [gc.submit([rec(1, 4)]), gc.submit([rec(2, 4)]), gc.submit([rec(3, 4)]), gc.submit([rec(4, 25)]), gc.submit([rec(5, 1)])];
    const states = s.map(track);
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls.map(countReadings)).toEqual([12]); // 4+4+4 reaches 10
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls.map(countReadings)).toEqual([12, 25]);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls.map(countReadings)).toEqual([12, 25, 1]);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(states.every((x) => x.done)).toBe(true);
  });

  it('a failed write rejects every submitter of that batch (same error); the next batch still works', async () => {
    const { store, gc, warn } = setup();
    const err = Object.assign(new Error('queue full'), { code: 'KENG_ERR_QUEUE_FULL' });
    store.failWith = err;
    const a = gc.submit([rec(1)]);
    const b = gc.submit([rec(2)]);
    const both = Promise.allSettled([a, b]);
    await vi.advanceTimersByTimeAsync(4);
    const settled = await both;
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected']);
    expect(settled.map((s) => (s as PromiseRejectedResult).reason)).toEqual([err, err]);
    expect(warn).toHaveBeenCalledTimes(1); // one log line per batch
    store.failWith = null;
    const c = gc.submit([rec(3)]);
    await vi.advanceTimersByTimeAsync(4);
    await expect(c).resolves.toMatchObject({ readings: 1 });
  });

  it('a store that throws synchronously rejects the batch and does not wedge the committer', async () => {
    const { store, gc } = setup();
    store.throwSync = new Error('boom');
    const a = gc.submit([rec(1)]).catch((e: Error) => e.message);
    await vi.advanceTimersByTimeAsync(4);
    expect(await a).toBe('boom');
    store.throwSync = null;
    const b = gc.submit([rec(2)]);
    await vi.advanceTimersByTimeAsync(4);
    await expect(b).resolves.toMatchObject({ readings: 1 });
  });

  it('observes commit latency from the first submit of the batch to durable', async () => {
    const { store, gc, observe, setClock } = setup();
    store.auto = false;
    setClock(100);
    gc.submit([rec(1)]);
    setClock(102);
    gc.submit([rec(2)]);
    await vi.advanceTimersByTimeAsync(4);
    setClock(109);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(observe).toHaveBeenCalledWith(0.009);
  });

  it('flush() writes what is queued without waiting for the timer, and waits for the write in flight', async () => {
    const { store, gc } = setup({ intervalMs: 1000 });
    store.auto = false;
    const a = track(gc.submit([rec(1)]));
    const f = track(gc.flush());
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls).toHaveLength(1);
    expect(f.done).toBe(false);
    store.complete();
    await vi.advanceTimersByTimeAsync(0);
    expect(a.done && f.done).toBe(true);
    await gc.flush(); // nothing queued: returns at once
  });

  it('close() flushes, then refuses new submissions with KENG_ERR_NOT_READY; open() accepts again', async () => {
    const { store, gc } = setup({ intervalMs: 1000 });
    const a = gc.submit([rec(1)]);
    await gc.close();
    await expect(a).resolves.toMatchObject({ readings: 1 });
    expect(store.calls).toHaveLength(1);
    await expect(gc.submit([rec(2)])).rejects.toMatchObject({ code: 'KENG_ERR_NOT_READY' });
    gc.open();
    const b = gc.submit([rec(3)]);
    await vi.advanceTimersByTimeAsync(1000);
    await expect(b).resolves.toMatchObject({ readings: 1 });
  });

  it('flush() never rejects even when the write fails', async () => {
    const { store, gc } = setup();
    store.failWith = new Error('down');
    const a = gc.submit([rec(1)]).catch(() => 'rejected');
    await gc.flush();
    expect(await a).toBe('rejected');
  });

  it('commitIntervalMs 0 gathers what arrives in the same turn of the event loop', async () => {
    const { store, gc } = setup({ intervalMs: 0 });
    gc.submit([rec(1)]);
    gc.submit([rec(2)]);
    await vi.advanceTimersByTimeAsync(0);
    await vi.runAllTimersAsync();
    expect(store.calls).toHaveLength(1);
    expect(store.calls[0]).toHaveLength(2);
  });

  describe('commit spacing', () => {
    it('after a commit of several messages, the next starts spacingMs after it started, with all that gathered', async () => {
      const { store, gc } = setup({ intervalMs: 0, spacingMs: 3, fakeClock: true });
      store.auto = false;
      const first = [1, 2].map((i) => track(gc.submit([rec(i)])));
      await vi.advanceTimersByTimeAsync(0);
      expect(store.calls).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(1);
      const later = [3, 4].map((i) => track(gc.submit([rec(i)])));
      store.complete(); // 1 ms after the first commit started
      await vi.advanceTimersByTimeAsync(0);
      expect(first.every((s) => s.done)).toBe(true);
      expect(store.calls).toHaveLength(1); // held: the spacing has not passed
      const last = track(gc.submit([rec(5)]));
      await vi.advanceTimersByTimeAsync(1);
      expect(store.calls).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(1); // 3 ms after the first commit started
      expect(store.calls).toHaveLength(2);
      expect(store.calls[1]!.map((r) => r.ts)).toEqual([1003, 1004, 1005]);
      store.complete();
      await vi.advanceTimersByTimeAsync(0);
      expect(later.every((s) => s.done) && last.done).toBe(true);
    });

    it('after a commit of a single message nothing is held: a lone device\'s next message goes at the next turn', async () => {
      const { store, gc } = setup({ intervalMs: 0, spacingMs: 50, fakeClock: true });
      for (let i = 1; i <= 3; i++) {
        const a = track(gc.submit([rec(i)]));
        await vi.advanceTimersByTimeAsync(0);
        expect(a.done).toBe(true);
        expect(store.calls).toHaveLength(i);
      }
    });

    it('once the spacing has passed, an idle writer writes at the next turn', async () => {
      const { store, gc } = setup({ intervalMs: 0, spacingMs: 3, fakeClock: true });
      gc.submit([rec(1)]);
      gc.submit([rec(2)]);
      await vi.advanceTimersByTimeAsync(0);
      expect(store.calls).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(10);
      const a = track(gc.submit([rec(3)]));
      gc.submit([rec(4)]);
      await vi.advanceTimersByTimeAsync(0);
      expect(a.done).toBe(true);
      expect(store.calls).toHaveLength(2);
    });

    it('flush() does not wait for the spacing', async () => {
      const { store, gc } = setup({ intervalMs: 0, spacingMs: 1000, fakeClock: true });
      gc.submit([rec(1)]);
      gc.submit([rec(2)]);
      await vi.advanceTimersByTimeAsync(0);
      const a = track(gc.submit([rec(3)]));
      await gc.flush();
      expect(a.done).toBe(true);
      expect(store.calls).toHaveLength(2);
      expect(vi.getTimerCount()).toBe(0);
    });
  });
});

import { describe, expect, it } from 'vitest';
import { AckGroups } from '../../src/broker/ack-groups.js';

function deferred<T>(): { p: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void; let reject!: (e: unknown) => void;
  const p = new Promise<T>((res, rej) => { resolve = res; reject = rej; });
  return { p, resolve, reject };
}

describe('AckGroups', () => {
  it('completes every message of a shared promise once, in arrival order, and others by their own promise', async () => {
    const done: string[] = [];
    const g = new AckGroups<string, string>((w, r) => done.push(`${w}:${r}`), (w, e) => done.push(`${w}!${String(e)}`));
    const a = deferred<string>(); const b = deferred<string>();
    g.add(a.p, 'm1'); g.add(a.p, 'm2'); g.add(b.p, 'm3'); g.add(a.p, 'm4');
    b.reject('full');
    a.resolve('ok');
    await a.p; await new Promise((r) => setImmediate(r));
    // m4 came after m3 with another promise: its own group, still after m1 and m2.
    expect(done).toEqual(['m3!full', 'm1:ok', 'm2:ok', 'm4:ok']);
  });

  it('a message joining a promise whose group already settled is still completed', async () => {
    const done: string[] = [];
    const g = new AckGroups<string, number>((w, r) => done.push(`${w}:${r}`), () => undefined);
    const a = deferred<number>();
    g.add(a.p, 'm1');
    a.resolve(7);
    await new Promise((r) => setImmediate(r));
    g.add(a.p, 'late');
    await new Promise((r) => setImmediate(r));
    expect(done).toEqual(['m1:7', 'late:7']);
  });

  it('one failing completion does not strand the rest of its group', async () => {
    const done: string[] = [];
    const thrown: unknown[] = [];
    const onUncaught = (e: unknown): void => { thrown.push(e); };
    process.on('uncaughtException', onUncaught);
    try {
      const g = new AckGroups<string, number>((w) => { if (w === 'bad') throw new Error('boom'); done.push(w); }, () => undefined);
      const a = deferred<number>();
      g.add(a.p, 'm1'); g.add(a.p, 'bad'); g.add(a.p, 'm3');
      a.resolve(1);
      await new Promise((r) => setImmediate(r));
      expect(done).toEqual(['m1', 'm3']);
      expect(thrown.map((e) => (e as Error).message)).toEqual(['boom']);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });
});

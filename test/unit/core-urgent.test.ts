/** UrgentOutbound (core/urgent.ts): bookkeeping waits for urgent sends, never longer than its bound. */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { UrgentOutbound } from '../../src/core/urgent.js';

describe('UrgentOutbound', () => {
  beforeEach(() => { vi.useFakeTimers(); });
  afterEach(() => { vi.useRealTimers(); });

  const settled = async (p: Promise<unknown>): Promise<boolean> => {
    let done = false;
    void p.then(() => { done = true; });
    await vi.advanceTimersByTimeAsync(0);
    return done;
  };

  it('has nothing to wait for until something is held', () => {
    expect(new UrgentOutbound().waiting).toBeNull();
  });

  it('opens when every held piece of work has settled, failures included', async () => {
    const u = new UrgentOutbound(1000);
    let a!: () => void; let b!: (e: Error) => void;
    u.hold(new Promise<void>((r) => { a = r; }));
    u.hold(new Promise<void>((_r, rej) => { b = rej; }));
    const gate = u.waiting!;
    expect(gate).not.toBeNull();
    a();
    expect(await settled(gate)).toBe(false);
    b(new Error('publish failed'));
    expect(await settled(gate)).toBe(true);
    expect(u.waiting).toBeNull();
    expect(u.holds).toBe(2);
  });

  it('never holds longer than its bound, even if the work never settles', async () => {
    const u = new UrgentOutbound(1000);
    u.hold(new Promise<void>(() => {}));
    const gate = u.waiting!;
    await vi.advanceTimersByTimeAsync(999);
    expect(await settled(gate)).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(await settled(gate)).toBe(true);
    expect(u.waiting).toBeNull();
  });

  it('work of an earlier gate that settles late does not open a newer one', async () => {
    const u = new UrgentOutbound(1000);
    let late!: () => void;
    u.hold(new Promise<void>((r) => { late = r; }));
    await vi.advanceTimersByTimeAsync(1000); // bound reached: first gate open
    u.hold(new Promise<void>(() => {}));
    const second = u.waiting!;
    late();
    expect(await settled(second)).toBe(false);
    u.release();
    expect(await settled(second)).toBe(true);
  });
});

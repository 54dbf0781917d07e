import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../src/broker/rate-limit.js';
import { AbuseCounter, WarnGate } from '../../src/broker/abuse.js';

describe('TokenBucket as flow control (fake time)', () => {
  it('the burst passes at once, then each message waits its turn at the sustained rate', () => {
    const b = new TokenBucket(10, 5, 0);
    for (let i = 0; i < 5; i++) expect(b.reserve(0)).toBe(0);
    // Nothing is refused: the 6th, 7th, 8th message wait 100, 200, 300 ms (10/s).
    expect(b.reserve(0)).toBe(100);
    expect(b.reserve(0)).toBe(200);
    expect(b.reserve(0)).toBe(300);
  });

  it('time pays the debt back: a message at the right time does not wait', () => {
    const b = new TokenBucket(10, 5, 0);
    for (let i = 0; i < 8; i++) b.reserve(0); // 3 borrowed
    expect(b.reserve(300)).toBe(100); // 3 tokens refilled, debt 1 → 100 ms
    expect(b.reserve(1_400)).toBe(0);
  });

  it('a 2,000-message backlog at 50/s, burst 500: the last waits (2000-500)/50 s, never forever', () => {
    const b = new TokenBucket(50, 500, 0);
    let last = 0;
    for (let i = 0; i < 2_000; i++) last = b.reserve(0);
    expect(last).toBe(30_000);
  });

  it('paced at the rate, a device never waits; refills never above the burst', () => {
    const b = new TokenBucket(10, 5, 0);
    for (let t = 0; t < 10_000; t += 100) expect(b.reserve(t)).toBe(0);
    expect(b.isFull(20_000)).toBe(true);
    let free = 0;
    while (b.reserve(20_000) === 0) free++;
    expect(free).toBe(5);
  });

  it('reports full after refilling (its state can then be forgotten)', () => {
    const b = new TokenBucket(1, 2, 0);
    b.reserve(0); b.reserve(0); b.reserve(0);
    expect(b.isFull(2_000)).toBe(false); // 1 borrowed + 2 taken: 3 s to refill
    expect(b.isFull(3_000)).toBe(true);
  });

  it('does not go backwards with a clock that steps back', () => {
    const b = new TokenBucket(1, 1, 1000);
    expect(b.reserve(1000)).toBe(0);
    expect(b.reserve(500)).toBe(1000);
    expect(b.reserve(3000)).toBe(0);
  });
});

describe('AbuseCounter', () => {
  it('trips on more than limit refusals within 60 s', () => {
    const a = new AbuseCounter(3);
    expect(a.hit(0)).toBe(false);
    expect(a.hit(1)).toBe(false);
    expect(a.hit(2)).toBe(false);
    expect(a.hit(3)).toBe(true); // 4th within the window
  });

  it('does not trip when refusals are spread over more than 60 s', () => {
    const a = new AbuseCounter(3);
    for (let i = 0; i < 100; i++) expect(a.hit(i * 20_001)).toBe(false);
  });

  it('sliding window: old refusals fall out', () => {
    const a = new AbuseCounter(2);
    a.hit(0); a.hit(10);
    expect(a.hit(60_000)).toBe(false); // oldest (0) is 60 s old: outside
    expect(a.hit(60_001)).toBe(true); // 10, 60000, 60001 within 60 s
  });

  it('reset and idle', () => {
    const a = new AbuseCounter(1);
    expect(a.isIdle(0)).toBe(true);
    a.hit(0);
    expect(a.isIdle(59_999)).toBe(false);
    expect(a.isIdle(60_000)).toBe(true);
    expect(a.hit(1)).toBe(true);
    a.reset();
    expect(a.hit(2)).toBe(false);
  });
});

describe('WarnGate', () => {
  it('allows one per minute', () => {
    const g = new WarnGate(60_000);
    expect(g.allow(0)).toBe(true);
    expect(g.allow(59_999)).toBe(false);
    expect(g.allow(60_000)).toBe(true);
  });
});

import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../src/broker/rate-limit.js';
import { AbuseCounter, WarnGate } from '../../src/broker/abuse.js';

describe('TokenBucket', () => {
  it('allows the burst, then the sustained rate', () => {
    const b = new TokenBucket(10, 5, 0);
    for (let i = 0; i < 5; i++) expect(b.take(0)).toBe(true);
    expect(b.take(0)).toBe(false);
    expect(b.take(99)).toBe(false); // 0.99 token
    expect(b.take(100)).toBe(true); // 1 token after 100 ms at 10/s
    expect(b.take(100)).toBe(false);
    // one second refills 10 tokens but never above the burst
    let n = 0;
    while (b.take(10_000)) n++;
    expect(n).toBe(5);
  });

  it('reports full after refilling', () => {
    const b = new TokenBucket(1, 2, 0);
    b.take(0); b.take(0);
    expect(b.isFull(1000)).toBe(false);
    expect(b.isFull(2000)).toBe(true);
  });

  it('does not go backwards with a clock that steps back', () => {
    const b = new TokenBucket(1, 1, 1000);
    expect(b.take(1000)).toBe(true);
    expect(b.take(500)).toBe(false);
    expect(b.take(2000)).toBe(true);
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

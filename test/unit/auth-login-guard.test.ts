import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LoginGuard, delayAfter, DEFAULT_USER_LIMITS, type GuardVerdict } from '../../src/auth/login-guard.js';
import { fakeClock, tempStateDb, type TempDb } from './auth-db.js';

let db: TempDb;
let clock: ReturnType<typeof fakeClock>;
let guard: LoginGuard;
beforeEach(async () => {
  db = await tempStateDb();
  clock = fakeClock();
  guard = new LoginGuard({ state: db.state, clock });
});
afterEach(async () => { await db.close(); });

/** One failed attempt (as the login service does it); returns the verdict of begin(). */
function failOnce(user: string, ip: string): GuardVerdict {
  const v = guard.begin(user, ip);
  if (v.allowed) guard.fail(user);
  return v;
}

const waitMs = (v: GuardVerdict): number => (!v.allowed && !v.locked ? v.retryAfterMs : v.allowed ? 0 : Infinity);

describe('login guard', () => {
  it('delay grows 1, 2, 4, 8 … s per username, capped at 60 s', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => delayAfter(n, DEFAULT_USER_LIMITS)))
      .toEqual([1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
    const seen: number[] = [];
    for (let i = 1; i <= 6; i++) {
      expect(failOnce('lan', `10.0.0.${i}`).allowed).toBe(true); // a different IP each time: the username alone is limited
      const v = guard.check('lan', '10.0.1.1');
      expect(v.allowed).toBe(false);
      seen.push(waitMs(v));
      clock.advance(waitMs(v) - 1);
      expect(guard.check('lan', '10.0.1.1').allowed).toBe(false); // still 1 ms early
      clock.advance(1);
      expect(guard.check('lan', '10.0.1.1').allowed).toBe(true);
    }
    expect(seen).toEqual([1000, 2000, 4000, 8000, 16000, 32000]);
  });

  it('refuses early during the delay without counting the refused attempt', () => {
    failOnce('lan', '10.0.0.1');
    for (let i = 0; i < 20; i++) expect(guard.begin('lan', '10.0.0.2').allowed).toBe(false);
    clock.advance(1000);
    expect(guard.check('lan', '10.0.0.3')).toEqual({ allowed: true });
  });

  it('locks the username after 10 failures; the lock holds after the delay and across a restart; admin unlock clears it', async () => {
    for (let i = 1; i <= 10; i++) {
      expect(failOnce('lan', `10.0.${i}.1`).allowed).toBe(true);
      clock.advance(61_000);
    }
    expect(guard.check('lan', '10.9.9.9')).toEqual({ allowed: false, locked: true });
    expect(guard.lockedAt('lan')).not.toBeNull();
    clock.advance(7 * 24 * 3_600_000); // no expiry of a lock
    expect(guard.check('lan', '10.9.9.9')).toEqual({ allowed: false, locked: true });

    const reopened = new LoginGuard({ state: await db.reopen(), clock });
    expect(reopened.check('lan', '10.9.9.9')).toEqual({ allowed: false, locked: true });
    expect(reopened.unlock('lan')).toBe(true);
    expect(reopened.check('lan', '10.9.9.9')).toEqual({ allowed: true });
    expect(reopened.lockedAt('lan')).toBeNull();
  });

  it('treats unknown usernames exactly like real ones (no enumeration)', () => {
    for (let i = 1; i <= 10; i++) { failOnce('no-such-user', `10.1.${i}.1`); clock.advance(61_000); }
    expect(guard.check('no-such-user', '10.1.99.1')).toEqual({ allowed: false, locked: true });
  });

  it('a success resets the username counter', () => {
    for (let i = 1; i <= 5; i++) { failOnce('lan', `10.2.${i}.1`); clock.advance(20_000); }
    clock.advance(20_000);
    const v = guard.begin('lan', '10.2.9.1');
    expect(v.allowed).toBe(true);
    guard.succeed('lan', '10.2.9.1');
    expect(guard.check('lan', '10.2.9.2')).toEqual({ allowed: true });
    failOnce('lan', '10.2.9.3');
    expect(waitMs(guard.check('lan', '10.2.9.4'))).toBe(1000); // starts again from the first step
  });

  it('per IP: 3 free failures, then a growing delay across usernames (password spraying)', () => {
    const ip = '203.0.113.7';
    for (let i = 0; i < 3; i++) expect(failOnce(`user${i}`, ip).allowed).toBe(true);
    expect(guard.check('fresh-user', ip)).toEqual({ allowed: true });
    expect(failOnce('user3', ip).allowed).toBe(true); // 4th failure from this IP
    const v = guard.check('fresh-user', ip);
    expect(v).toMatchObject({ allowed: false, locked: false, by: 'ip', retryAfterMs: 1000 });
    expect(guard.check('fresh-user', '198.51.100.1')).toEqual({ allowed: true }); // another address is not held up
  });

  it('parallel attempts cannot slip extra guesses into one window (counted when they start)', () => {
    expect(guard.begin('lan', '10.3.0.1').allowed).toBe(true);
    expect(guard.begin('lan', '10.3.0.2').allowed).toBe(false); // first still in flight
  });

  it('counters start again after a quiet day (not a lock)', () => {
    for (let i = 1; i <= 9; i++) { failOnce('lan', `10.4.${i}.1`); clock.advance(61_000); }
    clock.advance(24 * 3_600_000 + 1);
    failOnce('lan', '10.4.99.1');
    expect(guard.check('lan', '10.4.99.2')).toMatchObject({ allowed: false, locked: false, retryAfterMs: 1000 });
    guard.prune();
  });
});

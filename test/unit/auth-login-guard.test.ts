/**
 * The login guard's arithmetic with a hand-moved clock: delays per account
 * and per address, temporary locks that grow and end by themselves, admin
 * unlock, known addresses, and the last-admin exemption. The attacks
 * themselves, over HTTP, are in test/component/auth-*.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LoginGuard, delayAfter, DEFAULT_USER_LIMITS, type GuardVerdict, type LoginGuardOptions } from '../../src/auth/login-guard.js';
import { fakeClock, tempStateDb, type TempDb } from './auth-db.js';

const MIN = 60_000;
let db: TempDb;
let clock: ReturnType<typeof fakeClock>;
let guard: LoginGuard;
const make = (o: Partial<LoginGuardOptions> = {}): LoginGuard => new LoginGuard({ state: db.state, clock, ...o });
beforeEach(async () => {
  db = await tempStateDb();
  clock = fakeClock();
  guard = make();
});
afterEach(async () => { await db.close(); });

/** One failed attempt (as the login service does it); returns the verdict of begin(). */
function failOnce(user: string, ip: string, g = guard): GuardVerdict {
  const v = g.begin(user, ip);
  if (v.allowed) g.fail(user, ip);
  return v;
}

/** One successful attempt. */
function succeedOnce(user: string, ip: string, g = guard): GuardVerdict {
  const v = g.begin(user, ip);
  if (v.allowed) g.succeed(user, ip);
  return v;
}

const waitMs = (v: GuardVerdict): number => (v.allowed ? 0 : v.retryAfterMs);

/** Ten failures, each after the previous delay, each from its own address (the account alone is limited). */
function lockByTen(user: string, g = guard, net = '10.0'): void {
  for (let i = 1; i <= 10; i++) {
    expect(failOnce(user, `${net}.${i}.1`, g).allowed).toBe(true);
    clock.advance(61_000);
  }
}

describe('login guard: delays', () => {
  it('grow 1, 2, 4, 8 … s per username, capped at 60 s', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => delayAfter(n, DEFAULT_USER_LIMITS)))
      .toEqual([1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
    const seen: number[] = [];
    for (let i = 1; i <= 6; i++) {
      expect(failOnce('lan', `10.0.0.${i}`).allowed).toBe(true);
      const v = guard.check('lan', '10.0.1.1');
      expect(v).toMatchObject({ allowed: false, locked: false, by: 'user' });
      seen.push(waitMs(v));
      clock.advance(waitMs(v) - 1);
      expect(guard.check('lan', '10.0.1.1').allowed).toBe(false); // still 1 ms early
      clock.advance(1);
      expect(guard.check('lan', '10.0.1.1').allowed).toBe(true);
    }
    expect(seen).toEqual([1000, 2000, 4000, 8000, 16000, 32000]);
  });

  it('refuse early during the delay without counting the refused attempt', () => {
    failOnce('lan', '10.0.0.1');
    for (let i = 0; i < 20; i++) expect(guard.begin('lan', '10.0.0.2').allowed).toBe(false);
    clock.advance(1000);
    expect(guard.check('lan', '10.0.0.3')).toEqual({ allowed: true });
  });

  it('per address: 5 free failures, then a growing delay across usernames; other addresses are not held up', () => {
    const ip = '203.0.113.7';
    for (let i = 0; i < 5; i++) expect(failOnce(`user${i}`, ip).allowed).toBe(true);
    expect(guard.check('fresh-user', ip)).toEqual({ allowed: true });
    expect(failOnce('user5', ip).allowed).toBe(true); // 6th failure from this address
    expect(guard.check('fresh-user', ip)).toMatchObject({ allowed: false, locked: false, by: 'ip', retryAfterMs: 1000 });
    expect(guard.check('fresh-user', '198.51.100.1')).toEqual({ allowed: true });
  });

  it('parallel attempts cannot slip extra guesses into one window (counted when they start)', () => {
    expect(guard.begin('lan', '10.3.0.1').allowed).toBe(true);
    expect(guard.begin('lan', '10.3.0.2').allowed).toBe(false); // first still in flight
  });

  it('a success resets the account; counters start again after a quiet day', () => {
    for (let i = 1; i <= 5; i++) { failOnce('lan', `10.2.${i}.1`); clock.advance(20_000); }
    clock.advance(20_000);
    expect(succeedOnce('lan', '10.2.9.1').allowed).toBe(true);
    expect(guard.check('lan', '10.2.9.2')).toEqual({ allowed: true });
    failOnce('lan', '10.2.9.3');
    expect(waitMs(guard.check('lan', '10.2.9.4'))).toBe(1000); // from the first step again

    for (let i = 1; i <= 8; i++) { failOnce('lan', `10.4.${i}.1`); clock.advance(61_000); }
    clock.advance(24 * 3_600_000 + 1);
    failOnce('lan', '10.4.99.1');
    expect(guard.check('lan', '10.4.99.2')).toMatchObject({ allowed: false, locked: false, retryAfterMs: 1000 });
    guard.prune();
  });
});

describe('login guard: temporary locks', () => {
  it('10 failures lock the account for 15 min, across a restart; then it opens by itself', async () => {
    lockByTen('lan');
    const locked = guard.check('lan', '10.9.9.9');
    expect(locked).toMatchObject({ allowed: false, locked: true });
    expect(waitMs(locked)).toBe(15 * MIN - 61_000); // the last failure was 61 s ago
    expect(guard.lockedUntil('lan')).not.toBeNull();

    const reopened = make({ state: await db.reopen() });
    expect(reopened.check('lan', '10.9.9.9')).toMatchObject({ allowed: false, locked: true });
    clock.advance(waitMs(locked));
    expect(reopened.check('lan', '10.9.9.9')).toEqual({ allowed: true });
    expect(reopened.lockedUntil('lan')).toBeNull();
    // The counter starts again after a lock: one failure costs the first step, not a new lock.
    failOnce('lan', '10.9.9.9', reopened);
    expect(reopened.check('lan', '10.9.9.8')).toMatchObject({ allowed: false, locked: false, retryAfterMs: 1000 });
  });

  it('each lock in a row lasts twice as long, up to the cap; a success ends the streak', () => {
    const seen: number[] = [];
    for (let n = 0; n < 8; n++) {
      lockByTen('lan', guard, `10.${n + 10}`);
      const v = guard.check('lan', '10.99.0.1');
      expect(v).toMatchObject({ locked: true });
      seen.push(Math.round((waitMs(v) + 61_000) / MIN));
      clock.advance(waitMs(v));
    }
    expect(seen).toEqual([15, 30, 60, 120, 240, 480, 960, 1440]);
    expect(succeedOnce('lan', '10.99.0.1').allowed).toBe(true);
    lockByTen('lan', guard, '10.30');
    expect(waitMs(guard.check('lan', '10.99.0.2')) + 61_000).toBe(15 * MIN);
  });

  it('an admin unlock ends it at once (also locks of single addresses)', () => {
    lockByTen('lan');
    expect(guard.unlock('lan')).toBe(true);
    expect(guard.check('lan', '10.9.9.9')).toEqual({ allowed: true });
    expect(guard.unlock('lan')).toBe(false);
  });

  it('treats unknown usernames exactly like real ones (no enumeration)', () => {
    lockByTen('no-such-user');
    expect(guard.check('no-such-user', '10.1.99.1')).toMatchObject({ allowed: false, locked: true, retryAfterMs: 15 * MIN - 61_000 });
  });
});

describe('login guard: not turned against users', () => {
  it('a known address (logged in from before) is not held up by failures from elsewhere, only by its own', () => {
    expect(succeedOnce('lan', '192.0.2.10').allowed).toBe(true);
    lockByTen('lan'); // an attacker, from ten addresses
    expect(guard.check('lan', '198.51.100.1')).toMatchObject({ locked: true }); // a new address: locked
    expect(guard.check('lan', '192.0.2.10')).toEqual({ allowed: true }); // the office computer: not
    // A new password (or a disabled account) forgets the known addresses: that one is locked like any other.
    guard.forgetKnownSources('lan');
    expect(guard.check('lan', '192.0.2.10')).toMatchObject({ locked: true });
    expect(succeedOnce('lan', '198.51.100.1').allowed).toBe(false);
    guard.unlock('lan');
    expect(succeedOnce('lan', '192.0.2.10').allowed).toBe(true);
    // Its own failures still count (someone at that address guessing): delay, then a lock of that address only.
    for (let i = 1; i <= 10; i++) { expect(failOnce('lan', '192.0.2.10').allowed).toBe(true); clock.advance(61_000); }
    expect(guard.check('lan', '192.0.2.10')).toMatchObject({ allowed: false, locked: true });
  });

  it('a known address is not held up by the address throttle others at that address caused', () => {
    expect(succeedOnce('lan', '192.0.2.20').allowed).toBe(true);
    for (let i = 0; i < 8; i++) failOnce(`someone${i}`, '192.0.2.20');
    expect(guard.check('fresh', '192.0.2.20')).toMatchObject({ allowed: false, by: 'ip' });
    expect(guard.check('lan', '192.0.2.20')).toEqual({ allowed: true });
  });

  it('the last usable admin is never locked for everyone: the failing address is, others are only slowed', () => {
    const g = make({ lockExempt: (u) => u === 'quan-tri' });
    for (let i = 1; i <= 10; i++) { expect(failOnce('quan-tri', '203.0.113.66', g).allowed).toBe(true); clock.advance(6 * MIN); }
    expect(g.check('quan-tri', '203.0.113.66')).toMatchObject({ allowed: false, locked: true });
    expect(g.lockedUntil('quan-tri')).toBeNull();
    const elsewhere = g.check('quan-tri', '198.51.100.7');
    expect(elsewhere.allowed).toBe(true); // 6 min after the last failure: past the 60 s account delay
    // An exempt account that had been locked earlier (another admin existed then) opens too.
    lockByTen('chi');
    expect(guard.check('chi', '10.8.8.8')).toMatchObject({ locked: true });
    expect(make({ lockExempt: (u) => u === 'chi' }).check('chi', '10.8.8.8')).toEqual({ allowed: true });
  });
});

/**
 * The login guard's arithmetic with a hand-moved clock: delays per account
 * and per address, temporary locks that grow and end by themselves, admin
 * unlock, known addresses, and the last-admin exemption. The attacks
 * themselves, over HTTP, are in test/component/auth-*.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LoginGuard, delayAfter, DEFAULT_USER_LIMITS, type GuardVerdict, type LoginGuardOptions } from '../../src/auth/login-guard.js';
import { stateSqlitePort } from '../../src/storage/state/index.js';
import { fakeClock, tempStateDb, type TempDb } from './auth-db.js';

const MIN = 60_000;
let db: TempDb;
let clock: ReturnType<typeof fakeClock>;
let guard: LoginGuard;
const make = (o: Partial<LoginGuardOptions> = {}): LoginGuard => new LoginGuard({ db: stateSqlitePort(db.state), clock, ...o });
beforeEach(async () => {
  db = await tempStateDb();
  clock = fakeClock();
  guard = make();
});
afterEach(async () => { await db.close(); });

/** One failed attempt (as the login service does it); returns the verdict of begin(). */
async function failOnce(user: string, ip: string, g = guard): Promise<GuardVerdict> {
  const v = await g.begin(user, ip);
  if (v.allowed) await g.fail(user, ip);
  return v;
}

/** One successful attempt. */
async function succeedOnce(user: string, ip: string, g = guard): Promise<GuardVerdict> {
  const v = await g.begin(user, ip);
  if (v.allowed) await g.succeed(user, ip);
  return v;
}

const waitMs = (v: GuardVerdict): number => (v.allowed ? 0 : v.retryAfterMs);

/** Ten failures, each after the previous delay, each from its own address (the account alone is limited). */
async function lockByTen(user: string, g = guard, net = '10.0'): Promise<void> {
  for (let i = 1; i <= 10; i++) {
    expect((await failOnce(user, `${net}.${i}.1`, g)).allowed).toBe(true);
    clock.advance(61_000);
  }
}

describe('login guard: delays', () => {
  it('grow 1, 2, 4, 8 … s per username, capped at 60 s', async () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => delayAfter(n, DEFAULT_USER_LIMITS)))
      .toEqual([1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
    const seen: number[] = [];
    for (let i = 1; i <= 6; i++) {
      expect((await failOnce('lan', `10.0.0.${i}`)).allowed).toBe(true);
      const v = await guard.check('lan', '10.0.1.1');
      expect(v).toMatchObject({ allowed: false, locked: false, by: 'user' });
      seen.push(waitMs(v));
      clock.advance(waitMs(v) - 1);
      expect((await guard.check('lan', '10.0.1.1')).allowed).toBe(false); // still 1 ms early
      clock.advance(1);
      expect((await guard.check('lan', '10.0.1.1')).allowed).toBe(true);
    }
    expect(seen).toEqual([1000, 2000, 4000, 8000, 16000, 32000]);
  });

  it('refuse early during the delay without counting the refused attempt', async () => {
    await failOnce('lan', '10.0.0.1');
    for (let i = 0; i < 20; i++) expect((await guard.begin('lan', '10.0.0.2')).allowed).toBe(false);
    clock.advance(1000);
    expect(await guard.check('lan', '10.0.0.3')).toEqual({ allowed: true });
  });

  it('per address: 5 free failures, then a growing delay across usernames; other addresses are not held up', async () => {
    const ip = '203.0.113.7';
    for (let i = 0; i < 5; i++) expect((await failOnce(`user${i}`, ip)).allowed).toBe(true);
    expect(await guard.check('fresh-user', ip)).toEqual({ allowed: true });
    expect((await failOnce('user5', ip)).allowed).toBe(true); // 6th failure from this address
    expect(await guard.check('fresh-user', ip)).toMatchObject({ allowed: false, locked: false, by: 'ip', retryAfterMs: 1000 });
    expect(await guard.check('fresh-user', '198.51.100.1')).toEqual({ allowed: true });
  });

  it('parallel attempts cannot slip extra guesses into one window (counted when they start)', async () => {
    expect((await guard.begin('lan', '10.3.0.1')).allowed).toBe(true);
    expect((await guard.begin('lan', '10.3.0.2')).allowed).toBe(false); // first still in flight
  });

  it('a success resets the account; counters start again after a quiet day', async () => {
    for (let i = 1; i <= 5; i++) { await failOnce('lan', `10.2.${i}.1`); clock.advance(20_000); }
    clock.advance(20_000);
    expect((await succeedOnce('lan', '10.2.9.1')).allowed).toBe(true);
    expect(await guard.check('lan', '10.2.9.2')).toEqual({ allowed: true });
    await failOnce('lan', '10.2.9.3');
    expect(waitMs(await guard.check('lan', '10.2.9.4'))).toBe(1000); // from the first step again

    for (let i = 1; i <= 8; i++) { await failOnce('lan', `10.4.${i}.1`); clock.advance(61_000); }
    clock.advance(24 * 3_600_000 + 1);
    await failOnce('lan', '10.4.99.1');
    expect(await guard.check('lan', '10.4.99.2')).toMatchObject({ allowed: false, locked: false, retryAfterMs: 1000 });
    await guard.prune();
  });
});

describe('login guard: temporary locks', () => {
  it('10 failures lock the account for 15 min, across a restart; then it opens by itself', async () => {
    await lockByTen('lan');
    const locked = await guard.check('lan', '10.9.9.9');
    expect(locked).toMatchObject({ allowed: false, locked: true });
    expect(waitMs(locked)).toBe(15 * MIN - 61_000); // the last failure was 61 s ago
    expect(await guard.lockedUntil('lan')).not.toBeNull();

    const reopened = make({ db: stateSqlitePort(await db.reopen()) });
    expect(await reopened.check('lan', '10.9.9.9')).toMatchObject({ allowed: false, locked: true });
    clock.advance(waitMs(locked));
    expect(await reopened.check('lan', '10.9.9.9')).toEqual({ allowed: true });
    expect(await reopened.lockedUntil('lan')).toBeNull();
    // The counter starts again after a lock: one failure costs the first step, not a new lock.
    await failOnce('lan', '10.9.9.9', reopened);
    expect(await reopened.check('lan', '10.9.9.8')).toMatchObject({ allowed: false, locked: false, retryAfterMs: 1000 });
  });

  it('each lock in a row lasts twice as long, up to the cap; a success ends the streak', async () => {
    const seen: number[] = [];
    for (let n = 0; n < 8; n++) {
      await lockByTen('lan', guard, `10.${n + 10}`);
      const v = await guard.check('lan', '10.99.0.1');
      expect(v).toMatchObject({ locked: true });
      seen.push(Math.round((waitMs(v) + 61_000) / MIN));
      clock.advance(waitMs(v));
    }
    expect(seen).toEqual([15, 30, 60, 120, 240, 480, 960, 1440]);
    expect((await succeedOnce('lan', '10.99.0.1')).allowed).toBe(true);
    await lockByTen('lan', guard, '10.30');
    expect(waitMs(await guard.check('lan', '10.99.0.2')) + 61_000).toBe(15 * MIN);
  });

  it('an admin unlock ends it at once (also locks of single addresses)', async () => {
    await lockByTen('lan');
    expect(await guard.unlock('lan')).toBe(true);
    expect(await guard.check('lan', '10.9.9.9')).toEqual({ allowed: true });
    expect(await guard.unlock('lan')).toBe(false);
  });

  it('treats unknown usernames exactly like real ones (no enumeration)', async () => {
    await lockByTen('no-such-user');
    expect(await guard.check('no-such-user', '10.1.99.1')).toMatchObject({ allowed: false, locked: true, retryAfterMs: 15 * MIN - 61_000 });
  });
});

describe('login guard: not turned against users', () => {
  it('a known address (logged in from before) is not held up by failures from elsewhere, only by its own', async () => {
    expect((await succeedOnce('lan', '192.0.2.10')).allowed).toBe(true);
    await lockByTen('lan'); // an attacker, from ten addresses
    expect(await guard.check('lan', '198.51.100.1')).toMatchObject({ locked: true }); // a new address: locked
    expect(await guard.check('lan', '192.0.2.10')).toEqual({ allowed: true }); // the office computer: not
    // A new password (or a disabled account) forgets the known addresses: that one is locked like any other.
    await guard.forgetKnownSources('lan');
    expect(await guard.check('lan', '192.0.2.10')).toMatchObject({ locked: true });
    expect((await succeedOnce('lan', '198.51.100.1')).allowed).toBe(false);
    await guard.unlock('lan');
    expect((await succeedOnce('lan', '192.0.2.10')).allowed).toBe(true);
    // Its own failures still count (someone at that address guessing): delay, then a lock of that address only.
    for (let i = 1; i <= 10; i++) { expect((await failOnce('lan', '192.0.2.10')).allowed).toBe(true); clock.advance(61_000); }
    expect(await guard.check('lan', '192.0.2.10')).toMatchObject({ allowed: false, locked: true });
  });

  it('a known address is not held up by the address throttle others at that address caused', async () => {
    expect((await succeedOnce('lan', '192.0.2.20')).allowed).toBe(true);
    for (let i = 0; i < 8; i++) await failOnce(`someone${i}`, '192.0.2.20');
    expect(await guard.check('fresh', '192.0.2.20')).toMatchObject({ allowed: false, by: 'ip' });
    expect(await guard.check('lan', '192.0.2.20')).toEqual({ allowed: true });
  });

  it('the last usable admin is never locked for everyone: the failing address is, others are only slowed', async () => {
    const g = make({ lockExempt: (u) => u === 'quan-tri' });
    for (let i = 1; i <= 10; i++) { expect((await failOnce('quan-tri', '203.0.113.66', g)).allowed).toBe(true); clock.advance(6 * MIN); }
    expect(await g.check('quan-tri', '203.0.113.66')).toMatchObject({ allowed: false, locked: true });
    expect(await g.lockedUntil('quan-tri')).toBeNull();
    const elsewhere = await g.check('quan-tri', '198.51.100.7');
    expect(elsewhere.allowed).toBe(true); // 6 min after the last failure: past the 60 s account delay
    // An exempt account that had been locked earlier (another admin existed then) opens too.
    await lockByTen('chi');
    expect(await guard.check('chi', '10.8.8.8')).toMatchObject({ locked: true });
    expect(await make({ lockExempt: (u) => u === 'chi' }).check('chi', '10.8.8.8')).toEqual({ allowed: true });
  });
});

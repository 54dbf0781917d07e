/**
 * Brute-force protection for POST /api/v1/auth/login (and the current
 * password of a self-service change), built so that it cannot be turned
 * against the users it protects (docs/roles.md, "Logging in"):
 *
 *  - Per address (`ip`, the address fastify reports: http.trustProxy): the
 *    first `free` failures cost nothing (an office shares one address), then
 *    each attempt waits 1, 2, 4 … s up to 5 min, whatever username it tries
 *    (429 + Retry-After). One address cycling through usernames is stopped
 *    after a handful: it cannot lock everyone.
 *  - Per account (`user`): each failure delays the next attempt on that
 *    username by 1, 2, 4 … 60 s; after `lockAfter` failures in a row the
 *    account is locked for `lockMs` (423 + Retry-After), twice as long for
 *    each lock in a row up to `lockMaxMs`. The lock ends by time, or earlier
 *    when an admin unlocks (API, `keng users unlock`).
 *  - Per account from one address (`pair`): counted the same way and locked
 *    the same way, for that address only.
 *  - Known addresses: an address the user logged in from successfully in the
 *    last `knownSourceMs` is not held up by the account's delay, lock or the
 *    address throttle that others' failures caused; only by its own failures
 *    on the account (the pair). So an attacker elsewhere cannot lock a user
 *    out of the office computer it always uses.
 *  - The last admin (`lockExempt`, decided by Users): an account whose lock
 *    would leave no usable admin account is never locked for everyone; only
 *    the addresses that failed on it are locked (pair). The admin token and
 *    the CLI never go through this guard.
 *
 * Unknown usernames are tracked exactly like real ones (same delays, same
 * locks, same replies), so replies do not reveal which usernames exist.
 *
 * An attempt is counted as a failure when it STARTS (`begin`) and forgiven
 * when the password proves right (`succeed`), so parallel requests cannot slip
 * extra guesses into one delay window. After a lock ends the account's counter
 * starts again from zero (the lock count stays); counters quiet for
 * `resetAfterMs` are forgotten, lock count included.
 *
 * State in the state store (guard-rows.ts), so a restart resets nothing.
 */
import type { Clock } from '../core/clock.js';
import { GuardRows, ipKey, pairKey, userKey, type GuardKey } from './guard-rows.js';
import type { StateSource } from './store.js';

export interface GuardLimits {
  /** Failures that cost no delay. */
  free: number;
  baseMs: number;
  capMs: number;
  /** Quiet time after which the counter (and the lock count) starts from zero. */
  resetAfterMs: number;
}

export interface LoginGuardOptions {
  state: StateSource;
  clock: Clock;
  user?: Partial<GuardLimits>;
  ip?: Partial<GuardLimits>;
  /** One username from one address (default: as `user`). */
  pair?: Partial<GuardLimits>;
  /** Failures in a row that lock an account, or an address for one account (default 10). */
  lockAfter?: number;
  /** First lock (default 15 min); each lock in a row lasts twice as long, up to lockMaxMs (default 24 h). */
  lockMs?: number;
  lockMaxMs?: number;
  /** How long a successful login makes its address a known one for the user (default 30 days; 0 = never). */
  knownSourceMs?: number;
  /** Accounts that must never be locked for everyone (the last usable admin). */
  lockExempt?: (username: string) => boolean;
}

export const DEFAULT_USER_LIMITS: GuardLimits = { free: 0, baseMs: 1000, capMs: 60_000, resetAfterMs: 24 * 3_600_000 };
export const DEFAULT_IP_LIMITS: GuardLimits = { free: 5, baseMs: 1000, capMs: 300_000, resetAfterMs: 3_600_000 };
export const DEFAULT_LOCK_AFTER = 10;
export const DEFAULT_LOCK_MS = 15 * 60_000;
export const DEFAULT_LOCK_MAX_MS = 24 * 3_600_000;
export const DEFAULT_KNOWN_SOURCE_MS = 30 * 24 * 3_600_000;

export type GuardVerdict =
  | { allowed: true }
  | { allowed: false; locked: true; retryAfterMs: number }
  | { allowed: false; locked: false; retryAfterMs: number; by: 'user' | 'ip' | 'pair' };

/** A lock set by fail(): for everyone ('account') or for the failing address only ('address'). */
export interface NewLock { scope: 'account' | 'address'; until: number }

/** A counter as it stands at some instant. */
interface View { failures: number; lastFailureAt: number; locked: boolean; lockedAt: number | null; lockedUntil: number | null; locks: number }

/** Delay owed after `failures` failures (0 while within the free allowance). */
export function delayAfter(failures: number, l: GuardLimits): number {
  const n = failures - l.free;
  if (n <= 0) return 0;
  return Math.min(l.capMs, l.baseMs * 2 ** Math.min(n - 1, 30));
}

export class LoginGuard {
  readonly userLimits: GuardLimits;
  readonly ipLimits: GuardLimits;
  readonly pairLimits: GuardLimits;
  readonly lockAfter: number;
  readonly lockMs: number;
  readonly lockMaxMs: number;
  readonly knownSourceMs: number;
  private readonly rows: GuardRows;
  private readonly state: StateSource;
  private readonly clock: Clock;
  private readonly exempt: (username: string) => boolean;

  constructor(opts: LoginGuardOptions) {
    this.state = opts.state;
    this.clock = opts.clock;
    this.rows = new GuardRows(opts.state);
    this.userLimits = { ...DEFAULT_USER_LIMITS, ...opts.user };
    this.ipLimits = { ...DEFAULT_IP_LIMITS, ...opts.ip };
    this.pairLimits = { ...this.userLimits, ...opts.pair };
    this.lockAfter = opts.lockAfter ?? DEFAULT_LOCK_AFTER;
    this.lockMs = opts.lockMs ?? DEFAULT_LOCK_MS;
    this.lockMaxMs = Math.max(this.lockMs, opts.lockMaxMs ?? DEFAULT_LOCK_MAX_MS);
    this.knownSourceMs = opts.knownSourceMs ?? DEFAULT_KNOWN_SOURCE_MS;
    this.exempt = opts.lockExempt ?? (() => false);
  }

  /** May an attempt for (username, ip) go ahead now? Read-only. */
  check(username: string, ip: string): GuardVerdict {
    const now = this.clock.now();
    const pair = this.view(pairKey(username, ip), now);
    if (pair?.locked) return { allowed: false, locked: true, retryAfterMs: pair.lockedUntil! - now };
    if (this.isKnown(username, ip, now)) return this.verdict([['pair', this.wait(pair, this.pairLimits, now)]]);
    const user = this.view(userKey(username), now);
    // Exemption is decided when the lock is read too: an admin locked while another could still log in
    // is let through once that other one is gone (disabled, deleted, locked).
    if (user?.locked && !this.exempt(username)) return { allowed: false, locked: true, retryAfterMs: user.lockedUntil! - now };
    return this.verdict([['user', this.wait(user, this.userLimits, now)], ['ip', this.wait(this.view(ipKey(ip), now), this.ipLimits, now)]]);
  }

  /**
   * check() and, when allowed, count the attempt as a failure right away
   * (atomically). Call succeed() when the password proves right, fail() otherwise.
   */
  begin(username: string, ip: string): GuardVerdict {
    const tx = this.state.db.transaction((): GuardVerdict => {
      const v = this.check(username, ip);
      if (!v.allowed) return v;
      const now = this.clock.now();
      for (const k of [userKey(username), ipKey(ip), pairKey(username, ip)]) this.bump(k, now);
      return v;
    });
    return tx.immediate();
  }

  /** The attempt failed (already counted by begin): lock at the threshold. */
  fail(username: string, ip: string): { failures: number; locked: NewLock | null } {
    const tx = this.state.db.transaction(() => {
      const now = this.clock.now();
      const user = this.view(userKey(username), now);
      const pair = this.view(pairKey(username, ip), now);
      let locked: NewLock | null = null;
      if (user && !user.locked && user.failures >= this.lockAfter && !this.exempt(username)) {
        locked = { scope: 'account', until: this.lock(userKey(username), user, now) };
      }
      if (pair && !pair.locked && pair.failures >= this.lockAfter) {
        const until = this.lock(pairKey(username, ip), pair, now);
        locked ??= { scope: 'address', until };
      }
      return { failures: user?.failures ?? 0, locked };
    });
    return tx.immediate();
  }

  /** The password was right: forget the account's failures, forgive this attempt on the address, remember the address. */
  succeed(username: string, ip: string): void {
    const tx = this.state.db.transaction(() => {
      const now = this.clock.now();
      // A lock still running stays (it ends by time or by an admin): it was earned by someone else's guesses.
      this.rows.deleteUnlessLocked(userKey(username), now);
      this.rows.deleteUnlessLocked(pairKey(username, ip), now);
      this.rows.forgiveOne(ip);
      if (this.knownSourceMs > 0) this.rows.markKnown(username, ip, now);
    });
    tx.immediate();
  }

  /** The account's lock for everyone while it runs: since when and until when (ms); else null. */
  accountLock(username: string): { lockedAt: number; lockedUntil: number } | null {
    const v = this.view(userKey(username), this.clock.now());
    return v?.locked ? { lockedAt: v.lockedAt ?? v.lockedUntil!, lockedUntil: v.lockedUntil! } : null;
  }

  /** When the account was locked for everyone (ms), while that lock runs; else null. */
  lockedAt(username: string): number | null {
    return this.accountLock(username)?.lockedAt ?? null;
  }

  /** When the account's lock for everyone ends (ms), while it runs; else null. */
  lockedUntil(username: string): number | null {
    return this.accountLock(username)?.lockedUntil ?? null;
  }

  /** Running account locks (for listings). */
  lockedMap(): Map<string, { lockedAt: number; lockedUntil: number }> {
    return this.rows.accountLocks(this.clock.now());
  }

  /** Admin unlock: clears the account's counters and locks, for everyone and per address. Returns whether a lock was running. */
  unlock(username: string): boolean {
    const tx = this.state.db.transaction(() => {
      const was = this.rows.anyLock(username, this.clock.now());
      this.rows.deleteUser(username);
      return was;
    });
    return tx.immediate();
  }

  /**
   * Forget the addresses the user logged in from (new password, account disabled): whoever got in
   * with the old password must not keep the known-address leniency.
   */
  forgetKnownSources(username: string): void {
    this.rows.forgetKnown(username);
  }

  /** Drop every trace of a username (user created or deleted). */
  forget(username: string): void {
    this.rows.deleteUser(username);
    this.rows.forgetKnown(username);
  }

  /** Remove counters that have expired (cheap housekeeping; called on each failure). */
  prune(): void {
    const now = this.clock.now();
    this.rows.prune('user', now, now - this.userLimits.resetAfterMs);
    this.rows.prune('pair', now, now - this.pairLimits.resetAfterMs);
    this.rows.prune('ip', now, now - this.ipLimits.resetAfterMs);
    this.rows.pruneKnown(now - this.knownSourceMs);
  }

  private isKnown(username: string, ip: string, now: number): boolean {
    return this.knownSourceMs > 0 && this.rows.isKnown(username, ip, now - this.knownSourceMs);
  }

  private limitsOf(k: GuardKey): GuardLimits {
    return k.kind === 'user' ? this.userLimits : k.kind === 'ip' ? this.ipLimits : this.pairLimits;
  }

  /** The counter as it stands at `now`: null when forgotten (quiet long enough); zero failures after a lock that ended. */
  private view(k: GuardKey, now: number): View | null {
    const r = this.rows.get(k);
    if (!r) return null;
    if (r.lockedUntil !== null && r.lockedUntil > now) {
      return { failures: r.failures, lastFailureAt: r.lastFailureAt, locked: true, lockedAt: r.lockedAt, lockedUntil: r.lockedUntil, locks: r.locks };
    }
    if (now - Math.max(r.lastFailureAt, r.lockedUntil ?? 0) > this.limitsOf(k).resetAfterMs) return null;
    return { failures: r.lockedUntil !== null ? 0 : r.failures, lastFailureAt: r.lastFailureAt, locked: false, lockedAt: null, lockedUntil: null, locks: r.locks };
  }

  private wait(v: View | null, l: GuardLimits, now: number): number {
    return v && v.failures > 0 ? v.lastFailureAt + delayAfter(v.failures, l) - now : 0;
  }

  private verdict(waits: Array<['user' | 'ip' | 'pair', number]>): GuardVerdict {
    const [by, ms] = waits.reduce((a, b) => (b[1] > a[1] ? b : a));
    return ms > 0 ? { allowed: false, locked: false, retryAfterMs: ms, by } : { allowed: true };
  }

  private bump(k: GuardKey, now: number): void {
    const v = this.view(k, now);
    // A running lock stays (failures of a known address, or of the last admin, still count on the account).
    this.rows.put(k, {
      failures: (v?.failures ?? 0) + 1, lastFailureAt: now,
      lockedAt: v?.locked ? v.lockedAt : null, lockedUntil: v?.locked ? v.lockedUntil : null, locks: v?.locks ?? 0,
    });
  }

  /** Lock the counter's key; returns when the lock ends. */
  private lock(k: GuardKey, v: View, now: number): number {
    const until = now + Math.min(this.lockMaxMs, this.lockMs * 2 ** Math.min(v.locks, 30));
    this.rows.put(k, { failures: v.failures, lastFailureAt: v.lastFailureAt, lockedAt: now, lockedUntil: until, locks: v.locks + 1 });
    return until;
  }
}

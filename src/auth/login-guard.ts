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
 * State in the state store (guard-rows.ts), so a restart resets nothing, and
 * in cluster mode (PostgreSQL) every node counts on the same rows: a failure
 * counted on one node counts on all, and concurrent attempts on two nodes are
 * decided one after the other (counters change by compare-and-set; an attempt
 * that loses the race is decided again on the winner's count).
 */
import type { Clock } from '../core/clock.js';
import type { Db } from '../storage/sql/index.js';
import { GuardConflict, GuardRows, ipKey, pairKey, userKey, type GuardKey, type GuardRow } from './guard-rows.js';
import type { Querier } from './store.js';

export interface GuardLimits {
  /** Failures that cost no delay. */
  free: number;
  baseMs: number;
  capMs: number;
  /** Quiet time after which the counter (and the lock count) starts from zero. */
  resetAfterMs: number;
}

export interface LoginGuardOptions {
  db: Db<unknown>;
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
  /**
   * Accounts that must never be locked for everyone (the last usable admin). Called inside the guard's
   * transaction: read through `q` only.
   */
  lockExempt?: (username: string, q: Querier) => boolean | Promise<boolean>;
}

export const DEFAULT_USER_LIMITS: GuardLimits = { free: 0, baseMs: 1000, capMs: 60_000, resetAfterMs: 24 * 3_600_000 };
export const DEFAULT_IP_LIMITS: GuardLimits = { free: 5, baseMs: 1000, capMs: 300_000, resetAfterMs: 3_600_000 };
export const DEFAULT_LOCK_AFTER = 10;
export const DEFAULT_LOCK_MS = 15 * 60_000;
export const DEFAULT_LOCK_MAX_MS = 24 * 3_600_000;
export const DEFAULT_KNOWN_SOURCE_MS = 30 * 24 * 3_600_000;
/**
 * Decisions tried again after losing a race on PostgreSQL before the attempt is refused
 * (429, retry after 1 s): many nodes hammering one address's counter at once.
 */
const MAX_TRIES = 20;
/** PostgreSQL: deadlock_detected, serialization_failure (another node's transaction won; decide again). */
const RETRYABLE_PG = new Set(['40P01', '40001']);

export type GuardVerdict =
  | { allowed: true }
  | { allowed: false; locked: true; retryAfterMs: number }
  | { allowed: false; locked: false; retryAfterMs: number; by: 'user' | 'ip' | 'pair' };

/** A lock set by fail(): for everyone ('account') or for the failing address only ('address'). */
export interface NewLock { scope: 'account' | 'address'; until: number }

/** A counter as it stands at some instant. */
interface View { failures: number; lastFailureAt: number; locked: boolean; lockedAt: number | null; lockedUntil: number | null; locks: number }

/** A counter as read (the row, for the swap) and as it stands now. */
interface Read { key: GuardKey; row: GuardRow | null; view: View | null }

/** Delay owed after `failures` failures (0 while within the free allowance). */
export function delayAfter(failures: number, l: GuardLimits): number {
  const n = failures - l.free;
  if (n <= 0) return 0;
  return Math.min(l.capMs, l.baseMs * 2 ** Math.min(n - 1, 30));
}

function retryable(err: unknown): boolean {
  return err instanceof GuardConflict || RETRYABLE_PG.has((err as { code?: string } | null)?.code ?? '');
}

export class LoginGuard {
  readonly userLimits: GuardLimits;
  readonly ipLimits: GuardLimits;
  readonly pairLimits: GuardLimits;
  readonly lockAfter: number;
  readonly lockMs: number;
  readonly lockMaxMs: number;
  readonly knownSourceMs: number;
  private readonly rows = new GuardRows();
  private readonly db: Db<unknown>;
  private readonly clock: Clock;
  private readonly exempt: (username: string, q: Querier) => boolean | Promise<boolean>;

  constructor(opts: LoginGuardOptions) {
    this.db = opts.db;
    this.clock = opts.clock;
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
  async check(username: string, ip: string, q: Querier = this.db.kysely): Promise<GuardVerdict> {
    return (await this.decide(q, username, ip, this.clock.now())).verdict;
  }

  /**
   * check() and, when allowed, count the attempt as a failure right away
   * (atomically). Call succeed() when the password proves right, fail() otherwise.
   */
  async begin(username: string, ip: string): Promise<GuardVerdict> {
    try {
      return await this.retrying(() => this.db.write(async (trx): Promise<GuardVerdict> => {
        const now = this.clock.now();
        const { verdict, reads } = await this.decide(trx, username, ip, now);
        if (!verdict.allowed) return verdict;
        for (const r of reads) await this.bump(trx, r, now);
        return verdict;
      }));
    } catch (err) {
      // Lost the race MAX_TRIES times: refuse (fail closed) rather than let an attempt through uncounted.
      if (err instanceof GuardConflict) return { allowed: false, locked: false, retryAfterMs: 1000, by: 'ip' };
      throw err;
    }
  }

  /** The attempt failed (already counted by begin): lock at the threshold. */
  fail(username: string, ip: string): Promise<{ failures: number; locked: NewLock | null }> {
    return this.retrying(() => this.db.write(async (trx) => {
      const now = this.clock.now();
      const user = await this.read(trx, userKey(username), now);
      const pair = await this.read(trx, pairKey(username, ip), now);
      let locked: NewLock | null = null;
      const u = user.view;
      if (u && !u.locked && u.failures >= this.lockAfter && !(await this.exempt(username, trx))) {
        locked = { scope: 'account', until: await this.lock(trx, user, u, now) };
      }
      const p = pair.view;
      if (p && !p.locked && p.failures >= this.lockAfter) {
        const until = await this.lock(trx, pair, p, now);
        locked ??= { scope: 'address', until };
      }
      return { failures: u?.failures ?? 0, locked };
    }));
  }

  /** The password was right: forget the account's failures, forgive this attempt on the address, remember the address. */
  async succeed(username: string, ip: string): Promise<void> {
    await this.db.write(async (trx) => {
      const now = this.clock.now();
      // A lock still running stays (it ends by time or by an admin): it was earned by someone else's guesses.
      // Same order as begin() (user, ip, pair): two nodes' transactions on PostgreSQL then never wait on each other in a cycle.
      await this.rows.deleteUnlessLocked(trx, userKey(username), now);
      await this.rows.forgiveOne(trx, ip);
      await this.rows.deleteUnlessLocked(trx, pairKey(username, ip), now);
      if (this.knownSourceMs > 0) await this.rows.markKnown(trx, username, ip, now);
    });
  }

  /** The account's lock for everyone while it runs: since when and until when (ms); else null. */
  async accountLock(username: string, q: Querier = this.db.kysely): Promise<{ lockedAt: number; lockedUntil: number } | null> {
    const v = (await this.read(q, userKey(username), this.clock.now())).view;
    return v?.locked ? { lockedAt: v.lockedAt ?? v.lockedUntil!, lockedUntil: v.lockedUntil! } : null;
  }

  /** When the account was locked for everyone (ms), while that lock runs; else null. */
  async lockedAt(username: string): Promise<number | null> {
    return (await this.accountLock(username))?.lockedAt ?? null;
  }

  /** When the account's lock for everyone ends (ms), while it runs; else null. */
  async lockedUntil(username: string): Promise<number | null> {
    return (await this.accountLock(username))?.lockedUntil ?? null;
  }

  /** Running account locks (for listings). */
  lockedMap(q: Querier = this.db.kysely): Promise<Map<string, { lockedAt: number; lockedUntil: number }>> {
    return this.rows.accountLocks(q, this.clock.now());
  }

  /**
   * Admin unlock: clears the account's counters and locks, for everyone and per address. Returns whether a
   * lock was running. With `trx`, inside the caller's write (Users.unlock, with its audit entry).
   */
  async unlock(username: string, trx?: Querier): Promise<boolean> {
    const run = async (t: Querier): Promise<boolean> => {
      const was = await this.rows.anyLock(t, username, this.clock.now());
      await this.rows.deleteUser(t, username);
      return was;
    };
    return trx ? run(trx) : this.retrying(() => this.db.write(run));
  }

  /**
   * Forget the addresses the user logged in from (new password, account disabled): whoever got in
   * with the old password must not keep the known-address leniency. With `trx`, inside the caller's write.
   */
  forgetKnownSources(username: string, trx?: Querier): Promise<void> {
    return trx ? this.rows.forgetKnown(trx, username) : this.db.write((t) => this.rows.forgetKnown(t, username));
  }

  /** Drop every trace of a username (user created or deleted). Inside the caller's write. */
  async forget(username: string, trx: Querier): Promise<void> {
    await this.rows.deleteUser(trx, username);
    await this.rows.forgetKnown(trx, username);
  }

  /** Remove counters that have expired (cheap housekeeping; called on each failure). */
  async prune(): Promise<void> {
    await this.db.write(async (trx) => {
      const now = this.clock.now();
      await this.rows.prune(trx, 'user', now, now - this.userLimits.resetAfterMs);
      await this.rows.prune(trx, 'pair', now, now - this.pairLimits.resetAfterMs);
      await this.rows.prune(trx, 'ip', now, now - this.ipLimits.resetAfterMs);
      await this.rows.pruneKnown(trx, now - this.knownSourceMs);
    });
  }

  /** The verdict for (username, ip) at `now`, and the counters an allowed attempt bumps (user, ip, pair: always in this order). */
  private async decide(q: Querier, username: string, ip: string, now: number): Promise<{ verdict: GuardVerdict; reads: Read[] }> {
    const user = await this.read(q, userKey(username), now);
    const addr = await this.read(q, ipKey(ip), now);
    const pair = await this.read(q, pairKey(username, ip), now);
    const reads = [user, addr, pair];
    const p = pair.view;
    if (p?.locked) return { verdict: { allowed: false, locked: true, retryAfterMs: p.lockedUntil! - now }, reads };
    if (await this.isKnown(q, username, ip, now)) return { verdict: this.verdict([['pair', this.wait(p, this.pairLimits, now)]]), reads };
    const u = user.view;
    // Exemption is decided when the lock is read too: an admin locked while another could still log in
    // is let through once that other one is gone (disabled, deleted, locked).
    if (u?.locked && !(await this.exempt(username, q))) return { verdict: { allowed: false, locked: true, retryAfterMs: u.lockedUntil! - now }, reads };
    return { verdict: this.verdict([['user', this.wait(u, this.userLimits, now)], ['ip', this.wait(addr.view, this.ipLimits, now)]]), reads };
  }

  /** Runs `fn` again while it loses a race (PostgreSQL); the last loss is thrown. */
  private async retrying<T>(fn: () => Promise<T>): Promise<T> {
    for (let i = 1; ; i++) {
      try {
        return await fn();
      } catch (err) {
        if (!retryable(err)) throw err;
        if (i >= MAX_TRIES) throw new GuardConflict();
      }
    }
  }

  private async isKnown(q: Querier, username: string, ip: string, now: number): Promise<boolean> {
    return this.knownSourceMs > 0 && this.rows.isKnown(q, username, ip, now - this.knownSourceMs);
  }

  private limitsOf(k: GuardKey): GuardLimits {
    return k.kind === 'user' ? this.userLimits : k.kind === 'ip' ? this.ipLimits : this.pairLimits;
  }

  private async read(q: Querier, key: GuardKey, now: number): Promise<Read> {
    const row = await this.rows.get(q, key);
    return { key, row, view: this.view(key, row, now) };
  }

  /** The counter as it stands at `now`: null when forgotten (quiet long enough); zero failures after a lock that ended. */
  private view(k: GuardKey, r: GuardRow | null, now: number): View | null {
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

  private async bump(q: Querier, r: Read, now: number): Promise<void> {
    const v = r.view;
    // A running lock stays (failures of a known address, or of the last admin, still count on the account).
    await this.rows.swap(q, r.key, r.row, {
      failures: (v?.failures ?? 0) + 1, lastFailureAt: now,
      lockedAt: v?.locked ? v.lockedAt : null, lockedUntil: v?.locked ? v.lockedUntil : null, locks: v?.locks ?? 0,
    });
  }

  /** Lock the counter's key; returns when the lock ends. */
  private async lock(q: Querier, r: Read, v: View, now: number): Promise<number> {
    const until = now + Math.min(this.lockMaxMs, this.lockMs * 2 ** Math.min(v.locks, 30));
    await this.rows.swap(q, r.key, r.row, { failures: v.failures, lastFailureAt: v.lastFailureAt, lockedAt: now, lockedUntil: until, locks: v.locks + 1 });
    return until;
  }
}

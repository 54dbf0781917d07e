/**
 * Brute-force protection for POST /api/v1/auth/login (password guessing:
 * "rate-limited with a growing delay after failures; locked out after
 * repeated failures and unlocked by an admin").
 *
 * Failures are counted per username AND per client IP in `login_failures`
 * (state store, so a restart resets nothing). After n failures the next
 * attempt is refused early (429 + Retry-After, no password check) until
 *   last failure + min(cap, base · 2^(n − free − 1))
 * i.e. per username 1, 2, 4, 8, 16, 32, 60, 60 … s; per IP the first `free`
 * failures cost nothing (offices share one address), then the same growth up
 * to a longer cap. After `lockAfter` consecutive failures of one username it
 * is locked (locked_at) until an admin unlocks it; per IP there is delay only.
 *
 * Unknown usernames are tracked exactly like real ones (same delays, same
 * lockout), so replies do not reveal which usernames exist.
 *
 * An attempt is counted as a failure when it STARTS (`begin`) and forgiven
 * when the password proves right (`succeed`), so parallel requests cannot
 * slip extra guesses into one delay window.
 *
 * Counters whose last failure is older than `resetAfterMs` (and that are not
 * locked) start again from zero, so an occasional typo never adds up to a lockout.
 */
import type { Clock } from '../core/clock.js';
import { stmt, type StateSource } from './store.js';

export interface GuardLimits {
  /** Failures that cost no delay. */
  free: number;
  baseMs: number;
  capMs: number;
  /** Quiet time after which the counter starts from zero (unless locked). */
  resetAfterMs: number;
}

export interface LoginGuardOptions {
  state: StateSource;
  clock: Clock;
  user?: Partial<GuardLimits>;
  ip?: Partial<GuardLimits>;
  /** Consecutive failures that lock a username (default 10). */
  lockAfter?: number;
}

export const DEFAULT_USER_LIMITS: GuardLimits = { free: 0, baseMs: 1000, capMs: 60_000, resetAfterMs: 24 * 3_600_000 };
export const DEFAULT_IP_LIMITS: GuardLimits = { free: 3, baseMs: 1000, capMs: 300_000, resetAfterMs: 3_600_000 };
export const DEFAULT_LOCK_AFTER = 10;

export type GuardVerdict =
  | { allowed: true }
  | { allowed: false; locked: true }
  | { allowed: false; locked: false; retryAfterMs: number; by: 'user' | 'ip' };

interface Row { failures: number; last_failure_at: number; locked_at: number | null }

/** Delay owed after `failures` failures (0 while within the free allowance). */
export function delayAfter(failures: number, l: GuardLimits): number {
  const n = failures - l.free;
  if (n <= 0) return 0;
  return Math.min(l.capMs, l.baseMs * 2 ** Math.min(n - 1, 30));
}

export class LoginGuard {
  readonly userLimits: GuardLimits;
  readonly ipLimits: GuardLimits;
  readonly lockAfter: number;
  private readonly state: StateSource;
  private readonly clock: Clock;

  constructor(opts: LoginGuardOptions) {
    this.state = opts.state;
    this.clock = opts.clock;
    this.userLimits = { ...DEFAULT_USER_LIMITS, ...opts.user };
    this.ipLimits = { ...DEFAULT_IP_LIMITS, ...opts.ip };
    this.lockAfter = opts.lockAfter ?? DEFAULT_LOCK_AFTER;
  }

  /** May an attempt for (username, ip) go ahead now? Read-only. */
  check(username: string, ip: string): GuardVerdict {
    const now = this.clock.now();
    const u = this.live('user', username, now);
    if (u?.locked_at != null) return { allowed: false, locked: true };
    const wait = (r: Row | null, l: GuardLimits): number => (r ? r.last_failure_at + delayAfter(r.failures, l) - now : 0);
    const wu = wait(u, this.userLimits);
    const wi = wait(this.live('ip', ip, now), this.ipLimits);
    if (wu > 0 || wi > 0) return { allowed: false, locked: false, retryAfterMs: Math.max(wu, wi), by: wu >= wi ? 'user' : 'ip' };
    return { allowed: true };
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
      this.bump('user', username, now);
      this.bump('ip', ip, now);
      return v;
    });
    return tx.immediate();
  }

  /** The attempt failed (already counted by begin): lock the username at the threshold. Returns whether it is locked now. */
  fail(username: string): { locked: boolean; failures: number } {
    const r = stmt(this.state, 'SELECT failures, last_failure_at, locked_at FROM login_failures WHERE kind = ? AND key = ?').get('user', username) as Row | undefined;
    if (!r) return { locked: false, failures: 0 };
    if (r.locked_at == null && r.failures >= this.lockAfter) {
      stmt(this.state, 'UPDATE login_failures SET locked_at = ? WHERE kind = ? AND key = ? AND locked_at IS NULL').run(this.clock.now(), 'user', username);
      return { locked: true, failures: r.failures };
    }
    return { locked: r.locked_at != null, failures: r.failures };
  }

  /** The password was right: forget the username's failures and forgive this attempt on the IP. */
  succeed(username: string, ip: string): void {
    const tx = this.state.db.transaction(() => {
      stmt(this.state, "DELETE FROM login_failures WHERE kind = 'user' AND key = ? AND locked_at IS NULL").run(username);
      stmt(this.state, "UPDATE login_failures SET failures = MAX(failures - 1, 0) WHERE kind = 'ip' AND key = ?").run(ip);
    });
    tx.immediate();
  }

  /** When the username was locked (ms), or null. */
  lockedAt(username: string): number | null {
    const v = stmt(this.state, "SELECT locked_at FROM login_failures WHERE kind = 'user' AND key = ?").pluck().get(username);
    return typeof v === 'number' ? v : null;
  }

  /** Lock state of several usernames at once (for listings). */
  lockedMap(): Map<string, number> {
    const rows = stmt(this.state, "SELECT key, locked_at FROM login_failures WHERE kind = 'user' AND locked_at IS NOT NULL").all() as Array<{ key: string; locked_at: number }>;
    return new Map(rows.map((r) => [r.key, r.locked_at]));
  }

  /** Admin unlock: clears the username's lock and failures. Returns whether it was locked. */
  unlock(username: string): boolean {
    const was = this.lockedAt(username) !== null;
    this.forget(username);
    return was;
  }

  /** Drop every trace of a username (user created or deleted). */
  forget(username: string): void {
    stmt(this.state, "DELETE FROM login_failures WHERE kind = 'user' AND key = ?").run(username);
  }

  /** Remove counters that have expired (cheap housekeeping; called on each failure). */
  prune(): void {
    const now = this.clock.now();
    stmt(this.state, "DELETE FROM login_failures WHERE locked_at IS NULL AND kind = 'user' AND last_failure_at < ?").run(now - this.userLimits.resetAfterMs);
    stmt(this.state, "DELETE FROM login_failures WHERE locked_at IS NULL AND kind = 'ip' AND last_failure_at < ?").run(now - this.ipLimits.resetAfterMs);
  }

  /** The row if it still counts (not expired by quiet time, or locked). */
  private live(kind: 'user' | 'ip', key: string, now: number): Row | null {
    const r = stmt(this.state, 'SELECT failures, last_failure_at, locked_at FROM login_failures WHERE kind = ? AND key = ?').get(kind, key) as Row | undefined;
    if (!r) return null;
    const l = kind === 'user' ? this.userLimits : this.ipLimits;
    if (r.locked_at == null && now - r.last_failure_at > l.resetAfterMs) return null;
    return r;
  }

  private bump(kind: 'user' | 'ip', key: string, now: number): void {
    const r = this.live(kind, key, now);
    const failures = (r?.failures ?? 0) + 1;
    stmt(this.state, `INSERT INTO login_failures (kind, key, failures, last_failure_at) VALUES (?, ?, ?, ?)
      ON CONFLICT (kind, key) DO UPDATE SET failures = excluded.failures, last_failure_at = excluded.last_failure_at`)
      .run(kind, key, failures, now);
  }
}

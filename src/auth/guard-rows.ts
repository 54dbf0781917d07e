/**
 * Storage of the login guard (login-guard.ts): failure counters and locks in
 * `login_guard`, addresses users logged in from in `login_known_sources`
 * (migration: auth/migrations.ts). Only SQL here; what the numbers mean is the
 * guard's business.
 */
import { stmt, type StateSource } from './store.js';

/** 'user': a username from any address; 'ip': an address across usernames; 'pair': a username from one address. */
export type GuardKind = 'user' | 'ip' | 'pair';

export interface GuardKey { kind: GuardKind; username: string; ip: string }

export interface GuardRow {
  failures: number;
  lastFailureAt: number;
  lockedAt: number | null;
  lockedUntil: number | null;
  /** Locks in a row (the next lasts twice as long). */
  locks: number;
}

export const userKey = (username: string): GuardKey => ({ kind: 'user', username, ip: '' });
export const ipKey = (ip: string): GuardKey => ({ kind: 'ip', username: '', ip });
export const pairKey = (username: string, ip: string): GuardKey => ({ kind: 'pair', username, ip });

interface Row { failures: number; last_failure_at: number; locked_at: number | null; locked_until: number | null; locks: number }

export class GuardRows {
  constructor(private readonly state: StateSource) {}

  get(k: GuardKey): GuardRow | null {
    const r = stmt(this.state, `SELECT failures, last_failure_at, locked_at, locked_until, locks FROM login_guard
      WHERE kind = ? AND username = ? AND ip = ?`).get(k.kind, k.username, k.ip) as Row | undefined;
    return r ? { failures: r.failures, lastFailureAt: r.last_failure_at, lockedAt: r.locked_at, lockedUntil: r.locked_until, locks: r.locks } : null;
  }

  put(k: GuardKey, r: GuardRow): void {
    stmt(this.state, `INSERT INTO login_guard (kind, username, ip, failures, last_failure_at, locked_at, locked_until, locks)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (kind, username, ip) DO UPDATE SET failures = excluded.failures, last_failure_at = excluded.last_failure_at,
        locked_at = excluded.locked_at, locked_until = excluded.locked_until, locks = excluded.locks`)
      .run(k.kind, k.username, k.ip, r.failures, r.lastFailureAt, r.lockedAt, r.lockedUntil, r.locks);
  }

  /** Delete the row unless it holds a lock still running at `now`. */
  deleteUnlessLocked(k: GuardKey, now: number): void {
    stmt(this.state, `DELETE FROM login_guard WHERE kind = ? AND username = ? AND ip = ?
      AND (locked_until IS NULL OR locked_until <= ?)`).run(k.kind, k.username, k.ip, now);
  }

  /** Forgive one failure of an address (a right password was counted as a failure when it started). */
  forgiveOne(ip: string): void {
    stmt(this.state, "UPDATE login_guard SET failures = MAX(failures - 1, 0) WHERE kind = 'ip' AND username = '' AND ip = ?").run(ip);
  }

  /** Whether the username has a lock running at `now`, for everyone or for some address. */
  anyLock(username: string, now: number): boolean {
    return stmt(this.state, `SELECT 1 FROM login_guard WHERE kind IN ('user', 'pair') AND username = ? AND locked_until > ? LIMIT 1`)
      .get(username, now) !== undefined;
  }

  /** Account-wide locks running at `now`. */
  accountLocks(now: number): Map<string, { lockedAt: number; lockedUntil: number }> {
    const rows = stmt(this.state, `SELECT username, locked_at, locked_until FROM login_guard
      WHERE kind = 'user' AND locked_until > ?`).all(now) as Array<{ username: string; locked_at: number; locked_until: number }>;
    return new Map(rows.map((r) => [r.username, { lockedAt: r.locked_at, lockedUntil: r.locked_until }]));
  }

  /** Counters and locks of a username, for everyone and per address. */
  deleteUser(username: string): void {
    stmt(this.state, "DELETE FROM login_guard WHERE kind IN ('user', 'pair') AND username = ?").run(username);
  }

  isKnown(username: string, ip: string, since: number): boolean {
    return stmt(this.state, 'SELECT 1 FROM login_known_sources WHERE username = ? AND ip = ? AND last_success_at >= ?')
      .get(username, ip, since) !== undefined;
  }

  markKnown(username: string, ip: string, now: number): void {
    stmt(this.state, `INSERT INTO login_known_sources (username, ip, last_success_at) VALUES (?, ?, ?)
      ON CONFLICT (username, ip) DO UPDATE SET last_success_at = excluded.last_success_at`).run(username, ip, now);
  }

  forgetKnown(username: string): void {
    stmt(this.state, 'DELETE FROM login_known_sources WHERE username = ?').run(username);
  }

  /** Drop counters of `kind` quiet since before `quietBefore` and not locked at `now`. */
  prune(kind: GuardKind, now: number, quietBefore: number): void {
    stmt(this.state, `DELETE FROM login_guard WHERE kind = ? AND (locked_until IS NULL OR locked_until <= ?)
      AND MAX(last_failure_at, COALESCE(locked_until, 0)) < ?`).run(kind, now, quietBefore);
  }

  pruneKnown(before: number): void {
    stmt(this.state, 'DELETE FROM login_known_sources WHERE last_success_at < ?').run(before);
  }
}

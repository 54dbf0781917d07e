/**
 * Storage of the login guard (login-guard.ts): failure counters and locks in
 * `login_guard`, addresses users logged in from in `login_known_sources`
 * (migrations: auth/migrations.ts, auth/pg-schema.ts). Only SQL here; what the
 * numbers mean is the guard's business.
 *
 * A counter changes only by compare-and-set (swap): the new values are written
 * only if the row is still as the guard read it, and the statement returns the
 * row it wrote. On the embedded store the write transaction (BEGIN IMMEDIATE)
 * already serialises every attempt, so a swap never misses; on PostgreSQL
 * (cluster mode, READ COMMITTED) two nodes may read the same counter at once:
 * the second swap waits for the first one's row lock, finds the row changed and
 * misses (GuardConflict), and the guard decides again on what the first one
 * wrote. A failure counted on one node therefore always counts on the others,
 * and two attempts can never both pass on the same old count.
 */
import { sql } from 'kysely';
import { all, one, type Querier } from './store.js';

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

/** A counter changed under the guard's feet (another node): decide again. */
export class GuardConflict extends Error {
  constructor() { super('login guard counter changed concurrently'); }
}

interface Row { failures: number; last_failure_at: number; locked_at: number | null; locked_until: number | null; locks: number }

const toRow = (r: Row): GuardRow => ({ failures: r.failures, lastFailureAt: r.last_failure_at, lockedAt: r.locked_at, lockedUntil: r.locked_until, locks: r.locks });

export class GuardRows {
  async get(q: Querier, k: GuardKey): Promise<GuardRow | null> {
    const r = await one<Row>(q, sql`SELECT failures, last_failure_at, locked_at, locked_until, locks FROM login_guard
      WHERE kind = ${k.kind} AND username = ${k.username} AND ip = ${k.ip}`);
    return r ? toRow(r) : null;
  }

  /**
   * Write `next` for the key if its row is still `expected` (null: no row yet). Returns the
   * failure count written; throws GuardConflict when the row changed since it was read.
   */
  async swap(q: Querier, k: GuardKey, expected: GuardRow | null, next: GuardRow): Promise<number> {
    const r = expected === null
      ? await one<{ failures: number }>(q, sql`INSERT INTO login_guard (kind, username, ip, failures, last_failure_at, locked_at, locked_until, locks)
          VALUES (${k.kind}, ${k.username}, ${k.ip}, ${next.failures}, ${next.lastFailureAt}, ${next.lockedAt}, ${next.lockedUntil}, ${next.locks})
          ON CONFLICT (kind, username, ip) DO NOTHING RETURNING failures`)
      : await one<{ failures: number }>(q, sql`UPDATE login_guard SET failures = ${next.failures}, last_failure_at = ${next.lastFailureAt},
          locked_at = ${next.lockedAt}, locked_until = ${next.lockedUntil}, locks = ${next.locks}
          WHERE kind = ${k.kind} AND username = ${k.username} AND ip = ${k.ip}
            AND failures = ${expected.failures} AND last_failure_at = ${expected.lastFailureAt}
            AND COALESCE(locked_until, -1) = ${expected.lockedUntil ?? -1} AND locks = ${expected.locks}
          RETURNING failures`);
    if (!r) throw new GuardConflict();
    return r.failures;
  }

  /** Delete the row unless it holds a lock still running at `now`. */
  async deleteUnlessLocked(q: Querier, k: GuardKey, now: number): Promise<void> {
    await sql`DELETE FROM login_guard WHERE kind = ${k.kind} AND username = ${k.username} AND ip = ${k.ip}
      AND (locked_until IS NULL OR locked_until <= ${now})`.execute(q);
  }

  /** Forgive one failure of an address (a right password was counted as a failure when it started). */
  async forgiveOne(q: Querier, ip: string): Promise<void> {
    await sql`UPDATE login_guard SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END
      WHERE kind = 'ip' AND username = '' AND ip = ${ip}`.execute(q);
  }

  /** Whether the username has a lock running at `now`, for everyone or for some address. */
  async anyLock(q: Querier, username: string, now: number): Promise<boolean> {
    return (await one(q, sql`SELECT 1 AS one FROM login_guard WHERE kind IN ('user', 'pair') AND username = ${username} AND locked_until > ${now} LIMIT 1`)) !== null;
  }

  /** Account-wide locks running at `now`. */
  async accountLocks(q: Querier, now: number): Promise<Map<string, { lockedAt: number; lockedUntil: number }>> {
    const rows = await all<{ username: string; locked_at: number; locked_until: number }>(q, sql`SELECT username, locked_at, locked_until FROM login_guard
      WHERE kind = 'user' AND locked_until > ${now} ORDER BY username`);
    return new Map(rows.map((r) => [r.username, { lockedAt: r.locked_at, lockedUntil: r.locked_until }]));
  }

  /** Counters and locks of a username, for everyone and per address. */
  async deleteUser(q: Querier, username: string): Promise<void> {
    await sql`DELETE FROM login_guard WHERE kind IN ('user', 'pair') AND username = ${username}`.execute(q);
  }

  async isKnown(q: Querier, username: string, ip: string, since: number): Promise<boolean> {
    return (await one(q, sql`SELECT 1 AS one FROM login_known_sources WHERE username = ${username} AND ip = ${ip} AND last_success_at >= ${since}`)) !== null;
  }

  async markKnown(q: Querier, username: string, ip: string, now: number): Promise<void> {
    await sql`INSERT INTO login_known_sources (username, ip, last_success_at) VALUES (${username}, ${ip}, ${now})
      ON CONFLICT (username, ip) DO UPDATE SET last_success_at = excluded.last_success_at`.execute(q);
  }

  async forgetKnown(q: Querier, username: string): Promise<void> {
    await sql`DELETE FROM login_known_sources WHERE username = ${username}`.execute(q);
  }

  /** Drop counters of `kind` quiet since before `quietBefore` and not locked at `now`. */
  async prune(q: Querier, kind: GuardKind, now: number, quietBefore: number): Promise<void> {
    await sql`DELETE FROM login_guard WHERE kind = ${kind} AND (locked_until IS NULL OR locked_until <= ${now})
      AND (CASE WHEN locked_until IS NOT NULL AND locked_until > last_failure_at THEN locked_until ELSE last_failure_at END) < ${quietBefore}`.execute(q);
  }

  async pruneKnown(q: Querier, before: number): Promise<void> {
    await sql`DELETE FROM login_known_sources WHERE last_success_at < ${before}`.execute(q);
  }
}

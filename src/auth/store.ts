/**
 * Small helpers shared by the account services (users, sessions, API tokens,
 * login guard): how they reach the state store (the `Db` port: the embedded
 * state.db, or PostgreSQL in cluster mode), random ids and token digests.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Kysely, RawBuilder } from 'kysely';

/**
 * Where a query runs: `db.kysely` outside a transaction, or the `trx` of a
 * `db.write()` (a Transaction is a Kysely). Every repository method that may be
 * called inside another one's write takes it, because inside a write only `trx`
 * may be used (src/storage/state/sql.ts).
 */
export type Querier = Kysely<unknown>;

/** The rows of a query. */
export async function all<T>(q: Querier, query: RawBuilder<T>): Promise<T[]> {
  return (await query.execute(q)).rows;
}

/** The first row of a query, or null. */
export async function one<T>(q: Querier, query: RawBuilder<T>): Promise<T | null> {
  return (await query.execute(q)).rows[0] ?? null;
}

/** Rows changed by an UPDATE or DELETE (both dialects report it). */
export async function changed(q: Querier, query: RawBuilder<unknown>): Promise<number> {
  return Number((await query.execute(q)).numAffectedRows ?? 0);
}

/** sha256 hex of a string: enough for 256-bit random tokens (no dictionary to attack). */
export function sha256hex(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

/** An opaque bearer token: recognisable prefix + 256 random bits, base64url. */
export function newToken(prefix: string): string {
  return prefix + randomBytes(32).toString('base64url');
}

/** A short random id (public, not a secret). */
export function newId(prefix: string): string {
  return prefix + randomBytes(9).toString('base64url').replace(/[-_]/g, 'x');
}

/** Parse a stored JSON array of area codes (defensive: bad data = no areas). */
export function parseAreas(json: string): string[] {
  try {
    const v: unknown = JSON.parse(json);
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

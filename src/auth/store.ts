/**
 * Small helpers shared by the account services (users, sessions, API tokens,
 * login guard): access to the state store's SQLite handle, prepared-statement
 * caching, random ids and token digests.
 */
import { createHash, randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';

/** Anything that hands out the open state-store connection (StateDb does). Read lazily: services may be built before start(). */
export interface StateSource {
  readonly db: Database.Database;
}

const cache = new WeakMap<Database.Database, Map<string, Database.Statement>>();

/** A prepared statement, cached per connection. */
export function stmt(src: StateSource, sql: string): Database.Statement {
  const db = src.db;
  let m = cache.get(db);
  if (!m) { m = new Map(); cache.set(db, m); }
  let s = m.get(sql);
  if (!s) { s = db.prepare(sql); m.set(sql, s); }
  return s;
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

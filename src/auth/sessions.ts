/**
 * Login sessions (docs/roles.md: session tokens from
 * POST /api/v1/auth/login). A session token is `kengs_` + 256 random bits
 * (base64url); only its sha256 is stored. Expiry is FIXED: `ttlMs` (12 h by
 * default) after login, not extended by use; log in again afterwards.
 *
 * Checked on every request together with the user's row (one query), so a
 * disabled or deleted user, a changed password (all sessions revoked) or a
 * changed role or area takes effect at the next request; in cluster mode a
 * change made on another node takes effect within the lookup cache's bound
 * (principal-cache.ts, docs/cluster.md).
 */
import { sql } from 'kysely';
import type { Clock } from '../core/clock.js';
import type { Db } from '../storage/sql/index.js';
import { LookupCache } from './principal-cache.js';
import { changed, newId, newToken, one, parseAreas, sha256hex, type Querier } from './store.js';
import { ALL_AREAS, type Authenticator, type Principal, type Role } from './types.js';

export const SESSION_TOKEN_PREFIX = 'kengs_';
export const DEFAULT_SESSION_TTL_MS = 12 * 3_600_000;
/** Most live sessions per user; logging in beyond that ends the oldest. */
export const MAX_SESSIONS_PER_USER = 20;

export interface SessionStoreOptions {
  db: Db<unknown>;
  clock: Clock;
  ttlMs?: number;
  /** How long a successful token lookup may be reused (principal-cache.ts); 0 = every request reads the store. */
  cacheMs?: number;
}

export interface NewSession { id: string; token: string; expiresAt: number }

interface LiveRow { id: string; username: string; expires_at: number; role: Role; areas_json: string }

export class SessionStore {
  readonly ttlMs: number;
  private readonly cache: LookupCache<Principal>;

  constructor(private readonly o: SessionStoreOptions) {
    this.ttlMs = o.ttlMs ?? DEFAULT_SESSION_TTL_MS;
    this.cache = new LookupCache(o.cacheMs ?? 0, o.clock);
  }

  async create(username: string, ip: string | null): Promise<NewSession> {
    const now = this.o.clock.now();
    const token = newToken(SESSION_TOKEN_PREFIX);
    const s: NewSession = { id: newId('ses_'), token, expiresAt: now + this.ttlMs };
    // Newest first; on SQLite the insertion order breaks ties within one millisecond (as it always did).
    const newest = this.o.db.dialect === 'sqlite' ? sql`created_at DESC, rowid DESC` : sql`created_at DESC, id DESC`;
    await this.o.db.write(async (trx) => {
      await sql`DELETE FROM sessions WHERE expires_at <= ${now} OR revoked_at IS NOT NULL`.execute(trx);
      await sql`INSERT INTO sessions (id, token_hash, username, created_at, expires_at, ip)
        VALUES (${s.id}, ${sha256hex(token)}, ${username}, ${now}, ${s.expiresAt}, ${ip})`.execute(trx);
      await sql`DELETE FROM sessions WHERE username = ${username} AND id <> ${s.id} AND id NOT IN
        (SELECT id FROM sessions WHERE username = ${username} AND id <> ${s.id} ORDER BY ${newest} LIMIT ${MAX_SESSIONS_PER_USER - 1})`.execute(trx);
    });
    return s;
  }

  /** The live session of a token: id and username, or null. */
  async lookup(token: string, q: Querier = this.o.db.kysely): Promise<{ id: string; username: string; expiresAt: number } | null> {
    if (!token.startsWith(SESSION_TOKEN_PREFIX)) return null;
    const r = await one<{ id: string; username: string; expires_at: number }>(q, sql`SELECT id, username, expires_at FROM sessions
      WHERE token_hash = ${sha256hex(token)} AND revoked_at IS NULL AND expires_at > ${this.o.clock.now()}`);
    return r ? { id: r.id, username: r.username, expiresAt: r.expires_at } : null;
  }

  /** The principal of a live session token whose user is enabled, else null. */
  async authenticate(token: string): Promise<Principal | null> {
    if (!token.startsWith(SESSION_TOKEN_PREFIX)) return null;
    const key = sha256hex(token);
    const hit = this.cache.get(key);
    if (hit) return { ...hit, areas: [...hit.areas] };
    const gen = this.cache.generation();
    const r = await one<LiveRow>(this.o.db.kysely, sql`SELECT s.id, s.username, s.expires_at, u.role, u.areas_json
      FROM sessions s JOIN users u ON u.username = s.username
      WHERE s.token_hash = ${key} AND s.revoked_at IS NULL AND s.expires_at > ${this.o.clock.now()} AND u.disabled = 0`);
    if (!r) return null;
    const p: Principal = { kind: 'user', id: r.username, role: r.role, areas: r.role === 'admin' ? [ALL_AREAS] : parseAreas(r.areas_json) };
    this.cache.set(key, p, r.username, r.expires_at, gen);
    return { ...p, areas: [...p.areas] };
  }

  /** Logout, inside the caller's write: revoke the session of this token. Returns it, or null when it was not a live session. */
  async revoke(token: string, trx: Querier): Promise<{ id: string; username: string } | null> {
    if (!token.startsWith(SESSION_TOKEN_PREFIX)) return null;
    return one<{ id: string; username: string }>(trx, sql`UPDATE sessions SET revoked_at = ${this.o.clock.now()}
      WHERE token_hash = ${sha256hex(token)} AND revoked_at IS NULL AND expires_at > ${this.o.clock.now()} RETURNING id, username`);
  }

  /** Inside the caller's write: revoke every session of the user. Call forgetCached(username) once it committed. */
  revokeAllFor(username: string, trx: Querier): Promise<number> {
    return changed(trx, sql`UPDATE sessions SET revoked_at = ${this.o.clock.now()} WHERE username = ${username} AND revoked_at IS NULL`);
  }

  /** After a committed change of the user (sessions revoked, role, areas, disabled, deleted): no cached lookup of theirs is reused. */
  forgetCached(username: string): void {
    this.cache.dropOwner(username);
  }

  /** After a committed logout. */
  forgetCachedToken(token: string): void {
    this.cache.dropKey(sha256hex(token));
  }
}

/** Bearer authenticator for session tokens (added to the API's chain). */
export class UserSessionAuthenticator implements Authenticator {
  constructor(private readonly sessions: SessionStore) {}
  authenticate(bearer: string): Promise<Principal | null> {
    return this.sessions.authenticate(bearer);
  }
}

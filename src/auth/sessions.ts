/**
 * Login sessions (docs/roles.md: session tokens from
 * POST /api/v1/auth/login). A session token is `kengs_` + 256 random bits
 * (base64url); only its sha256 is stored. Expiry is FIXED: `ttlMs` (12 h by
 * default) after login, not extended by use; log in again afterwards.
 *
 * Checked on every request against the users table, so a disabled or
 * deleted user, a changed password (all sessions revoked) or a changed role
 * or area takes effect at the next request.
 */
import type { Clock } from '../core/clock.js';
import { newId, newToken, sha256hex, stmt, type StateSource } from './store.js';
import type { Authenticator, Principal } from './types.js';

export const SESSION_TOKEN_PREFIX = 'kengs_';
export const DEFAULT_SESSION_TTL_MS = 12 * 3_600_000;
/** Most live sessions per user; logging in beyond that ends the oldest. */
export const MAX_SESSIONS_PER_USER = 20;

export interface SessionStoreOptions {
  state: StateSource;
  clock: Clock;
  ttlMs?: number;
  /** Role and areas of an enabled user, or null (Users.principalData). */
  principalData(username: string): Pick<Principal, 'role' | 'areas'> | null;
}

export interface NewSession { id: string; token: string; expiresAt: number }

export class SessionStore {
  readonly ttlMs: number;
  constructor(private readonly o: SessionStoreOptions) {
    this.ttlMs = o.ttlMs ?? DEFAULT_SESSION_TTL_MS;
  }

  create(username: string, ip: string | null): NewSession {
    const now = this.o.clock.now();
    const token = newToken(SESSION_TOKEN_PREFIX);
    const s: NewSession = { id: newId('ses_'), token, expiresAt: now + this.ttlMs };
    const tx = this.o.state.db.transaction(() => {
      stmt(this.o.state, 'DELETE FROM sessions WHERE expires_at <= ? OR revoked_at IS NOT NULL').run(now);
      stmt(this.o.state, `INSERT INTO sessions (id, token_hash, username, created_at, expires_at, ip) VALUES (?, ?, ?, ?, ?, ?)`)
        .run(s.id, sha256hex(token), username, now, s.expiresAt, ip);
      stmt(this.o.state, `DELETE FROM sessions WHERE username = ? AND id NOT IN
        (SELECT id FROM sessions WHERE username = ? ORDER BY created_at DESC, rowid DESC LIMIT ${MAX_SESSIONS_PER_USER})`).run(username, username);
    });
    tx.immediate();
    return s;
  }

  /** The live session of a token: id and username, or null. */
  lookup(token: string): { id: string; username: string; expiresAt: number } | null {
    if (!token.startsWith(SESSION_TOKEN_PREFIX)) return null;
    const r = stmt(this.o.state, `SELECT id, username, expires_at AS expiresAt FROM sessions
      WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ?`).get(sha256hex(token), this.o.clock.now()) as
      { id: string; username: string; expiresAt: number } | undefined;
    return r ?? null;
  }

  authenticate(token: string): Principal | null {
    const s = this.lookup(token);
    if (!s) return null;
    const data = this.o.principalData(s.username);
    return data ? { kind: 'user', id: s.username, role: data.role, areas: [...data.areas] } : null;
  }

  /** Logout: revoke the session of this token. Returns it, or null when it was not a live session. */
  revoke(token: string): { id: string; username: string } | null {
    const s = this.lookup(token);
    if (!s) return null;
    stmt(this.o.state, 'UPDATE sessions SET revoked_at = ? WHERE id = ?').run(this.o.clock.now(), s.id);
    return { id: s.id, username: s.username };
  }

  revokeAllFor(username: string): number {
    return stmt(this.o.state, 'UPDATE sessions SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL').run(this.o.clock.now(), username).changes;
  }
}

/** Bearer authenticator for session tokens (added to the API's chain). */
export class UserSessionAuthenticator implements Authenticator {
  constructor(private readonly sessions: SessionStore) {}
  authenticate(bearer: string): Principal | null {
    return this.sessions.authenticate(bearer);
  }
}

/**
 * API tokens for machines such as the IOC (OpenAPI at /docs, tag
 * accounts). A token is `kengt_` + 256 random bits (base64url, recognisable
 * in leaks); only its sha256 is stored and it is shown once, at creation.
 * Tokens carry their own role and areas, may expire, and are revoked by
 * DELETE. Who may manage them: admins only (policy: tokens.read/tokens.write
 * are admin-only), because a machine token outlives the person who made it.
 * `last_used_at` is written at most once a minute per token.
 */
import { Errors } from '../core/errors.js';
import type { Clock } from '../core/clock.js';
import type { AuditRecorder } from '../audit/index.js';
import { newId, newToken, parseAreas, sha256hex, stmt, type StateSource } from './store.js';
import { ALL_AREAS, type Authenticator, type Principal, type Role } from './types.js';
import type { ChangeContext } from './users.js';

export const API_TOKEN_PREFIX = 'kengt_';
/** Minimum interval between last_used_at writes of one token. */
export const LAST_USED_WRITE_MS = 60_000;

export interface ApiToken {
  id: string; name: string; role: Role; areas: string[];
  createdBy: string; createdAt: number; expiresAt: number | null; lastUsedAt: number | null; revokedAt: number | null;
}

interface Row {
  id: string; name: string; role: Role; areas_json: string; created_by: string; created_at: number;
  expires_at: number | null; last_used_at: number | null; revoked_at: number | null;
}

export interface ApiTokenStoreOptions { state: StateSource; clock: Clock; audit: AuditRecorder }

function toToken(r: Row): ApiToken {
  return {
    id: r.id, name: r.name, role: r.role, areas: r.role === 'admin' ? [ALL_AREAS] : parseAreas(r.areas_json),
    createdBy: r.created_by, createdAt: r.created_at, expiresAt: r.expires_at, lastUsedAt: r.last_used_at, revokedAt: r.revoked_at,
  };
}

export class ApiTokenStore {
  /** In-memory last write of last_used_at per token id (throttle). */
  private readonly lastWrite = new Map<string, number>();
  constructor(private readonly o: ApiTokenStoreOptions) {}

  /** Creates a token; `areas` already validated (Users.normaliseAreas). The plain token is returned only here. */
  create(input: { name: string; role: Role; areas: string[]; expiresAt: number | null }, by: ChangeContext): { token: string; meta: ApiToken } {
    const now = this.o.clock.now();
    if (input.expiresAt !== null && input.expiresAt <= now) throw Errors.VALIDATION('expiresAt must be in the future');
    const token = newToken(API_TOKEN_PREFIX);
    const id = newId('tok_');
    const createdBy = typeof by.actor === 'string' ? by.actor : `${by.actor.kind}:${by.actor.id}`;
    const tx = this.o.state.db.transaction(() => {
      stmt(this.o.state, `INSERT INTO api_tokens (id, name, token_hash, role, areas_json, created_by, created_at, expires_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)`).run(id, input.name, sha256hex(token), input.role, JSON.stringify(input.areas), createdBy, now, input.expiresAt);
      const meta = this.get(id)!;
      this.o.audit.recordSync({ actor: by.actor, ip: by.ip, action: 'token.create', target: `token:${id}`, after: meta });
      return meta;
    });
    return { token, meta: tx.immediate() };
  }

  get(id: string): ApiToken | null {
    const r = stmt(this.o.state, 'SELECT * FROM api_tokens WHERE id = ?').get(id) as Row | undefined;
    return r ? toToken(r) : null;
  }

  list(): ApiToken[] {
    return (stmt(this.o.state, 'SELECT * FROM api_tokens ORDER BY created_at, id').all() as Row[]).map(toToken);
  }

  /** Revoke (idempotent). Throws NOT_FOUND for an unknown id. */
  revoke(id: string, by: ChangeContext): ApiToken {
    const tx = this.o.state.db.transaction(() => {
      const before = this.get(id);
      if (!before) throw Errors.NOT_FOUND(`Token "${id}"`);
      if (before.revokedAt !== null) return before;
      stmt(this.o.state, 'UPDATE api_tokens SET revoked_at = ? WHERE id = ?').run(this.o.clock.now(), id);
      const after = this.get(id)!;
      this.o.audit.recordSync({ actor: by.actor, ip: by.ip, action: 'token.revoke', target: `token:${id}`, before, after });
      return after;
    });
    return tx.immediate();
  }

  authenticate(bearer: string): Principal | null {
    if (!bearer.startsWith(API_TOKEN_PREFIX)) return null;
    const now = this.o.clock.now();
    const r = stmt(this.o.state, `SELECT * FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > ?)`).get(sha256hex(bearer), now) as Row | undefined;
    if (!r) return null;
    this.touch(r, now);
    const t = toToken(r);
    return { kind: 'token', id: t.id, role: t.role, areas: t.areas };
  }

  private touch(r: Row, now: number): void {
    const last = Math.max(this.lastWrite.get(r.id) ?? 0, r.last_used_at ?? 0);
    if (now - last < LAST_USED_WRITE_MS) return;
    this.lastWrite.set(r.id, now);
    try {
      stmt(this.o.state, 'UPDATE api_tokens SET last_used_at = ? WHERE id = ?').run(now, r.id);
    } catch { /* best effort: a busy database must not refuse the request */ }
  }
}

/** Bearer authenticator for API tokens (added to the API's chain). */
export class ApiTokenAuthenticator implements Authenticator {
  constructor(private readonly tokens: ApiTokenStore) {}
  authenticate(bearer: string): Principal | null {
    return this.tokens.authenticate(bearer);
  }
}

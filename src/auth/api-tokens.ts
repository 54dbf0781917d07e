/**
 * API tokens for machines such as the IOC (OpenAPI at /docs, tag
 * accounts). A token is `kengt_` + 256 random bits (base64url, recognisable
 * in leaks); only its sha256 is stored and it is shown once, at creation.
 * Tokens carry their own role and areas, may expire, and are revoked by
 * DELETE. Who may manage them: admins only (policy: tokens.read/tokens.write
 * are admin-only), because a machine token outlives the person who made it.
 * `last_used_at` is written at most once a minute per token (per node).
 * In cluster mode a revoke on another node is refused here within the lookup
 * cache's bound (principal-cache.ts, docs/cluster.md).
 */
import { sql } from 'kysely';
import { Errors } from '../core/errors.js';
import type { Clock } from '../core/clock.js';
import type { AuditRecorder } from '../audit/index.js';
import type { Db } from '../storage/sql/index.js';
import { LookupCache } from './principal-cache.js';
import { all, newId, newToken, one, parseAreas, sha256hex, type Querier } from './store.js';
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

export interface ApiTokenStoreOptions {
  db: Db<unknown>;
  clock: Clock;
  audit: AuditRecorder;
  /** How long a successful token lookup may be reused (principal-cache.ts); 0 = every request reads the store. */
  cacheMs?: number;
}

const COLUMNS = sql`id, name, role, areas_json, created_by, created_at, expires_at, last_used_at, revoked_at`;

function toToken(r: Row): ApiToken {
  return {
    id: r.id, name: r.name, role: r.role, areas: r.role === 'admin' ? [ALL_AREAS] : parseAreas(r.areas_json),
    createdBy: r.created_by, createdAt: r.created_at, expiresAt: r.expires_at, lastUsedAt: r.last_used_at, revokedAt: r.revoked_at,
  };
}

export class ApiTokenStore {
  /** In-memory last write of last_used_at per token id (throttle). */
  private readonly lastWrite = new Map<string, number>();
  private readonly cache: LookupCache<Principal>;

  constructor(private readonly o: ApiTokenStoreOptions) {
    this.cache = new LookupCache(o.cacheMs ?? 0, o.clock);
  }

  /** Creates a token; `areas` already validated (Users.normaliseAreas). The plain token is returned only here. */
  async create(input: { name: string; role: Role; areas: string[]; expiresAt: number | null }, by: ChangeContext): Promise<{ token: string; meta: ApiToken }> {
    const now = this.o.clock.now();
    if (input.expiresAt !== null && input.expiresAt <= now) throw Errors.VALIDATION('expiresAt must be in the future');
    const token = newToken(API_TOKEN_PREFIX);
    const id = newId('tok_');
    const createdBy = typeof by.actor === 'string' ? by.actor : `${by.actor.kind}:${by.actor.id}`;
    const meta = await this.o.db.write(async (trx) => {
      await sql`INSERT INTO api_tokens (id, name, token_hash, role, areas_json, created_by, created_at, expires_at)
        VALUES (${id}, ${input.name}, ${sha256hex(token)}, ${input.role}, ${JSON.stringify(input.areas)}, ${createdBy}, ${now}, ${input.expiresAt})`.execute(trx);
      const m = (await this.get(id, trx))!;
      await this.o.audit.record({ actor: by.actor, ip: by.ip, action: 'token.create', target: `token:${id}`, after: m }, trx);
      return m;
    });
    return { token, meta };
  }

  async get(id: string, q: Querier = this.o.db.kysely): Promise<ApiToken | null> {
    const r = await one<Row>(q, sql`SELECT ${COLUMNS} FROM api_tokens WHERE id = ${id}`);
    return r ? toToken(r) : null;
  }

  async list(): Promise<ApiToken[]> {
    return (await all<Row>(this.o.db.kysely, sql`SELECT ${COLUMNS} FROM api_tokens ORDER BY created_at, id`)).map(toToken);
  }

  /** Revoke (idempotent). Throws NOT_FOUND for an unknown id. */
  async revoke(id: string, by: ChangeContext): Promise<ApiToken> {
    const r = await this.o.db.write(async (trx) => {
      const before = await this.get(id, trx);
      if (!before) throw Errors.NOT_FOUND(`Token "${id}"`);
      if (before.revokedAt !== null) return before;
      await sql`UPDATE api_tokens SET revoked_at = ${this.o.clock.now()} WHERE id = ${id}`.execute(trx);
      const after = (await this.get(id, trx))!;
      await this.o.audit.record({ actor: by.actor, ip: by.ip, action: 'token.revoke', target: `token:${id}`, before, after }, trx);
      return after;
    });
    this.cache.dropOwner(id);
    return r;
  }

  async authenticate(bearer: string): Promise<Principal | null> {
    if (!bearer.startsWith(API_TOKEN_PREFIX)) return null;
    const key = sha256hex(bearer);
    const hit = this.cache.get(key);
    if (hit) return { ...hit, areas: [...hit.areas] };
    const gen = this.cache.generation();
    const now = this.o.clock.now();
    const r = await one<Row>(this.o.db.kysely, sql`SELECT ${COLUMNS} FROM api_tokens WHERE token_hash = ${key} AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > ${now})`);
    if (!r) return null;
    await this.touch(r, now);
    const t = toToken(r);
    const p: Principal = { kind: 'token', id: t.id, role: t.role, areas: t.areas };
    this.cache.set(key, p, t.id, t.expiresAt, gen);
    return { ...p, areas: [...p.areas] };
  }

  private async touch(r: Row, now: number): Promise<void> {
    const last = Math.max(this.lastWrite.get(r.id) ?? 0, r.last_used_at ?? 0);
    if (now - last < LAST_USED_WRITE_MS) return;
    this.lastWrite.set(r.id, now);
    try {
      await sql`UPDATE api_tokens SET last_used_at = ${now} WHERE id = ${r.id}`.execute(this.o.db.kysely);
    } catch { /* best effort: a busy database must not refuse the request */ }
  }
}

/** Bearer authenticator for API tokens (added to the API's chain). */
export class ApiTokenAuthenticator implements Authenticator {
  constructor(private readonly tokens: ApiTokenStore) {}
  authenticate(bearer: string): Promise<Principal | null> {
    return this.tokens.authenticate(bearer);
  }
}

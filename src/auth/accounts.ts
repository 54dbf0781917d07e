/**
 * The account services of one Keng instance, constructible from the state
 * store, a clock and a logger (plus an area lookup): users, sessions, API
 * tokens, the login guard and the audit log. The app builds them once and
 * wires them into the API; the CLI uses them directly.
 */
import type { Config } from '../config/index.js';
import type { Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import type { Db } from '../storage/sql/index.js';
import { AuditLog } from '../audit/index.js';
import { ApiTokenStore } from './api-tokens.js';
import { LoginGuard, type LoginGuardOptions } from './login-guard.js';
import { LoginService } from './login.js';
import { PasswordHasher, type PasswordHasherOptions } from './passwords.js';
import { SessionStore } from './sessions.js';
import { AUTH_CACHE_CLUSTER_MS } from './principal-cache.js';
import { Users, type AreaLookup } from './users.js';

export interface AccountsOptions {
  /** The state store as a Db: state.db, or PostgreSQL in cluster mode (users, sessions, tokens, guard and audit log on it). */
  db: Db<unknown>;
  clock: Clock;
  logger?: Logger;
  areas: AreaLookup;
  /** Session lifetime (default 12 h, fixed from login). */
  sessionTtlMs?: number;
  passwords?: PasswordHasherOptions;
  guard?: Omit<LoginGuardOptions, 'db' | 'clock' | 'lockExempt'>;
  /**
   * How long a node reuses a successful session or API-token lookup (principal-cache.ts). Default: none on
   * the embedded store, AUTH_CACHE_CLUSTER_MS on PostgreSQL (the bound stated in docs/cluster.md).
   */
  lookupCacheMs?: number;
}

export interface Accounts {
  hasher: PasswordHasher;
  guard: LoginGuard;
  sessions: SessionStore;
  users: Users;
  tokens: ApiTokenStore;
  login: LoginService;
  audit: AuditLog;
}

export function createAccounts(o: AccountsOptions): Accounts {
  const { db, clock } = o;
  const audit = new AuditLog({ db, clock, logger: o.logger });
  const hasher = new PasswordHasher(o.passwords);
  const cacheMs = o.lookupCacheMs ?? (db.dialect === 'postgres' ? AUTH_CACHE_CLUSTER_MS : 0);
  // The guard asks Users whether an account is the last usable admin (never locked for everyone).
  let users: Users | null = null;
  const guard = new LoginGuard({ db, clock, ...o.guard, lockExempt: (u, q) => users!.isLastUsableAdmin(u, q) });
  const sessions = new SessionStore({ db, clock, ttlMs: o.sessionTtlMs, cacheMs });
  users = new Users({ db, clock, hasher, guard, sessions, areas: o.areas, audit });
  const tokens = new ApiTokenStore({ db, clock, audit, cacheMs });
  const login = new LoginService({ db, users, sessions, guard, hasher, audit });
  return { hasher, guard, sessions, users, tokens, login, audit };
}

/** The login guard's settings (config `auth`, config/README.md) in the guard's terms. */
export function guardOptions(auth: Config['auth']): NonNullable<AccountsOptions['guard']> {
  return {
    lockAfter: auth.lockAfter,
    lockMs: auth.lockSec * 1000,
    lockMaxMs: auth.lockMaxSec * 1000,
    ip: { free: auth.sourceFreeFailures, capMs: auth.sourceMaxDelaySec * 1000 },
    knownSourceMs: auth.knownSourceDays * 24 * 3_600_000,
  };
}

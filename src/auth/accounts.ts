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
import type { StateSource } from './store.js';
import { Users, type AreaLookup } from './users.js';

export interface AccountsOptions {
  state: StateSource;
  /** The state store as a Db (the audit log's; the other account stores still use `state`). */
  db: Db<unknown>;
  clock: Clock;
  logger?: Logger;
  areas: AreaLookup;
  /** Session lifetime (default 12 h, fixed from login). */
  sessionTtlMs?: number;
  passwords?: PasswordHasherOptions;
  guard?: Omit<LoginGuardOptions, 'state' | 'clock' | 'lockExempt'>;
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
  const { state, clock } = o;
  const audit = new AuditLog({ db: o.db, sqlite: o.db.dialect === 'sqlite' ? state : null, clock, logger: o.logger });
  const hasher = new PasswordHasher(o.passwords);
  // Users and sessions refer to each other (revoke on disable; principal data on lookup);
  // the guard asks Users whether an account is the last usable admin (never locked for everyone).
  let users: Users | null = null;
  const guard = new LoginGuard({ state, clock, ...o.guard, lockExempt: (u) => users!.isLastUsableAdmin(u) });
  const sessions = new SessionStore({ state, clock, ttlMs: o.sessionTtlMs, principalData: (u) => users!.principalData(u) });
  users = new Users({ state, clock, hasher, guard, sessions, areas: o.areas, audit });
  const tokens = new ApiTokenStore({ state, clock, audit });
  const login = new LoginService({ users, sessions, guard, hasher, audit });
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

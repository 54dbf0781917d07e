/**
 * POST /api/v1/auth/login as a service (docs/roles.md, "Logging in"):
 * username + password → session token, behind the LoginGuard.
 *
 *  1. guard.begin(): locked → KENG_ERR_ACCOUNT_LOCKED (423 + Retry-After
 *     until the lock ends; password NOT checked, so the right password gains
 *     nothing); inside a delay window → KENG_ERR_RATE_LIMITED (429,
 *     Retry-After). Otherwise the attempt is counted as a failure up front.
 *  2. One scrypt check: against the user's hash, or a dummy hash for an
 *     unknown username (same work, same reply: KENG_ERR_LOGIN_FAILED 401).
 *     A disabled account answers exactly like a wrong password.
 *  3. Success: the username's counter is reset, a session is created.
 *
 * Audit: auth.login, auth.login_failed, auth.lockout (actor "anonymous" for
 * failures, the user for success).
 */
import { Errors, type KengError } from '../core/errors.js';
import type { AuditRecorder } from '../audit/index.js';
import type { Db } from '../storage/sql/index.js';
import type { GuardVerdict, LoginGuard } from './login-guard.js';
import { PASSWORD_MAX_LENGTH } from './password-rules.js';
import type { PasswordHasher } from './passwords.js';
import type { SessionStore } from './sessions.js';
import type { Users } from './users.js';
import type { Principal } from './types.js';

export interface LoginResult { token: string; expiresAt: number; principal: Principal }

/** A refused login; `retryAfterSec` set for 423 and 429 (the route sends it as Retry-After). */
export type LoginError = KengError & { retryAfterSec?: number };

/** The error for a refused guard verdict: 423 while locked, 429 while waiting; both say how long. */
export function guardRefusal(v: Exclude<GuardVerdict, { allowed: true }>): LoginError {
  const err = (v.locked ? Errors.ACCOUNT_LOCKED() : Errors.RATE_LIMITED('too many failed logins; wait before trying again')) as LoginError;
  err.retryAfterSec = Math.max(1, Math.ceil(v.retryAfterMs / 1000));
  return err;
}

export interface LoginServiceOptions {
  db: Db<unknown>;
  users: Users;
  sessions: SessionStore;
  guard: LoginGuard;
  hasher: PasswordHasher;
  audit: AuditRecorder;
}

/** Usernames are compared as typed, bounded; anything longer cannot exist. */
const MAX_NAME = 64;

export class LoginService {
  constructor(private readonly o: LoginServiceOptions) {}

  async login(usernameRaw: string, password: string, ip: string): Promise<LoginResult> {
    const username = usernameRaw.slice(0, MAX_NAME + 1);
    const { guard, users, hasher, audit } = this.o;
    const verdict = await guard.begin(username, ip);
    if (!verdict.allowed) throw guardRefusal(verdict);
    const stored = username.length <= MAX_NAME ? await users.passwordHash(username) : null;
    let ok: boolean;
    if (password.length > PASSWORD_MAX_LENGTH) ok = await hasher.dummyVerify(password.slice(0, PASSWORD_MAX_LENGTH));
    else if (stored) ok = (await hasher.verify(password, stored.hash)) && !stored.disabled;
    else ok = await hasher.dummyVerify(password);

    if (!ok) {
      const { locked, failures } = await guard.fail(username, ip);
      await guard.prune();
      await audit.record({ actor: 'anonymous', ip, action: 'auth.login_failed', target: `user:${username}`, after: { failures } });
      // scope "account": locked for everyone; "address": for this address only (the last usable admin, or a known address).
      if (locked) await audit.record({ actor: 'anonymous', ip, action: 'auth.lockout', target: `user:${username}`, after: { failures, scope: locked.scope, until: locked.until } });
      throw Errors.LOGIN_FAILED();
    }
    await guard.succeed(username, ip);
    if (stored && hasher.needsRehash(stored.hash)) {
      // Raise an old hash to the current cost while we know the password (no audit: not a change of credentials).
      try { await users.rehash(username, password); } catch { /* keep the old hash */ }
    }
    const principal = await users.principalData(username);
    if (!principal) throw Errors.LOGIN_FAILED(); // deleted or disabled meanwhile
    const session = await this.o.sessions.create(username, ip);
    await audit.record({ actor: { kind: 'user', id: username }, ip, action: 'auth.login', target: `session:${session.id}`, after: { expiresAt: session.expiresAt } });
    return { token: session.token, expiresAt: session.expiresAt, principal: { kind: 'user', id: username, ...principal } };
  }

  /** Revoke the session of `token` (logout). Null when it is not a live session token. */
  async logout(token: string, ip: string): Promise<{ id: string; username: string } | null> {
    const s = await this.o.db.write(async (trx) => {
      const r = await this.o.sessions.revoke(token, trx);
      if (r) await this.o.audit.record({ actor: { kind: 'user', id: r.username }, ip, action: 'auth.logout', target: `session:${r.id}` }, trx);
      return r;
    });
    this.o.sessions.forgetCachedToken(token);
    return s;
  }
}

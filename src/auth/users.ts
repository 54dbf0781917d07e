/**
 * User accounts (OpenAPI at /docs, tag accounts; who may do what: docs/roles.md).
 * Each user has one role and one or more areas (the role applies to each
 * area's subtree; admins always have "*"). Passwords: the rules of
 * password-rules.ts, scrypt-hashed (passwords.ts). Usernames: usernames.ts.
 * No default accounts or passwords exist: the bootstrap is the admin token.
 *
 * `Users` holds the business rules shared by the HTTP routes and the CLI
 * (validation, hashing, audit); who may call what is the routes' business
 * (policy.canGrant).
 */
import { Errors, withDetails } from '../core/errors.js';
import type { Clock } from '../core/clock.js';
import type { AuditRecorder, Actor } from '../audit/index.js';
import { USERNAME_RE, type PasswordHasher } from './passwords.js';
import { assertPasswordAcceptable } from './password-rules.js';
import type { LoginGuard } from './login-guard.js';
import type { SessionStore } from './sessions.js';
import { parseAreas, stmt, type StateSource } from './store.js';
import { ALL_AREAS, ROLES, type Role } from './types.js';
import { RESERVED_USERNAMES, usernameUnavailable } from './usernames.js';

export interface User {
  username: string;
  role: Role;
  /** Area codes; ["*"] for admins. */
  areas: string[];
  disabled: boolean;
  /** When the account was locked for everyone after failed logins (ms), while that lock runs; else null. */
  lockedAt: number | null;
  /** When that lock ends by itself (ms), or null. */
  lockedUntil: number | null;
  createdAt: number;
  updatedAt: number;
  createdBy: string | null;
}

export interface NewUser { username: string; password: string; role: Role; areas: string[] }
export interface UserPatch { password?: string; role?: Role; areas?: string[]; disabled?: boolean; unlock?: boolean }

/** What Users needs to check area codes (the device registry provides it). */
export interface AreaLookup { getArea(code: string): unknown }

/** Where a change came from, for the audit log. */
export interface ChangeContext { actor: Actor | string; ip?: string | null }

/** Whether the creator may see an existing user (an operator: viewers within its areas); absent = sees all. */
export type CanSee = (u: User) => boolean;

interface UserRow {
  username: string; password_hash: string; role: Role; areas_json: string; disabled: number;
  created_at: number; updated_at: number; created_by: string | null;
}

export interface UsersOptions {
  state: StateSource;
  clock: Clock;
  hasher: PasswordHasher;
  guard: LoginGuard;
  sessions: SessionStore;
  areas: AreaLookup;
  audit: AuditRecorder;
}

export class Users {
  constructor(private readonly o: UsersOptions) {}

  /** Validates username, role, areas; returns the areas to store. */
  normaliseAreas(role: Role, areas: readonly string[]): string[] {
    if (role === 'admin') return [ALL_AREAS];
    const uniq = [...new Set(areas)];
    if (uniq.length === 0) throw withDetails(Errors.VALIDATION('areas: at least one area for this role'), [{ in: 'body', field: 'areas', message: 'at least one area' }]);
    if (uniq.includes(ALL_AREAS)) return [ALL_AREAS];
    const missing = uniq.filter((c) => !this.o.areas.getArea(c));
    if (missing.length) throw Errors.UNPROCESSABLE(`area${missing.length > 1 ? 's' : ''} ${missing.map((c) => `"${c}"`).join(', ')} do${missing.length > 1 ? '' : 'es'} not exist`);
    return uniq;
  }

  get(username: string): User | null {
    const r = stmt(this.o.state, 'SELECT * FROM users WHERE username = ?').get(username) as UserRow | undefined;
    return r ? this.toUser(r, this.o.guard.accountLock(r.username)) : null;
  }

  list(): User[] {
    const locked = this.o.guard.lockedMap();
    return (stmt(this.o.state, 'SELECT * FROM users ORDER BY username').all() as UserRow[]).map((r) => this.toUser(r, locked.get(r.username) ?? null));
  }

  /**
   * Whether locking this account would leave no admin account that can log
   * in: it is an enabled admin and every other enabled admin is locked. The
   * login guard then never locks it for everyone (docs/roles.md).
   */
  isLastUsableAdmin(username: string): boolean {
    const admins = stmt(this.o.state, "SELECT username FROM users WHERE role = 'admin' AND disabled = 0").pluck().all() as string[];
    if (!admins.includes(username)) return false;
    const locked = this.o.guard.lockedMap();
    return admins.every((a) => a === username || locked.has(a));
  }

  /** The stored password hash (for login only). */
  passwordHash(username: string): { hash: string; disabled: boolean } | null {
    const r = stmt(this.o.state, 'SELECT password_hash, disabled FROM users WHERE username = ?').get(username) as { password_hash: string; disabled: number } | undefined;
    return r ? { hash: r.password_hash, disabled: r.disabled === 1 } : null;
  }

  /**
   * Every check that does not depend on who else exists comes first, so a
   * taken name is only ever told apart from a free one by the last step
   * (taken(), which says as little as `canSee` asks).
   */
  async create(input: NewUser, by: ChangeContext, canSee?: CanSee): Promise<User> {
    if (!USERNAME_RE.test(input.username)) throw Errors.VALIDATION('username must match ^[a-z0-9._-]{3,64}$');
    if (!ROLES.includes(input.role)) throw Errors.VALIDATION(`role must be one of ${ROLES.join(', ')}`);
    assertPasswordAcceptable(input.username, input.password);
    const areas = this.normaliseAreas(input.role, input.areas);
    if (RESERVED_USERNAMES.has(input.username)) throw this.unavailable(input.username, by);
    const existing = this.get(input.username);
    if (existing) throw this.taken(existing, by, canSee);
    const hash = await this.o.hasher.hash(input.password);
    const now = this.o.clock.now();
    const db = this.o.state.db;
    const tx = db.transaction(() => {
      try {
        stmt(this.o.state, `INSERT INTO users (username, password_hash, role, areas_json, disabled, created_at, updated_at, created_by)
          VALUES (?, ?, ?, ?, 0, ?, ?, ?)`).run(input.username, hash, input.role, JSON.stringify(areas), now, now, actorOf(by));
      } catch (err) {
        const raced = (err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY' ? this.get(input.username) : null;
        if (raced) throw this.taken(raced, by, canSee);
        throw err;
      }
      this.o.guard.forget(input.username); // failures recorded against the name before it existed
      const user = this.get(input.username)!;
      this.o.audit.recordSync({ actor: by.actor, ip: by.ip, action: 'user.create', target: `user:${user.username}`, after: auditView(user) });
      return user;
    });
    return tx.immediate();
  }

  async update(username: string, patch: UserPatch, by: ChangeContext): Promise<User> {
    const before = this.get(username);
    if (!before) throw Errors.NOT_FOUND(`User "${username}"`);
    const role = patch.role ?? before.role;
    const areas = patch.areas !== undefined || patch.role !== undefined ? this.normaliseAreas(role, patch.areas ?? before.areas) : before.areas;
    if (patch.password !== undefined) assertPasswordAcceptable(username, patch.password);
    const hash = patch.password !== undefined ? await this.o.hasher.hash(patch.password) : null;
    const tx = this.o.state.db.transaction(() => {
      const current = this.get(username);
      if (!current) throw Errors.NOT_FOUND(`User "${username}"`);
      const disabled = patch.disabled ?? current.disabled;
      stmt(this.o.state, `UPDATE users SET role = ?, areas_json = ?, disabled = ?, updated_at = ?,
        password_hash = COALESCE(?, password_hash) WHERE username = ?`)
        .run(role, JSON.stringify(areas), disabled ? 1 : 0, this.o.clock.now(), hash, username);
      // A new password or a disabled account ends every session at once, and the addresses known from them.
      if (hash !== null || (disabled && !current.disabled)) {
        this.o.sessions.revokeAllFor(username);
        this.o.guard.forgetKnownSources(username);
      }
      const wasLocked = patch.unlock ? this.o.guard.unlock(username) : false;
      const after = this.get(username)!;
      this.o.audit.recordSync({
        actor: by.actor, ip: by.ip, action: 'user.update', target: `user:${username}`,
        before: auditView(current), after: { ...auditView(after), ...(hash !== null ? { passwordChanged: true } : {}) },
      });
      if (wasLocked) {
        this.o.audit.recordSync({ actor: by.actor, ip: by.ip, action: 'user.unlock', target: `user:${username}`, before: lockView(current), after: { locked: false } });
      }
      return after;
    });
    return tx.immediate();
  }

  /**
   * Admin unlock (also `keng users unlock`): ends the account's lock and the
   * locks of single addresses on it, and clears its failure counts. Returns
   * whether any lock was running.
   */
  unlock(username: string, by: ChangeContext): boolean {
    const tx = this.o.state.db.transaction(() => {
      const before = this.get(username);
      if (!before) throw Errors.NOT_FOUND(`User "${username}"`);
      const was = this.o.guard.unlock(username);
      this.o.audit.recordSync({ actor: by.actor, ip: by.ip, action: 'user.unlock', target: `user:${username}`, before: { ...lockView(before), anyLock: was }, after: { locked: false } });
      return was;
    });
    return tx.immediate();
  }

  delete(username: string, by: ChangeContext): void {
    const tx = this.o.state.db.transaction(() => {
      const before = this.get(username);
      if (!before) throw Errors.NOT_FOUND(`User "${username}"`);
      stmt(this.o.state, 'DELETE FROM users WHERE username = ?').run(username); // sessions cascade
      this.o.guard.forget(username);
      this.o.audit.recordSync({ actor: by.actor, ip: by.ip, action: 'user.delete', target: `user:${username}`, before: auditView(before) });
    });
    tx.immediate();
  }

  /** Replace the hash with one of the current cost (login, when the stored one is older). */
  async rehash(username: string, password: string): Promise<void> {
    const hash = await this.o.hasher.hash(password);
    stmt(this.o.state, 'UPDATE users SET password_hash = ? WHERE username = ?').run(hash, username);
  }

  /** Role and areas of an enabled user (the session authenticator's view). */
  principalData(username: string): { role: Role; areas: string[] } | null {
    const r = stmt(this.o.state, 'SELECT role, areas_json, disabled FROM users WHERE username = ?').get(username) as { role: Role; areas_json: string; disabled: number } | undefined;
    if (!r || r.disabled) return null;
    return { role: r.role, areas: r.role === 'admin' ? [ALL_AREAS] : parseAreas(r.areas_json) };
  }

  /** The refusal for a taken name: which one depends on whether the caller may see that user. */
  private taken(existing: User, by: ChangeContext, canSee?: CanSee): Error {
    return !canSee || canSee(existing) ? Errors.USER_EXISTS(existing.username) : this.unavailable(existing.username, by);
  }

  /** The generic refusal (reserved, or taken out of sight); audited without saying which, so probing shows. */
  private unavailable(username: string, by: ChangeContext): Error {
    this.o.audit.recordSync({ actor: by.actor, ip: by.ip, action: 'user.create_refused', target: `user:${username}`, after: { code: 'KENG_ERR_USERNAME_UNAVAILABLE' } });
    return usernameUnavailable(username);
  }

  private toUser(r: UserRow, lock: { lockedAt: number; lockedUntil: number } | null): User {
    return {
      username: r.username, role: r.role, areas: r.role === 'admin' ? [ALL_AREAS] : parseAreas(r.areas_json),
      disabled: r.disabled === 1, lockedAt: lock?.lockedAt ?? null, lockedUntil: lock?.lockedUntil ?? null,
      createdAt: r.created_at, updatedAt: r.updated_at, createdBy: r.created_by,
    };
  }
}

function actorOf(by: ChangeContext): string {
  return typeof by.actor === 'string' ? by.actor : `${by.actor.kind}:${by.actor.id}`;
}

/** A user's lock, for the audit log. */
function lockView(u: User): Record<string, unknown> {
  return { locked: u.lockedAt !== null, lockedAt: u.lockedAt, lockedUntil: u.lockedUntil };
}

/** What the audit log keeps of a user. */
function auditView(u: User): Record<string, unknown> {
  return { username: u.username, role: u.role, areas: u.areas, disabled: u.disabled, locked: u.lockedAt !== null };
}

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
import { sql } from 'kysely';
import { Errors, withDetails } from '../core/errors.js';
import type { Clock } from '../core/clock.js';
import type { AuditRecorder, Actor } from '../audit/index.js';
import type { Db } from '../storage/sql/index.js';
import { USERNAME_RE, type PasswordHasher } from './passwords.js';
import { assertPasswordAcceptable } from './password-rules.js';
import type { LoginGuard } from './login-guard.js';
import type { SessionStore } from './sessions.js';
import { all, one, parseAreas, type Querier } from './store.js';
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
  username: string; role: Role; areas_json: string; disabled: number;
  created_at: number; updated_at: number; created_by: string | null;
}

/** Every column but the password hash, which only passwordHash() reads. */
const COLUMNS = sql`username, role, areas_json, disabled, created_at, updated_at, created_by`;

export interface UsersOptions {
  db: Db<unknown>;
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

  async get(username: string, q: Querier = this.o.db.kysely): Promise<User | null> {
    const r = await one<UserRow>(q, sql`SELECT ${COLUMNS} FROM users WHERE username = ${username}`);
    return r ? this.toUser(r, await this.o.guard.accountLock(r.username, q)) : null;
  }

  async list(): Promise<User[]> {
    const q = this.o.db.kysely;
    const rows = await all<UserRow>(q, sql`SELECT ${COLUMNS} FROM users ORDER BY username`);
    const locked = await this.o.guard.lockedMap(q);
    return rows.map((r) => this.toUser(r, locked.get(r.username) ?? null));
  }

  /**
   * Whether locking this account would leave no admin account that can log
   * in: it is an enabled admin and every other enabled admin is locked. The
   * login guard then never locks it for everyone (docs/roles.md). Called
   * inside the guard's transaction: `q` is its trx.
   */
  async isLastUsableAdmin(username: string, q: Querier = this.o.db.kysely): Promise<boolean> {
    const admins = (await all<{ username: string }>(q, sql`SELECT username FROM users WHERE role = 'admin' AND disabled = 0 ORDER BY username`)).map((r) => r.username);
    if (!admins.includes(username)) return false;
    const locked = await this.o.guard.lockedMap(q);
    return admins.every((a) => a === username || locked.has(a));
  }

  /** The stored password hash (for login only). */
  async passwordHash(username: string): Promise<{ hash: string; disabled: boolean } | null> {
    const r = await one<{ password_hash: string; disabled: number }>(this.o.db.kysely, sql`SELECT password_hash, disabled FROM users WHERE username = ${username}`);
    return r ? { hash: r.password_hash, disabled: Number(r.disabled) === 1 } : null;
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
    if (RESERVED_USERNAMES.has(input.username)) throw await this.unavailable(input.username, by);
    const existing = await this.get(input.username);
    if (existing) throw await this.taken(existing, by, canSee);
    const hash = await this.o.hasher.hash(input.password);
    const now = this.o.clock.now();
    const user = await this.o.db.write(async (trx) => {
      const inserted = await one(trx, sql`INSERT INTO users (username, password_hash, role, areas_json, disabled, created_at, updated_at, created_by)
        VALUES (${input.username}, ${hash}, ${input.role}, ${JSON.stringify(areas)}, 0, ${now}, ${now}, ${actorOf(by)})
        ON CONFLICT (username) DO NOTHING RETURNING username`);
      if (!inserted) return null; // created meanwhile (another request, node or the CLI)
      await this.o.guard.forget(input.username, trx); // failures recorded against the name before it existed
      const u = (await this.get(input.username, trx))!;
      await this.o.audit.record({ actor: by.actor, ip: by.ip, action: 'user.create', target: `user:${u.username}`, after: auditView(u) }, trx);
      return u;
    });
    if (user) return user;
    const raced = await this.get(input.username);
    throw raced ? await this.taken(raced, by, canSee) : await this.unavailable(input.username, by);
  }

  async update(username: string, patch: UserPatch, by: ChangeContext): Promise<User> {
    const before = await this.get(username);
    if (!before) throw Errors.NOT_FOUND(`User "${username}"`);
    const role = patch.role ?? before.role;
    const areas = patch.areas !== undefined || patch.role !== undefined ? this.normaliseAreas(role, patch.areas ?? before.areas) : before.areas;
    if (patch.password !== undefined) assertPasswordAcceptable(username, patch.password);
    const hash = patch.password !== undefined ? await this.o.hasher.hash(patch.password) : null;
    const after = await this.o.db.write(async (trx) => {
      const current = await this.get(username, trx);
      if (!current) throw Errors.NOT_FOUND(`User "${username}"`);
      const disabled = patch.disabled ?? current.disabled;
      await sql`UPDATE users SET role = ${role}, areas_json = ${JSON.stringify(areas)}, disabled = ${disabled ? 1 : 0}, updated_at = ${this.o.clock.now()},
        password_hash = COALESCE(${hash}, password_hash) WHERE username = ${username}`.execute(trx);
      // A new password or a disabled account ends every session at once, and the addresses known from them.
      if (hash !== null || (disabled && !current.disabled)) {
        await this.o.sessions.revokeAllFor(username, trx);
        await this.o.guard.forgetKnownSources(username, trx);
      }
      const wasLocked = patch.unlock ? await this.o.guard.unlock(username, trx) : false;
      const a = (await this.get(username, trx))!;
      await this.o.audit.record({
        actor: by.actor, ip: by.ip, action: 'user.update', target: `user:${username}`,
        before: auditView(current), after: { ...auditView(a), ...(hash !== null ? { passwordChanged: true } : {}) },
      }, trx);
      if (wasLocked) {
        await this.o.audit.record({ actor: by.actor, ip: by.ip, action: 'user.unlock', target: `user:${username}`, before: lockView(current), after: { locked: false } }, trx);
      }
      return a;
    });
    // Role, areas, disabled or sessions may have changed: this node's cached lookups of the user end now.
    this.o.sessions.forgetCached(username);
    return after;
  }

  /**
   * Admin unlock (also `keng users unlock`): ends the account's lock and the
   * locks of single addresses on it, and clears its failure counts. Returns
   * whether any lock was running.
   */
  unlock(username: string, by: ChangeContext): Promise<boolean> {
    return this.o.db.write(async (trx) => {
      const before = await this.get(username, trx);
      if (!before) throw Errors.NOT_FOUND(`User "${username}"`);
      const was = await this.o.guard.unlock(username, trx);
      await this.o.audit.record({ actor: by.actor, ip: by.ip, action: 'user.unlock', target: `user:${username}`, before: { ...lockView(before), anyLock: was }, after: { locked: false } }, trx);
      return was;
    });
  }

  async delete(username: string, by: ChangeContext): Promise<void> {
    await this.o.db.write(async (trx) => {
      const before = await this.get(username, trx);
      if (!before) throw Errors.NOT_FOUND(`User "${username}"`);
      await sql`DELETE FROM users WHERE username = ${username}`.execute(trx); // sessions cascade
      await this.o.guard.forget(username, trx);
      await this.o.audit.record({ actor: by.actor, ip: by.ip, action: 'user.delete', target: `user:${username}`, before: auditView(before) }, trx);
    });
    this.o.sessions.forgetCached(username);
  }

  /** Replace the hash with one of the current cost (login, when the stored one is older). */
  async rehash(username: string, password: string): Promise<void> {
    const hash = await this.o.hasher.hash(password);
    await sql`UPDATE users SET password_hash = ${hash} WHERE username = ${username}`.execute(this.o.db.kysely);
  }

  /** Role and areas of an enabled user (the login's view). */
  async principalData(username: string): Promise<{ role: Role; areas: string[] } | null> {
    const r = await one<{ role: Role; areas_json: string; disabled: number }>(this.o.db.kysely, sql`SELECT role, areas_json, disabled FROM users WHERE username = ${username}`);
    if (!r || Number(r.disabled)) return null;
    return { role: r.role, areas: r.role === 'admin' ? [ALL_AREAS] : parseAreas(r.areas_json) };
  }

  /** The refusal for a taken name: which one depends on whether the caller may see that user. */
  private async taken(existing: User, by: ChangeContext, canSee?: CanSee): Promise<Error> {
    return !canSee || canSee(existing) ? Errors.USER_EXISTS(existing.username) : this.unavailable(existing.username, by);
  }

  /** The generic refusal (reserved, or taken out of sight); audited without saying which, so probing shows. */
  private async unavailable(username: string, by: ChangeContext): Promise<Error> {
    await this.o.audit.record({ actor: by.actor, ip: by.ip, action: 'user.create_refused', target: `user:${username}`, after: { code: 'KENG_ERR_USERNAME_UNAVAILABLE' } });
    return usernameUnavailable(username);
  }

  private toUser(r: UserRow, lock: { lockedAt: number; lockedUntil: number } | null): User {
    return {
      username: r.username, role: r.role, areas: r.role === 'admin' ? [ALL_AREAS] : parseAreas(r.areas_json),
      disabled: Number(r.disabled) === 1, lockedAt: lock?.lockedAt ?? null, lockedUntil: lock?.lockedUntil ?? null,
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

/**
 * The accounts' tables on PostgreSQL (cluster mode): users, sessions, API tokens and the login
 * guard, the same columns as the embedded store's (src/storage/state/migrations.ts "users,
 * sessions, api_tokens, login_failures" and auth/migrations.ts, the login guard). Times are epoch
 * ms (bigint); `disabled` stays 0/1 (smallint) so both dialects read the same values.
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const AUTH_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'users, sessions, api_tokens, login_guard, login_known_sources',
  sqlite: [],
  postgres: [
    `CREATE TABLE users (
      username text PRIMARY KEY CHECK (length(username) BETWEEN 3 AND 64),
      password_hash text NOT NULL,
      role text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer', 'service')),
      areas_json text NOT NULL DEFAULT '[]',
      disabled smallint NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
      created_at bigint NOT NULL,
      updated_at bigint NOT NULL,
      created_by text)`,
    `CREATE TABLE sessions (
      id text PRIMARY KEY,
      token_hash text NOT NULL UNIQUE,
      username text NOT NULL REFERENCES users(username) ON DELETE CASCADE,
      created_at bigint NOT NULL,
      expires_at bigint NOT NULL,
      ip text,
      revoked_at bigint)`,
    'CREATE INDEX sessions_username ON sessions (username)',
    'CREATE INDEX sessions_expires_at ON sessions (expires_at)',
    `CREATE TABLE api_tokens (
      id text PRIMARY KEY,
      name text NOT NULL,
      token_hash text NOT NULL UNIQUE,
      role text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer', 'service')),
      areas_json text NOT NULL DEFAULT '[]',
      created_by text NOT NULL,
      created_at bigint NOT NULL,
      expires_at bigint,
      last_used_at bigint,
      revoked_at bigint)`,
    `CREATE TABLE login_guard (
      kind text NOT NULL CHECK (kind IN ('user', 'ip', 'pair')),
      username text NOT NULL DEFAULT '',
      ip text NOT NULL DEFAULT '',
      failures bigint NOT NULL DEFAULT 0,
      last_failure_at bigint NOT NULL,
      locked_at bigint,
      locked_until bigint,
      locks bigint NOT NULL DEFAULT 0,
      PRIMARY KEY (kind, username, ip))`,
    `CREATE TABLE login_known_sources (
      username text NOT NULL,
      ip text NOT NULL,
      last_success_at bigint NOT NULL,
      PRIMARY KEY (username, ip))`,
  ],
}];

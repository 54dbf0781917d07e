/**
 * State-store migration of the login guard (registered in src/migrations.ts,
 * which gives it its version number).
 */
import type { Migration } from '../storage/state/migrations.js';

export const LOGIN_GUARD_MIGRATION: Migration = {
  version: 110,
  name: 'login guard: temporary locks, per address and per account+address, known addresses',
  up: `
    -- Failed logins (src/auth/login-guard.ts), counted three ways:
    --   kind 'user': per username (ip = ''), from any address;
    --   kind 'ip':   per client address (username = ''), across usernames;
    --   kind 'pair': per username from one address.
    -- A lock is temporary: locked_until; locks = locks in a row (each lasts
    -- twice as long as the one before, up to a cap). Unknown usernames are
    -- kept exactly like real ones, so replies do not reveal which exist.
    CREATE TABLE login_guard (
      kind            TEXT NOT NULL CHECK (kind IN ('user', 'ip', 'pair')),
      username        TEXT NOT NULL DEFAULT '',
      ip              TEXT NOT NULL DEFAULT '',
      failures        INTEGER NOT NULL DEFAULT 0,
      last_failure_at INTEGER NOT NULL,
      locked_at       INTEGER,
      locked_until    INTEGER,
      locks           INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (kind, username, ip)
    ) STRICT;
    -- Locks of the old table were until an admin unlocked them: they become
    -- temporary ones that end 15 minutes after the upgrade.
    INSERT INTO login_guard (kind, username, ip, failures, last_failure_at, locked_at, locked_until, locks)
      SELECT kind,
             CASE kind WHEN 'user' THEN key ELSE '' END,
             CASE kind WHEN 'ip' THEN key ELSE '' END,
             failures, last_failure_at, locked_at,
             CASE WHEN locked_at IS NULL THEN NULL ELSE unixepoch() * 1000 + 900000 END,
             CASE WHEN locked_at IS NULL THEN 0 ELSE 1 END
      FROM login_failures;
    DROP TABLE login_failures;

    -- Addresses a user logged in from successfully (recently): they are not
    -- held up by failures other addresses cause on the account.
    CREATE TABLE login_known_sources (
      username        TEXT NOT NULL,
      ip              TEXT NOT NULL,
      last_success_at INTEGER NOT NULL,
      PRIMARY KEY (username, ip)
    ) STRICT;
  `,
};

/**
 * Versioned schema migrations of the state store (<dataDir>/state.db).
 *
 * Rules: append only. A migration, once released, is never edited or
 * reordered; later changes add a new entry with the next version. Each
 * migration runs in its own transaction together with its row in
 * `schema_migrations`, so a failed migration leaves the previous version.
 */
export interface Migration {
  /** 1, 2, 3, ... strictly increasing, no gaps. */
  version: number;
  /** Short description, recorded in schema_migrations.name. */
  name: string;
  /** SQL executed with db.exec() (may contain several statements). */
  up: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'areas, devices, device_state',
    up: `
      -- Areas: a tree province → commune → village (OpenAPI at /docs, tag areas:
      -- two-tier local government since July 2025, no districts).
      CREATE TABLE areas (
        code       TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        level      TEXT NOT NULL CHECK (level IN ('province', 'commune', 'village')),
        parent     TEXT REFERENCES areas(code) ON DELETE RESTRICT,
        created_at INTEGER NOT NULL,
        CHECK ((level = 'province') = (parent IS NULL))
      ) STRICT;
      CREATE INDEX areas_parent ON areas(parent);

      -- Devices. Only hashes of the secret and access token are stored;
      -- token_lookup = sha256(token) finds the row, token_hash (scrypt) verifies it.
      CREATE TABLE devices (
        id           TEXT PRIMARY KEY,
        kind         TEXT NOT NULL CHECK (kind IN ('sensor', 'speaker', 'gateway')),
        name         TEXT NOT NULL,
        area         TEXT NOT NULL REFERENCES areas(code) ON DELETE RESTRICT,
        lat          REAL CHECK (lat IS NULL OR (lat BETWEEN -90 AND 90)),
        lon          REAL CHECK (lon IS NULL OR (lon BETWEEN -180 AND 180)),
        model        TEXT,
        enabled      INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        secret_hash  TEXT NOT NULL,
        token_lookup TEXT NOT NULL UNIQUE,
        token_hash   TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        CHECK ((lat IS NULL) = (lon IS NULL))
      ) STRICT;
      CREATE INDEX devices_area ON devices(area);

      -- Presence, attributes and latest values: a cache of what the registry
      -- keeps in memory, flushed every few seconds and at stop.
      CREATE TABLE device_state (
        device_id       TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
        online          INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
        last_seen       INTEGER,
        attributes_json TEXT NOT NULL DEFAULT '{}',
        latest_json     TEXT NOT NULL DEFAULT '{}'
      ) STRICT;
    `,
  },
  {
    version: 2,
    name: 'users, sessions, api_tokens, login_failures',
    up: `
      -- Accounts (docs/roles.md, OpenAPI at /docs, tag accounts; src/auth/users.ts).
      -- password_hash: scrypt (src/auth/passwords.ts); never returned or logged.
      -- areas_json: JSON array of area codes, ["*"] for admins.
      CREATE TABLE users (
        username      TEXT PRIMARY KEY CHECK (length(username) BETWEEN 3 AND 64),
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer', 'service')),
        areas_json    TEXT NOT NULL DEFAULT '[]',
        disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        created_by    TEXT
      ) STRICT;

      -- Login sessions (src/auth/sessions.ts). token_hash = sha256 hex of the
      -- opaque 256-bit token; the token itself is never stored.
      CREATE TABLE sessions (
        id           TEXT PRIMARY KEY,
        token_hash   TEXT NOT NULL UNIQUE,
        username     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        ip           TEXT,
        revoked_at   INTEGER
      ) STRICT;
      CREATE INDEX sessions_username ON sessions(username);
      CREATE INDEX sessions_expires_at ON sessions(expires_at);

      -- API tokens for machines such as the IOC (src/auth/api-tokens.ts).
      CREATE TABLE api_tokens (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        token_hash   TEXT NOT NULL UNIQUE,
        role         TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer', 'service')),
        areas_json   TEXT NOT NULL DEFAULT '[]',
        created_by   TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        last_used_at INTEGER,
        revoked_at   INTEGER
      ) STRICT;

      -- Failed logins per username and per client IP (src/auth/login-guard.ts):
      -- growing delay, and lockout of a username (locked_at) until an admin unlocks.
      -- Kept for unknown usernames too, so they behave exactly like real ones.
      CREATE TABLE login_failures (
        kind            TEXT NOT NULL CHECK (kind IN ('user', 'ip')),
        key             TEXT NOT NULL,
        failures        INTEGER NOT NULL DEFAULT 0,
        last_failure_at INTEGER NOT NULL,
        locked_at       INTEGER,
        PRIMARY KEY (kind, key)
      ) STRICT;
    `,
  },
  {
    version: 3,
    name: 'audit_log',
    up: `
      -- Append-only, hash-chained audit log (src/auth/audit.ts):
      -- hash = sha256(prev_hash || canonical JSON of the row); the first row's
      -- prev_hash is 64 zeros. audit_head holds the newest seq and hash so that
      -- a truncated tail shows too.
      CREATE TABLE audit_log (
        seq         INTEGER PRIMARY KEY,
        at          INTEGER NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        target      TEXT,
        ip          TEXT,
        before_json TEXT,
        after_json  TEXT,
        prev_hash   TEXT NOT NULL,
        hash        TEXT NOT NULL
      ) STRICT;
      CREATE INDEX audit_log_at ON audit_log(at);
      CREATE INDEX audit_log_actor ON audit_log(actor, seq);
      CREATE INDEX audit_log_action ON audit_log(action, seq);
      CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash TEXT NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 4,
    name: 'audit_log key_id',
    up: `
      -- The keyed audit chain (src/audit/chain.ts, docs/audit.md): key_id NULL is a
      -- link of the first rule, hash = sha256(prev_hash || canonical JSON);
      -- key_id set is HMAC-SHA256 with the audit key, which is kept outside this
      -- database, and key_id (a fingerprint of that key, never the key) names it.
      -- Rows written before this migration keep their sha256 links.
      ALTER TABLE audit_log ADD COLUMN key_id TEXT;
      -- Where the keyed part starts (MIN(seq) of the keyed rows), without a scan.
      CREATE INDEX audit_log_keyed ON audit_log(seq) WHERE key_id IS NOT NULL;
    `,
  },
  {
    version: 5,
    name: 'devices: tombstones of deleted ids, history_from',
    up: `
      -- A deleted device's id may be registered again (ids are printed on hardware), but the new
      -- device must never show the old one's readings, which stay in the telemetry store: the
      -- tombstone remembers when the id was last deleted, and the new device's history starts after it.
      CREATE TABLE device_tombstones (
        id         TEXT PRIMARY KEY,
        deleted_at INTEGER NOT NULL
      ) STRICT;
      ALTER TABLE devices ADD COLUMN history_from INTEGER;
    `,
  },
  {
    version: 6,
    name: 'devices: purges of deleted devices\' readings',
    up: `
      -- Purges of deleted devices' readings (telemetry.onDeviceDelete = 'purge', or
      -- "keng devices purge"): one row per device id still to purge, written in the
      -- same transaction as the device's deletion and its tombstone, so a purge is
      -- never forgotten (a crash, a restart, InfluxDB down: the server resumes it,
      -- src/devices/purger.ts) and the row is deleted only once every store is clean.
      --  - stage: 'local' (embedded store, InfluxDB queue, dead letters) then 'remote' (InfluxDB itself).
      --  - deleted_at: the tombstone's time; a device registered again under the id
      --    keeps what it stores from then on (only older readings are removed).
      --  - removed_json: what was removed so far, per place (for the audit entry at the end).
      --  - next_at, attempts, last_error: retries with back-off while a store is unreachable.
      CREATE TABLE device_purges (
        device_id    TEXT PRIMARY KEY,
        deleted_at   INTEGER NOT NULL,
        requested_at INTEGER NOT NULL,
        requested_by TEXT NOT NULL,
        stage        TEXT NOT NULL DEFAULT 'local' CHECK (stage IN ('local', 'remote')),
        removed_json TEXT NOT NULL DEFAULT '{}',
        next_at      INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT
      ) STRICT;
    `,
  },
];

/** Highest schema version this code knows. */
export function latestVersion(migrations: readonly Migration[] = MIGRATIONS): number {
  return migrations.reduce((max, m) => Math.max(max, m.version), 0);
}

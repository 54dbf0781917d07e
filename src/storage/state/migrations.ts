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
      -- Areas: a tree province → commune → village (spec http-api.md "Areas":
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
];

/** Highest schema version this code knows. */
export function latestVersion(migrations: readonly Migration[] = MIGRATIONS): number {
  return migrations.reduce((max, m) => Math.max(max, m.version), 0);
}

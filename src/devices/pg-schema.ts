/**
 * The device registry's tables on PostgreSQL (cluster mode, scope 'devices'): the same columns as
 * the embedded store's (src/storage/state/migrations.ts "areas, devices, device_state", tombstones,
 * purges; provisioning-repo.ts), times as epoch ms (bigint), 0/1 flags as smallint so both dialects
 * read the same values.
 *
 * `registry_version` has one row, bumped by every write transaction of the registry (areas, devices,
 * credentials): each node polls it (registry.ts) and reloads its caches when it moved. The bump also
 * queues registry writes of all nodes one after the other (row lock until commit), which keeps the
 * version order equal to the commit order.
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const DEVICES_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'areas, devices, device_state, device_tombstones, device_purges, provisioning_keys, registry_version',
  sqlite: [],
  postgres: [
    `CREATE TABLE areas (
      code text PRIMARY KEY,
      name text NOT NULL,
      level text NOT NULL CHECK (level IN ('province', 'commune', 'village')),
      parent text REFERENCES areas(code) ON DELETE RESTRICT,
      created_at bigint NOT NULL,
      CHECK ((level = 'province') = (parent IS NULL)))`,
    'CREATE INDEX areas_parent ON areas (parent)',
    `CREATE TABLE devices (
      id text PRIMARY KEY,
      kind text NOT NULL CHECK (kind IN ('sensor', 'speaker', 'gateway')),
      name text NOT NULL,
      area text NOT NULL REFERENCES areas(code) ON DELETE RESTRICT,
      lat double precision CHECK (lat IS NULL OR (lat BETWEEN -90 AND 90)),
      lon double precision CHECK (lon IS NULL OR (lon BETWEEN -180 AND 180)),
      model text,
      enabled smallint NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
      secret_hash text NOT NULL,
      token_lookup text NOT NULL UNIQUE,
      token_hash text NOT NULL,
      created_at bigint NOT NULL,
      history_from bigint,
      CHECK ((lat IS NULL) = (lon IS NULL)))`,
    'CREATE INDEX devices_area ON devices (area)',
    `CREATE TABLE device_state (
      device_id text PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
      online smallint NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
      last_seen bigint,
      attributes_json text NOT NULL DEFAULT '{}',
      latest_json text NOT NULL DEFAULT '{}')`,
    'CREATE TABLE device_tombstones (id text PRIMARY KEY, deleted_at bigint NOT NULL)',
    `CREATE TABLE device_purges (
      device_id text PRIMARY KEY,
      deleted_at bigint NOT NULL,
      requested_at bigint NOT NULL,
      requested_by text NOT NULL,
      stage text NOT NULL DEFAULT 'local' CHECK (stage IN ('local', 'remote')),
      removed_json text NOT NULL DEFAULT '{}',
      next_at bigint NOT NULL,
      attempts integer NOT NULL DEFAULT 0,
      last_error text)`,
    `CREATE TABLE provisioning_keys (
      id text PRIMARY KEY,
      key text NOT NULL UNIQUE,
      secret_hash text NOT NULL,
      area text NOT NULL REFERENCES areas(code) ON DELETE RESTRICT,
      kind text NOT NULL CHECK (kind IN ('sensor', 'speaker', 'gateway')),
      model text,
      label text,
      max_devices integer CHECK (max_devices IS NULL OR max_devices >= 1),
      used integer NOT NULL DEFAULT 0 CHECK (used >= 0),
      expires_at bigint,
      created_by text NOT NULL,
      created_at bigint NOT NULL,
      revoked_at bigint)`,
    'CREATE INDEX provisioning_keys_area ON provisioning_keys (area)',
    'CREATE TABLE registry_version (id smallint PRIMARY KEY CHECK (id = 1), v bigint NOT NULL)',
    'INSERT INTO registry_version (id, v) VALUES (1, 0)',
  ],
}];

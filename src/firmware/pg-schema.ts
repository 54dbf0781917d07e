/**
 * The firmware tables on PostgreSQL (cluster mode): the same tables and columns as
 * the embedded store's (migration.ts), so every node sees the same packages,
 * rollouts, assignments and device states.
 *
 * Unlike the embedded store, firmware_assignments and firmware_device_state have
 * no foreign key to devices: this scope is migrated before the registry's
 * ('devices', src/migrations.ts). The service deletes a deleted
 * device's rows itself (service.ts), where SQLite's ON DELETE CASCADE does it.
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const FIRMWARE_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'firmware packages, rollouts, assignments and device states',
  sqlite: [],
  postgres: [
    `CREATE TABLE firmware_packages (
      id text PRIMARY KEY, title text NOT NULL, version text NOT NULL, model text, size bigint NOT NULL CHECK (size > 0),
      checksum_algorithm text NOT NULL CHECK (checksum_algorithm IN ('SHA256', 'SHA384', 'SHA512', 'MD5', 'CRC32')),
      checksum text NOT NULL, sha256 text NOT NULL CHECK (length(sha256) = 64), created_at bigint NOT NULL, created_by text,
      UNIQUE (title, version))`,
    `CREATE TABLE firmware_rollouts (
      id text PRIMARY KEY, package_id text NOT NULL REFERENCES firmware_packages(id) ON DELETE RESTRICT,
      percent integer NOT NULL CHECK (percent BETWEEN 1 AND 100),
      devices_json text NOT NULL CHECK ((devices_json::jsonb) IS NOT NULL), first_count integer NOT NULL,
      areas_json text NOT NULL CHECK ((areas_json::jsonb) IS NOT NULL), stage text NOT NULL CHECK (stage IN ('first', 'all')),
      created_at bigint NOT NULL, created_by text, completed_at bigint)`,
    `CREATE TABLE firmware_assignments (
      device_id text PRIMARY KEY, package_id text NOT NULL REFERENCES firmware_packages(id) ON DELETE RESTRICT,
      rollout_id text REFERENCES firmware_rollouts(id) ON DELETE SET NULL, assigned_at bigint NOT NULL)`,
    'CREATE INDEX firmware_assignments_package ON firmware_assignments(package_id)',
    `CREATE TABLE firmware_device_state (
      device_id text PRIMARY KEY, state text, error text, current_title text, current_version text, updated_at bigint NOT NULL)`,
  ],
}];

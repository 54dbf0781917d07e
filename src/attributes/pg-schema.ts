/**
 * Shared attributes on PostgreSQL (cluster mode, scope 'attributes'): the same
 * tables and columns as the embedded store's (migration.ts). No foreign keys
 * to devices or areas (those tables are not on PostgreSQL yet): a deleted
 * device's values are removed explicitly (SharedAttributes, on
 * device.changed). JSON stays text, as firmware gets it.
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const ATTRIBUTES_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'device_shared_attributes, area_shared_attributes',
  sqlite: [],
  postgres: [
    `CREATE TABLE device_shared_attributes (
      device_id text NOT NULL, key text NOT NULL, value_json text NOT NULL, updated_at bigint NOT NULL,
      PRIMARY KEY (device_id, key))`,
    `CREATE TABLE area_shared_attributes (
      area_code text NOT NULL, key text NOT NULL, value_json text NOT NULL, updated_at bigint NOT NULL,
      PRIMARY KEY (area_code, key))`,
  ],
}];

/**
 * The gateway side tables on PostgreSQL (cluster mode, scope 'gateway'): the
 * same columns as the embedded store's (migrations.ts), the 0/1 flag as a
 * smallint. No foreign keys to devices (that table is not on PostgreSQL yet):
 * a deleted device's rows are removed explicitly (Gateways, on
 * device.changed). Names stay unique across gateways.
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const GATEWAY_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'gateway_settings, gateway_sub_devices',
  sqlite: [],
  postgres: [
    `CREATE TABLE gateway_settings (
      gateway_id text PRIMARY KEY, create_sub_devices smallint NOT NULL CHECK (create_sub_devices IN (0, 1)), updated_at bigint NOT NULL)`,
    `CREATE TABLE gateway_sub_devices (
      device_id text PRIMARY KEY, gateway_id text NOT NULL, name text NOT NULL UNIQUE, created_at bigint NOT NULL)`,
    'CREATE INDEX gateway_sub_devices_gateway ON gateway_sub_devices (gateway_id)',
  ],
}];

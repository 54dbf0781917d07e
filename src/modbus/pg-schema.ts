/**
 * The Modbus side table on PostgreSQL (cluster mode, scope 'modbus'): the same
 * columns as the embedded store's (migrations.ts). No foreign key to devices:
 * that table is not on PostgreSQL yet, so deleting a device removes its row
 * explicitly (ModbusDevices.removed).
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const MODBUS_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'modbus_devices',
  sqlite: [],
  postgres: [
    `CREATE TABLE modbus_devices (
      device_id text PRIMARY KEY, transport_json text NOT NULL, register_map_json text NOT NULL,
      poll_interval_sec integer NOT NULL CHECK (poll_interval_sec BETWEEN 1 AND 86400),
      line_key text NOT NULL, updated_at bigint NOT NULL)`,
    'CREATE INDEX modbus_devices_line ON modbus_devices (line_key)',
  ],
}];

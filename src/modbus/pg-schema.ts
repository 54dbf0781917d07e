/**
 * The Modbus side table on PostgreSQL (cluster mode, scope 'modbus'): the same
 * columns as the embedded store's (migrations.ts). No foreign key to devices:
 * that table is not on PostgreSQL yet, so deleting a device removes its row
 * explicitly (ModbusDevices.removed).
 *
 * Version 2: which node polls each line (leases.ts). Cluster mode only, so it
 * has no SQLite counterpart: one node alone polls every line.
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
}, {
  version: 2,
  name: 'modbus_line_leases',
  sqlite: [],
  postgres: [
    // epoch: new for every claim (a sequence), so a renewal or release is guarded by the claim it belongs to.
    'CREATE SEQUENCE modbus_line_lease_epoch',
    `CREATE TABLE modbus_line_leases (
      line_key text PRIMARY KEY, node_id text NOT NULL, epoch bigint NOT NULL,
      lease_until bigint NOT NULL, claimed_at bigint NOT NULL)`,
  ],
}];

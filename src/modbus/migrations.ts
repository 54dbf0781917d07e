/**
 * State-store migration of the Modbus module (registered in src/migrations.ts,
 * which gives it its version number).
 */
import type { Migration } from '../storage/state/migrations.js';

/**
 * A Modbus device is a registered device (devices row: id, kind, area, name,
 * enabled) plus how to reach and read it: a side table, so the devices table
 * and its code stay the same for MQTT devices. Deleting the device deletes
 * its row here (ON DELETE CASCADE). `line_key` is the TCP gateway or serial
 * port it shares with others (tcp:host:port, rtu:/dev/…): devices on one
 * serial line must agree on baud rate and parity.
 */
export const MODBUS_MIGRATION: Migration = {
  version: 150,
  name: 'modbus: transport, register map and poll interval of Modbus devices',
  up: `
    CREATE TABLE modbus_devices (
      device_id         TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
      transport_json    TEXT NOT NULL,
      register_map_json TEXT NOT NULL,
      poll_interval_sec INTEGER NOT NULL CHECK (poll_interval_sec BETWEEN 1 AND 86400),
      line_key          TEXT NOT NULL,
      updated_at        INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX modbus_devices_line ON modbus_devices(line_key);
  `,
};

/**
 * State-store migration of the gateway module (registered in src/migrations.ts,
 * which gives it its version number).
 */
import type { Migration } from '../storage/state/migrations.js';

/**
 * Side tables of the devices table, so the devices table and its code stay
 * the same for every other device:
 *  - gateway_settings: per gateway, whether it may create sub-devices on
 *    first sight (default: no);
 *  - gateway_sub_devices: which gateway a sub-device belongs to and the name
 *    the gateway calls it. Names are unique across gateways (ThingsBoard
 *    device names are unique per tenant): a gateway can never publish for a
 *    name another gateway owns. Deleting either device deletes the row.
 */
export const GATEWAY_MIGRATION: Migration = {
  version: 160,
  name: 'gateway: sub-devices of ThingsBoard-style gateways and the per-gateway creation setting',
  up: `
    CREATE TABLE gateway_settings (
      gateway_id         TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
      create_sub_devices INTEGER NOT NULL CHECK (create_sub_devices IN (0, 1)),
      updated_at         INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE gateway_sub_devices (
      device_id  TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
      gateway_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
      name       TEXT NOT NULL UNIQUE,
      created_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX gateway_sub_devices_gateway ON gateway_sub_devices(gateway_id);
  `,
};

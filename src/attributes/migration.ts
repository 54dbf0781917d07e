/**
 * Schema of shared attributes (server-side settings pushed to devices, the
 * ThingsBoard "shared" scope), for the state store's migration list
 * (src/migrations.ts). Append-only like every migration.
 *
 * Two owners: a device, or an area whose devices below it (commune →
 * villages) inherit the value unless a nearer area or the device sets the
 * same key. `value_json` is the JSON text of the value, as firmware gets it.
 */
export const SHARED_ATTRIBUTES_MIGRATION = {
  name: 'shared attributes of devices and areas',
  up: `
    CREATE TABLE device_shared_attributes (
      device_id  TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
      key        TEXT NOT NULL,
      value_json TEXT NOT NULL CHECK (json_valid(value_json)),
      updated_at INTEGER NOT NULL,
      PRIMARY KEY (device_id, key)
    ) STRICT;
    CREATE TABLE area_shared_attributes (
      area_code  TEXT NOT NULL REFERENCES areas(code) ON DELETE CASCADE,
      key        TEXT NOT NULL,
      value_json TEXT NOT NULL CHECK (json_valid(value_json)),
      updated_at INTEGER NOT NULL,
      PRIMARY KEY (area_code, key)
    ) STRICT;
  `,
} as const;

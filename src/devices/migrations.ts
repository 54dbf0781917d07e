/**
 * State-store migrations of the devices module (registered in
 * src/migrations.ts, which gives them their version numbers).
 */
import type { Migration } from '../storage/state/migrations.js';

/**
 * A deleted device's id may be registered again (ids are printed on
 * hardware), but the new device must never show the old one's readings,
 * which stay in the telemetry store: the tombstone remembers when the id was
 * last deleted, and the new device's history starts after it.
 */
export const DEVICE_HISTORY_MIGRATION: Migration = {
  version: 140,
  name: 'devices: tombstones of deleted ids, history_from',
  up: `
    CREATE TABLE device_tombstones (
      id         TEXT PRIMARY KEY,
      deleted_at INTEGER NOT NULL
    ) STRICT;
    ALTER TABLE devices ADD COLUMN history_from INTEGER;
  `,
};

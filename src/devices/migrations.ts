/**
 * State-store migration of the devices module (registered in src/migrations.ts,
 * which gives it its version number).
 */
import type { Migration } from '../storage/state/migrations.js';

/**
 * Purges of deleted devices' readings (telemetry.onDeviceDelete = 'purge', or
 * `keng devices purge`): one row per device id still to purge, written in the
 * same transaction as the device's deletion and its tombstone, so a purge is
 * never forgotten (a crash, a restart, InfluxDB down: the server resumes it,
 * purger.ts) and the row is deleted only once every store is clean.
 *  - stage: 'local' (embedded store, InfluxDB queue, dead letters) then 'remote' (InfluxDB itself).
 *  - deleted_at: the tombstone's time; a device registered again under the id
 *    keeps what it stores from then on (only older readings are removed).
 *  - removed_json: what was removed so far, per place (for the audit entry at the end).
 *  - next_at, attempts, last_error: retries with back-off while a store is unreachable.
 */
export const DEVICE_PURGES_MIGRATION: Migration = {
  version: 170,
  name: 'devices: purges of deleted devices\' readings',
  up: `
    CREATE TABLE device_purges (
      device_id    TEXT PRIMARY KEY,
      deleted_at   INTEGER NOT NULL,
      requested_at INTEGER NOT NULL,
      requested_by TEXT NOT NULL,
      stage        TEXT NOT NULL DEFAULT 'local' CHECK (stage IN ('local', 'remote')),
      removed_json TEXT NOT NULL DEFAULT '{}',
      next_at      INTEGER NOT NULL,
      attempts     INTEGER NOT NULL DEFAULT 0,
      last_error   TEXT
    ) STRICT;
  `,
};

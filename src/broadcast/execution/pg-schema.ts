/**
 * The broadcast execution tables on PostgreSQL (cluster mode): the columns of the embedded store's
 * `broadcasts`, `broadcast_targets`, `broadcast_log` and `broadcast_missed` (migrations.ts), plus what
 * several nodes sharing them need:
 *  - `broadcast_log` UNIQUE (broadcast_id, device_id, state): a target never re-enters a state
 *    (state-machine.ts), so a line is written once even when a node redoes a window whose COMMIT
 *    answer was lost (its inserts use ON CONFLICT DO NOTHING); append-only by trigger as on SQLite;
 *  - `owner_node`, `owner_inc` on targets: the node that runs a target's timers (report deadlines,
 *    stream stops); defaults for one node until the owner loops of cluster mode set them;
 *  - an index of the open targets per owner (adoption of a dead node's targets).
 * No foreign key to devices: this scope is migrated before the registry's ('devices', src/migrations.ts),
 * and the log must survive a device's deletion anyway.
 */
import type { SqlMigration } from '../../storage/sql/index.js';
import { TARGET_STATES } from './types.js';

const STATES = TARGET_STATES.map((s) => `'${s}'`).join(', ');

export const BROADCAST_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'broadcasts, broadcast_targets, broadcast_log, broadcast_missed',
  sqlite: [],
  postgres: [
    `CREATE TABLE broadcasts (
      id text PRIMARY KEY, schedule_id text, planned_at bigint NOT NULL,
      priority text NOT NULL CHECK (priority IN ('normal', 'priority', 'emergency')),
      volume integer NOT NULL CHECK (volume BETWEEN 0 AND 100), content_json text NOT NULL, duration_sec double precision,
      not_after bigint NOT NULL, created_at bigint NOT NULL, stop_requested_at bigint)`,
    'CREATE INDEX broadcasts_created ON broadcasts (created_at)',
    'CREATE INDEX broadcasts_schedule ON broadcasts (schedule_id, created_at)',
    `CREATE TABLE broadcast_targets (
      broadcast_id text NOT NULL REFERENCES broadcasts(id) ON DELETE RESTRICT, device_id text NOT NULL, area text NOT NULL,
      state text NOT NULL CHECK (state IN (${STATES})), updated_at bigint NOT NULL, detail text,
      play_request_id text, stop_request_id text,
      owner_node text NOT NULL DEFAULT 'local', owner_inc bigint NOT NULL DEFAULT 0,
      PRIMARY KEY (broadcast_id, device_id))`,
    'CREATE INDEX broadcast_targets_device ON broadcast_targets (device_id)',
    'CREATE INDEX broadcast_targets_area ON broadcast_targets (area, broadcast_id)',
    `CREATE INDEX broadcast_targets_open ON broadcast_targets (owner_node)
      WHERE state IN ('pending', 'offline', 'sent', 'accepted', 'playing')`,
    `CREATE TABLE broadcast_log (
      seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at bigint NOT NULL, device_at bigint, broadcast_id text NOT NULL,
      schedule_id text, device_id text NOT NULL, area text NOT NULL, state text NOT NULL CHECK (state IN (${STATES})),
      prev_state text, detail text, source text NOT NULL CHECK (source IN ('controller', 'rpc', 'event', 'scheduler')),
      UNIQUE (broadcast_id, device_id, state))`,
    'CREATE INDEX broadcast_log_at ON broadcast_log (at)',
    'CREATE INDEX broadcast_log_broadcast ON broadcast_log (broadcast_id, seq)',
    `CREATE FUNCTION broadcast_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'broadcast_log is append-only'; END $$`,
    `CREATE TRIGGER broadcast_log_no_change BEFORE UPDATE OR DELETE ON broadcast_log
      FOR EACH ROW EXECUTE FUNCTION broadcast_log_append_only()`,
    `CREATE TABLE broadcast_missed (
      schedule_id text NOT NULL, planned_at bigint NOT NULL, device_id text NOT NULL, area text NOT NULL,
      recorded_at bigint NOT NULL, PRIMARY KEY (schedule_id, planned_at, device_id))`,
    'CREATE INDEX broadcast_missed_planned ON broadcast_missed (planned_at)',
    'CREATE INDEX broadcast_missed_area ON broadcast_missed (area, planned_at)',
  ],
}];

/**
 * State-store migration of broadcast execution and the proof of play
 * Kept next to the execution code and registered in
 * src/storage/state/migrations.ts after RPC_MIGRATION, which gives it its
 * version number (the SQL does not depend on the number).
 *
 * No foreign key from targets/log to devices: the log is the proof of what
 * played where and must survive the deletion of a device.
 */
import type { Migration } from '../../storage/state/migrations.js';

const TARGET_STATES = `'pending', 'sent', 'accepted', 'playing', 'completed', 'failed', 'rejected', 'offline', 'expired', 'preempted', 'stopped'`;

export const BROADCAST_MIGRATION: Migration = {
  version: 121,
  name: 'broadcasts, broadcast_targets, broadcast_log, broadcast_missed',
  up: `
    CREATE TABLE broadcasts (
      id                TEXT PRIMARY KEY,
      schedule_id       TEXT,
      planned_at        INTEGER NOT NULL,
      priority          TEXT NOT NULL CHECK (priority IN ('normal', 'priority', 'emergency')),
      volume            INTEGER NOT NULL CHECK (volume BETWEEN 0 AND 100),
      content_json      TEXT NOT NULL,
      duration_sec      REAL,
      not_after         INTEGER NOT NULL,
      created_at        INTEGER NOT NULL,
      stop_requested_at INTEGER
    ) STRICT;
    CREATE INDEX broadcasts_created ON broadcasts(created_at);
    CREATE INDEX broadcasts_schedule ON broadcasts(schedule_id, created_at);

    -- One row per speaker: its current state (OpenAPI at /docs, tag broadcasts).
    -- area = the device's area when the broadcast started.
    CREATE TABLE broadcast_targets (
      broadcast_id    TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE RESTRICT,
      device_id       TEXT NOT NULL,
      area            TEXT NOT NULL,
      state           TEXT NOT NULL CHECK (state IN (${TARGET_STATES})),
      updated_at      INTEGER NOT NULL,
      detail          TEXT,
      play_request_id TEXT,
      stop_request_id TEXT,
      PRIMARY KEY (broadcast_id, device_id)
    ) STRICT;
    CREATE INDEX broadcast_targets_device ON broadcast_targets(device_id, state);
    CREATE INDEX broadcast_targets_area ON broadcast_targets(area, broadcast_id);

    -- The broadcast log (nhật ký phát thanh): every transition, append-only.
    CREATE TABLE broadcast_log (
      seq          INTEGER PRIMARY KEY AUTOINCREMENT,
      at           INTEGER NOT NULL,
      device_at    INTEGER,
      broadcast_id TEXT NOT NULL,
      schedule_id  TEXT,
      device_id    TEXT NOT NULL,
      area         TEXT NOT NULL,
      state        TEXT NOT NULL CHECK (state IN (${TARGET_STATES})),
      prev_state   TEXT,
      detail       TEXT,
      source       TEXT NOT NULL CHECK (source IN ('controller', 'rpc', 'event', 'scheduler'))
    ) STRICT;
    CREATE INDEX broadcast_log_at ON broadcast_log(at);
    CREATE INDEX broadcast_log_broadcast ON broadcast_log(broadcast_id, seq);
    CREATE INDEX broadcast_log_device ON broadcast_log(device_id, at);
    CREATE INDEX broadcast_log_area ON broadcast_log(area, at);
    CREATE INDEX broadcast_log_schedule ON broadcast_log(schedule_id, at);
    CREATE TRIGGER broadcast_log_no_update BEFORE UPDATE ON broadcast_log
      BEGIN SELECT RAISE(ABORT, 'broadcast_log is append-only'); END;
    CREATE TRIGGER broadcast_log_no_delete BEFORE DELETE ON broadcast_log
      BEGIN SELECT RAISE(ABORT, 'broadcast_log is append-only'); END;

    -- Schedule occurrences recorded as missed (Keng was down), one row per speaker.
    CREATE TABLE broadcast_missed (
      schedule_id TEXT NOT NULL,
      planned_at  INTEGER NOT NULL,
      device_id   TEXT NOT NULL,
      area        TEXT NOT NULL,
      recorded_at INTEGER NOT NULL,
      PRIMARY KEY (schedule_id, planned_at, device_id)
    ) STRICT;
    CREATE INDEX broadcast_missed_planned ON broadcast_missed(planned_at);
    CREATE INDEX broadcast_missed_area ON broadcast_missed(area, planned_at);
  `,
};

/**
 * Fewer indexes written on every transition (bench:broadcast: ~6,000 log lines and ~4,000 target
 * state changes per broadcast to 2,000 speakers, all on the way to "all accepted").
 *
 * - broadcast_log_device / _area / _schedule: no query uses them. The log query (queries.ts) filters
 *   device, area and schedule with `(? IS NULL OR …)` terms, which SQLite cannot serve from an index;
 *   its plan is the `at` range (broadcast_log_at), and the per-broadcast query uses
 *   broadcast_log_broadcast. Each cost a B-tree insert per log line.
 * - broadcast_targets_device was (device_id, state): every state change moved its entry. No query
 *   reads targets by device today; (device_id) alone keeps such a lookup possible and is only
 *   written when a target row is inserted.
 */
export const BROADCAST_INDEXES_MIGRATION: Migration = {
  version: 122,
  name: 'broadcast indexes: none unused on broadcast_log, targets by device without state',
  up: `
    DROP INDEX broadcast_log_device;
    DROP INDEX broadcast_log_area;
    DROP INDEX broadcast_log_schedule;
    DROP INDEX broadcast_targets_device;
    CREATE INDEX broadcast_targets_device ON broadcast_targets(device_id);
  `,
};

/**
 * The target state `unconfirmed` (a speaker accepted but never reported the end of playback, see
 * state-machine.ts) in the CHECK constraints of broadcast_targets and broadcast_log. SQLite cannot
 * change a CHECK in place: each table is rebuilt (new table, rows copied as they are, old one
 * dropped, renamed, its indexes and the log's append-only triggers made again). The log's triggers
 * are dropped first: the copy is the only write to old lines, and they keep their `seq`.
 */
export const BROADCAST_UNCONFIRMED_MIGRATION: Migration = {
  version: 125,
  name: 'broadcast target state unconfirmed',
  up: `
    CREATE TABLE broadcast_targets_new (
      broadcast_id    TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE RESTRICT,
      device_id       TEXT NOT NULL,
      area            TEXT NOT NULL,
      state           TEXT NOT NULL CHECK (state IN (${TARGET_STATES}, 'unconfirmed')),
      updated_at      INTEGER NOT NULL,
      detail          TEXT,
      play_request_id TEXT,
      stop_request_id TEXT,
      PRIMARY KEY (broadcast_id, device_id)
    ) STRICT;
    INSERT INTO broadcast_targets_new (broadcast_id, device_id, area, state, updated_at, detail, play_request_id, stop_request_id)
      SELECT broadcast_id, device_id, area, state, updated_at, detail, play_request_id, stop_request_id FROM broadcast_targets;
    DROP TABLE broadcast_targets;
    ALTER TABLE broadcast_targets_new RENAME TO broadcast_targets;
    CREATE INDEX broadcast_targets_device ON broadcast_targets(device_id);
    CREATE INDEX broadcast_targets_area ON broadcast_targets(area, broadcast_id);

    DROP TRIGGER broadcast_log_no_update;
    DROP TRIGGER broadcast_log_no_delete;
    CREATE TABLE broadcast_log_new (
      seq          INTEGER PRIMARY KEY AUTOINCREMENT,
      at           INTEGER NOT NULL,
      device_at    INTEGER,
      broadcast_id TEXT NOT NULL,
      schedule_id  TEXT,
      device_id    TEXT NOT NULL,
      area         TEXT NOT NULL,
      state        TEXT NOT NULL CHECK (state IN (${TARGET_STATES}, 'unconfirmed')),
      prev_state   TEXT,
      detail       TEXT,
      source       TEXT NOT NULL CHECK (source IN ('controller', 'rpc', 'event', 'scheduler'))
    ) STRICT;
    INSERT INTO broadcast_log_new (seq, at, device_at, broadcast_id, schedule_id, device_id, area, state, prev_state, detail, source)
      SELECT seq, at, device_at, broadcast_id, schedule_id, device_id, area, state, prev_state, detail, source FROM broadcast_log;
    DROP TABLE broadcast_log;
    ALTER TABLE broadcast_log_new RENAME TO broadcast_log;
    CREATE INDEX broadcast_log_at ON broadcast_log(at);
    CREATE INDEX broadcast_log_broadcast ON broadcast_log(broadcast_id, seq);
    CREATE TRIGGER broadcast_log_no_update BEFORE UPDATE ON broadcast_log
      BEGIN SELECT RAISE(ABORT, 'broadcast_log is append-only'); END;
    CREATE TRIGGER broadcast_log_no_delete BEFORE DELETE ON broadcast_log
      BEGIN SELECT RAISE(ABORT, 'broadcast_log is append-only'); END;
  `,
};

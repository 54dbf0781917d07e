/**
 * The schedules' tables on both state stores.
 *
 * Embedded (SQLite state.db): `scheduleMigration` and `SCHEDULE_OCCURRENCES_MIGRATION`,
 * placed in src/migrations.ts ORDER. Cluster mode (PostgreSQL): the scope
 * `schedules` (`PG_SCHEDULE_MIGRATIONS`), appended to PG_STATE_SCOPES.
 *
 * `schedule_occurrences` holds one row per occurrence a node has handled: the
 * claim (primary key = schedule and planned time) is what makes an occurrence
 * fire or be recorded as missed once across nodes (scheduler.ts). `outcome` is
 * NULL while the claiming node is starting it. It replaces the per-schedule
 * cursor `schedules.last_fired_at` (left in the SQLite table, unused: SQLite
 * cannot drop a column without rebuilding the table).
 */
import type { Migration } from '../../storage/state/migrations.js';
import type { SqlMigration } from '../../storage/sql/migrate.js';

export const OCCURRENCE_OUTCOMES = ['fired', 'missed', 'failed'] as const;
export type OccurrenceOutcome = (typeof OCCURRENCE_OUTCOMES)[number];
const OUTCOMES_SQL = OCCURRENCE_OUTCOMES.map((o) => `'${o}'`).join(', ');

/**
 * State-DB migration. Version 100 so it cannot collide with the core list;
 * idempotent (IF NOT EXISTS) so it can be renumbered safely.
 */
export const scheduleMigration = {
  version: 100,
  name: 'schedules',
  up: `
    CREATE TABLE IF NOT EXISTS schedules (
      id            TEXT PRIMARY KEY,
      name          TEXT NOT NULL,
      target_json   TEXT NOT NULL CHECK (json_valid(target_json)),
      content_json  TEXT NOT NULL CHECK (json_valid(content_json)),
      cron          TEXT,
      at            INTEGER,
      timezone      TEXT NOT NULL,
      volume        INTEGER NOT NULL CHECK (volume BETWEEN 0 AND 100),
      priority      TEXT NOT NULL CHECK (priority IN ('normal', 'priority')),
      duration_sec  REAL CHECK (duration_sec IS NULL OR duration_sec > 0),
      start_date    INTEGER,
      end_date      INTEGER,
      enabled       INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
      created_at    INTEGER NOT NULL,
      updated_at    INTEGER NOT NULL,
      created_by    TEXT,
      last_fired_at INTEGER,
      CHECK ((cron IS NULL) <> (at IS NULL))
    ) STRICT;
    CREATE INDEX IF NOT EXISTS schedules_enabled ON schedules(enabled);
  `,
} as const;

/**
 * The claims table; each schedule's old cursor becomes the claim of that occurrence (fired when the broadcast
 * log has its broadcast, else missed), so the first start after the upgrade neither replays nor re-reports it.
 */
export const SCHEDULE_OCCURRENCES_MIGRATION: Migration = {
  version: 101,
  name: 'schedule_occurrences (one claim per occurrence)',
  up: `
    CREATE TABLE IF NOT EXISTS schedule_occurrences (
      schedule_id   TEXT NOT NULL,
      occurrence_at INTEGER NOT NULL,
      node_id       TEXT NOT NULL,
      claimed_at    INTEGER NOT NULL,
      outcome       TEXT CHECK (outcome IS NULL OR outcome IN (${OUTCOMES_SQL})),
      broadcast_id  TEXT,
      PRIMARY KEY (schedule_id, occurrence_at)
    ) STRICT;
    CREATE INDEX IF NOT EXISTS schedule_occurrences_pending ON schedule_occurrences(claimed_at) WHERE outcome IS NULL;
    INSERT OR IGNORE INTO schedule_occurrences (schedule_id, occurrence_at, node_id, claimed_at, outcome, broadcast_id)
      SELECT s.id, s.last_fired_at, 'upgrade', s.last_fired_at,
        CASE WHEN b.id IS NULL THEN 'missed' ELSE 'fired' END, b.id
      FROM schedules s LEFT JOIN broadcasts b ON b.schedule_id = s.id AND b.planned_at = s.last_fired_at
      WHERE s.last_fired_at IS NOT NULL;
  `,
};

/** Cluster mode: the same tables on PostgreSQL (integers as bigint, `seq` for creation order where SQLite has rowid). */
export const PG_SCHEDULE_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'schedules, schedule_occurrences',
  sqlite: [],
  postgres: [
    `CREATE TABLE schedules (
      id           text PRIMARY KEY,
      seq          bigserial NOT NULL,
      name         text NOT NULL,
      target_json  text NOT NULL CHECK (target_json::jsonb IS NOT NULL),
      content_json text NOT NULL CHECK (content_json::jsonb IS NOT NULL),
      cron         text,
      at           bigint,
      timezone     text NOT NULL,
      volume       integer NOT NULL CHECK (volume BETWEEN 0 AND 100),
      priority     text NOT NULL CHECK (priority IN ('normal', 'priority')),
      duration_sec double precision CHECK (duration_sec IS NULL OR duration_sec > 0),
      start_date   bigint,
      end_date     bigint,
      enabled      integer NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
      created_at   bigint NOT NULL,
      updated_at   bigint NOT NULL,
      created_by   text,
      CHECK ((cron IS NULL) <> (at IS NULL))
    )`,
    'CREATE INDEX schedules_enabled ON schedules (enabled)',
    `CREATE TABLE schedule_occurrences (
      schedule_id   text NOT NULL,
      occurrence_at bigint NOT NULL,
      node_id       text NOT NULL,
      claimed_at    bigint NOT NULL,
      outcome       text CHECK (outcome IS NULL OR outcome IN (${OUTCOMES_SQL})),
      broadcast_id  text,
      PRIMARY KEY (schedule_id, occurrence_at)
    )`,
    'CREATE INDEX schedule_occurrences_pending ON schedule_occurrences (claimed_at) WHERE outcome IS NULL',
  ],
}];

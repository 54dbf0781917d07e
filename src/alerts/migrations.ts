/**
 * State-store migration for alerts (registered in src/migrations.ts, which
 * gives it its version number).
 */
import type { Migration } from '../storage/state/migrations.js';

export const ALERTS_MIGRATION: Migration = {
  version: 130,
  name: 'alerts',
  up: `
    -- One row per alert message (CAP 1.2 alert, update or cancel). The CAP
    -- fields are kept whole in cap_json (what the XML export writes); the
    -- columns are what the service selects and sorts on.
    -- state: pending_approval → active → ended | cancelled | expired; rejected.
    CREATE TABLE alerts (
      id            TEXT PRIMARY KEY,
      identifier    TEXT NOT NULL UNIQUE,
      state         TEXT NOT NULL CHECK (state IN ('pending_approval', 'active', 'ended', 'cancelled', 'expired', 'rejected')),
      status        TEXT NOT NULL,
      msg_type      TEXT NOT NULL,
      severity      TEXT NOT NULL,
      urgency       TEXT NOT NULL,
      areas_json    TEXT NOT NULL,
      devices_json  TEXT NOT NULL,
      expires_at    INTEGER NOT NULL,
      cap_json      TEXT NOT NULL,
      media_id      TEXT,
      broadcast_id  TEXT,
      created_by    TEXT NOT NULL,
      created_at    INTEGER NOT NULL,
      approved_by   TEXT,
      approved_at   INTEGER,
      played_at_once INTEGER NOT NULL DEFAULT 0,
      ended_by      TEXT,
      ended_at      INTEGER,
      end_reason    TEXT,
      replaced_by   TEXT,
      updated_at    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX alerts_open ON alerts(state, expires_at);
    CREATE INDEX alerts_created ON alerts(created_at);
    -- Admin settings of the alert policy (e.g. which severities may play at once).
    CREATE TABLE alert_settings (
      key        TEXT PRIMARY KEY,
      value_json TEXT NOT NULL,
      updated_by TEXT NOT NULL,
      updated_at INTEGER NOT NULL
    ) STRICT;
  `,
};

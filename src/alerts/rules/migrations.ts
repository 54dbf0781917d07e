/**
 * State-store migration for alert rules (registered in src/migrations.ts,
 * which gives it its version number).
 */
import type { Migration } from '../../storage/state/migrations.js';

export const ALERT_RULES_MIGRATION: Migration = {
  version: 140,
  name: 'alert rules',
  up: `
    -- Sensor rules that raise alerts (docs/alerts.md "Sensor-triggered
    -- warnings"). The columns are what is selected on; spec_json holds the
    -- rest of the rule (field, thresholds, timing, alert template).
    CREATE TABLE alert_rules (
      id         TEXT PRIMARY KEY,
      name       TEXT NOT NULL,
      area       TEXT NOT NULL REFERENCES areas(code) ON DELETE RESTRICT,
      enabled    INTEGER NOT NULL CHECK (enabled IN (0, 1)),
      spec_json  TEXT NOT NULL,
      created_by TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX alert_rules_area ON alert_rules(area);
    -- A rule's episode, so that a restart neither raises its alert again nor
    -- forgets its cooldown. identifier: the CAP identifier of the episode's
    -- alert, written before the alert is raised.
    CREATE TABLE alert_rule_state (
      rule_id         TEXT PRIMARY KEY REFERENCES alert_rules(id) ON DELETE CASCADE,
      firing          INTEGER NOT NULL DEFAULT 0 CHECK (firing IN (0, 1)),
      firing_since    INTEGER,
      identifier      TEXT,
      alert_id        TEXT,
      last_fired_at   INTEGER,
      last_cleared_at INTEGER,
      last_error      TEXT,
      updated_at      INTEGER NOT NULL
    ) STRICT;
  `,
};

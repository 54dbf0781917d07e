/**
 * The alerts' and alert rules' tables on PostgreSQL (cluster mode): the same tables and columns as the
 * embedded store's migrations (migrations.ts "alerts", rules/migrations.ts "alert rules"). INTEGER epoch ms
 * → bigint, 0/1 flags → smallint (the code reads 0/1 on both), JSON stays text (decoded in JS). The rules'
 * area references the registry's `areas` (scope 'devices', migrated before this one).
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const ALERTS_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'alerts, alert_settings, alert_rules, alert_rule_state',
  sqlite: [],
  postgres: [
    `CREATE TABLE alerts (
      id text PRIMARY KEY,
      identifier text NOT NULL UNIQUE,
      state text NOT NULL CHECK (state IN ('pending_approval', 'active', 'ended', 'cancelled', 'expired', 'rejected')),
      status text NOT NULL, msg_type text NOT NULL, severity text NOT NULL, urgency text NOT NULL,
      areas_json text NOT NULL, devices_json text NOT NULL, expires_at bigint NOT NULL, cap_json text NOT NULL,
      media_id text, broadcast_id text, created_by text NOT NULL, created_at bigint NOT NULL, approved_by text, approved_at bigint,
      played_at_once smallint NOT NULL DEFAULT 0 CHECK (played_at_once IN (0, 1)),
      ended_by text, ended_at bigint, end_reason text, replaced_by text, updated_at bigint NOT NULL)`,
    'CREATE INDEX alerts_open ON alerts (state, expires_at)',
    'CREATE INDEX alerts_created ON alerts (created_at)',
    'CREATE TABLE alert_settings (key text PRIMARY KEY, value_json text NOT NULL, updated_by text NOT NULL, updated_at bigint NOT NULL)',
    `CREATE TABLE alert_rules (
      id text PRIMARY KEY, name text NOT NULL, area text NOT NULL REFERENCES areas(code) ON DELETE RESTRICT,
      enabled smallint NOT NULL CHECK (enabled IN (0, 1)), spec_json text NOT NULL,
      created_by text NOT NULL, created_at bigint NOT NULL, updated_at bigint NOT NULL)`,
    'CREATE INDEX alert_rules_area ON alert_rules (area)',
    `CREATE TABLE alert_rule_state (
      rule_id text PRIMARY KEY REFERENCES alert_rules(id) ON DELETE CASCADE,
      firing smallint NOT NULL DEFAULT 0 CHECK (firing IN (0, 1)), firing_since bigint, identifier text, alert_id text,
      last_fired_at bigint, last_cleared_at bigint, last_error text, updated_at bigint NOT NULL)`,
  ],
}];

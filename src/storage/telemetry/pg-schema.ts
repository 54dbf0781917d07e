/**
 * The cluster database's telemetry tables (PostgreSQL; migrations scope `telemetry`).
 *
 * One row per (device, field, ts), like the embedded store, keyed by the names
 * themselves: no id dictionaries, so nodes need no shared cache of ids. The value
 * is in `num` (numbers; booleans as 0/1) or `txt` (strings), `k` is its kind
 * (field-types.ts: 0 number, 1 boolean, 2 string). `telemetry_fields` keeps each
 * field's kind (the field-type rule); a value of another kind goes to
 * `telemetry_dead_readings` in the same transaction. A BRIN index on ts keeps
 * retention cheap without a second b-tree to maintain on every insert.
 */
import type { SqlMigration } from '../sql/index.js';

export const TELEMETRY_MIGRATIONS: readonly SqlMigration[] = [
  {
    version: 1,
    name: 'telemetry readings, field kinds, dead readings',
    sqlite: [], // the embedded store keeps its own schema (embedded-db.ts)
    postgres: [
      'CREATE TABLE telemetry_fields (name text PRIMARY KEY, k smallint NOT NULL)',
      `CREATE TABLE telemetry_readings (
        device text NOT NULL, field text NOT NULL, ts bigint NOT NULL,
        k smallint NOT NULL, num double precision, txt text,
        PRIMARY KEY (device, field, ts))`,
      'CREATE INDEX telemetry_readings_ts ON telemetry_readings USING brin (ts)',
      `CREATE TABLE telemetry_dead_readings (
        device text NOT NULL, field text NOT NULL, ts bigint NOT NULL, value jsonb, type text NOT NULL,
        reason text NOT NULL, detail text, at bigint NOT NULL, PRIMARY KEY (device, field, ts))`,
    ],
  },
  {
    version: 2,
    name: 'InfluxDB outbox (telemetry.store = influxdb in cluster mode)',
    sqlite: [],
    postgres: [
      // One row per chunk of a group commit, as line protocol (pg-influx-store.ts); a claim is a
      // lease (lease_by, lease_until in ms of the database's clock) so a dead node's batch is taken over.
      `CREATE TABLE telemetry_influx_outbox (
        id bigserial PRIMARY KEY, body text NOT NULL, lines integer NOT NULL, readings integer NOT NULL,
        bytes integer NOT NULL, created bigint NOT NULL, lease_by text, lease_until bigint)`,
      // What InfluxDB refused: its answer and the single-field line sent.
      'ALTER TABLE telemetry_dead_readings ADD COLUMN status integer, ADD COLUMN line text',
    ],
  },
];

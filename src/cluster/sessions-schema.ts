/**
 * The cluster database's session table (PostgreSQL; migrations scope `sessions`):
 * which node holds each device's MQTT session (session-claims.ts).
 *
 * `epoch` is a fencing token: every claim takes a new one, larger than any
 * before it, so "my connection's claim is still the latest" is one comparison.
 * It comes from a sequence (and never below the row's epoch + 1) rather than
 * from the row alone: a row deleted at a clean disconnect and inserted again
 * would otherwise start over at 1, below the epoch a stale connection may
 * still hold.
 * A row is deleted when its holder's connection ends cleanly; a node that dies
 * leaves its rows, and the next claim of each device simply overwrites it.
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const SESSION_MIGRATIONS: readonly SqlMigration[] = [
  {
    version: 1,
    name: 'device sessions: one holder node per device',
    sqlite: [], // embedded mode has one node: no table
    postgres: [
      'CREATE SEQUENCE device_session_epochs',
      `CREATE TABLE device_sessions (
        device_id text PRIMARY KEY, node_id text NOT NULL, epoch bigint NOT NULL, connected_at bigint NOT NULL)`,
      'CREATE INDEX device_sessions_node ON device_sessions (node_id)',
    ],
  },
];

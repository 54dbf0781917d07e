/**
 * The audit chain's tables on PostgreSQL (cluster mode), the same columns as the embedded store's
 * (src/storage/state/migrations.ts, "audit_log" and "audit_log key_id"). The head row exists from the
 * start, so every append can lock it (log.ts) and appends from several nodes queue instead of forking.
 */
import type { SqlMigration } from '../storage/sql/index.js';
import { GENESIS_HASH } from './chain.js';

export const AUDIT_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'audit_log, audit_head',
  sqlite: [],
  postgres: [
    `CREATE TABLE audit_log (
      seq bigint PRIMARY KEY, at bigint NOT NULL, actor text NOT NULL, action text NOT NULL, target text, ip text,
      before_json text, after_json text, prev_hash text NOT NULL, hash text NOT NULL, key_id text)`,
    'CREATE INDEX audit_log_at ON audit_log (at)',
    'CREATE INDEX audit_log_actor ON audit_log (actor, seq)',
    'CREATE INDEX audit_log_action ON audit_log (action, seq)',
    'CREATE INDEX audit_log_keyed ON audit_log (seq) WHERE key_id IS NOT NULL',
    'CREATE TABLE audit_head (id integer PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, hash text NOT NULL)',
    `INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '${GENESIS_HASH}')`,
  ],
}];

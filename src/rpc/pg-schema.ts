/**
 * The RPC tables on PostgreSQL (cluster mode): the columns of the embedded store's `rpc_requests`
 * and `rpc_tb_ids` (migrations.ts), plus what several nodes sharing them need:
 *  - `seq`: creation order (SQLite uses its rowid) for a device's commands in the order they were made;
 *  - `owner_node`, `owner_inc`, `handed`: which node publishes, re-sends and expires a command (the
 *    node holding the device's session; `handed` false while the owner has not picked up a command
 *    another node created). The defaults describe one node; in cluster mode ownership.ts sets them;
 *  - the open-commands index only over `queued`/`sent` rows (the sweep), a pickup index.
 * No foreign key to devices: this scope is migrated before the registry's ('devices', src/migrations.ts).
 * So unlike the embedded store's ON DELETE CASCADE, a deleted device's rows stay here; the service only
 * forgets them in memory.
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const RPC_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'rpc_requests, rpc_tb_ids',
  sqlite: [],
  postgres: [
    `CREATE TABLE rpc_requests (
      id text PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE, device_id text NOT NULL, method text NOT NULL,
      params_json text NOT NULL, expires_at bigint NOT NULL,
      state text NOT NULL CHECK (state IN ('queued', 'sent', 'answered', 'expired', 'cancelled')),
      created_at bigint NOT NULL, sent_at bigint, answered_at bigint, response_json text, tb_id integer,
      owner_node text NOT NULL DEFAULT 'local', owner_inc bigint NOT NULL DEFAULT 0, handed boolean NOT NULL DEFAULT true)`,
    'CREATE INDEX rpc_requests_device ON rpc_requests (device_id, seq)',
    `CREATE INDEX rpc_requests_open ON rpc_requests (expires_at) WHERE state IN ('queued', 'sent')`,
    'CREATE INDEX rpc_requests_created ON rpc_requests (created_at)',
    'CREATE INDEX rpc_requests_pickup ON rpc_requests (owner_node) WHERE NOT handed',
    'CREATE UNIQUE INDEX rpc_requests_tb_id ON rpc_requests (device_id, tb_id) WHERE tb_id IS NOT NULL',
    'CREATE TABLE rpc_tb_ids (device_id text PRIMARY KEY, last_id integer NOT NULL)',
  ],
}];

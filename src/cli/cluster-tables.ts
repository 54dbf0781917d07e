/**
 * What `keng cluster import` copies from an embedded node's state.db into the cluster database, and
 * what it leaves behind and why (docs/cluster.md "Switching an existing node to cluster mode").
 *
 * Only the order and the exceptions are written here: the columns come from the two schemas
 * themselves (cluster-copy.ts), so a column a module adds to both is copied without a change here.
 * test/unit/cluster-import-tables.test.ts fails when a module's table appears in state.db or in a
 * PG_STATE_SCOPES scope without being listed below.
 */

export interface ImportedTable {
  readonly table: string;
  /** SQLite ORDER BY: parents before the rows that reference them; rowid where PostgreSQL numbers rows (`seq`) in insertion order. */
  readonly orderBy: string;
  /** state.db columns not copied on purpose (PostgreSQL has none, or numbers them itself): why. */
  readonly dropped?: Readonly<Record<string, string>>;
  /** Values written instead of the embedded ones. */
  readonly set?: Readonly<Record<string, string | number | null>>;
}

/** Copied row by row, in this order (foreign keys: areas before devices, users before sessions, packages before rollouts). */
export const IMPORTED_TABLES: readonly ImportedTable[] = [
  { table: 'areas', orderBy: "CASE level WHEN 'province' THEN 0 WHEN 'commune' THEN 1 ELSE 2 END, code" },
  { table: 'devices', orderBy: 'id' },
  // The embedded server is stopped, so no device is connected to it; a device is online again when it
  // connects to a node. (A crashed server leaves `online` 1, which no cluster node would ever reset.)
  { table: 'device_state', orderBy: 'device_id', set: { online: 0 } },
  { table: 'device_tombstones', orderBy: 'id' },
  { table: 'device_purges', orderBy: 'device_id' },
  { table: 'provisioning_keys', orderBy: 'id' },
  { table: 'users', orderBy: 'username' },
  { table: 'sessions', orderBy: 'id' },
  { table: 'api_tokens', orderBy: 'id' },
  { table: 'login_guard', orderBy: 'kind, username, ip' },
  { table: 'login_known_sources', orderBy: 'username, ip' },
  { table: 'audit_log', orderBy: 'seq' },
  { table: 'media', orderBy: 'rowid' },
  { table: 'schedules', orderBy: 'rowid', dropped: { last_fired_at: 'replaced by schedule_occurrences (state migration 24), which is copied' } },
  { table: 'schedule_occurrences', orderBy: 'schedule_id, occurrence_at' },
  { table: 'firmware_packages', orderBy: 'rowid' },
  { table: 'firmware_rollouts', orderBy: 'rowid' },
  { table: 'firmware_assignments', orderBy: 'device_id' },
  { table: 'firmware_device_state', orderBy: 'device_id' },
  { table: 'modbus_devices', orderBy: 'device_id' },
  { table: 'device_shared_attributes', orderBy: 'device_id, key' },
  { table: 'area_shared_attributes', orderBy: 'area_code, key' },
  { table: 'gateway_settings', orderBy: 'gateway_id' },
  { table: 'gateway_sub_devices', orderBy: 'device_id' },
  // Proof of play: broadcasts with their targets, log and missed occurrences, and the commands behind them.
  // Open commands keep the owner 'local', which no live node is: the node their device connects to adopts them.
  { table: 'broadcasts', orderBy: 'rowid' },
  { table: 'broadcast_targets', orderBy: 'broadcast_id, device_id' },
  { table: 'broadcast_log', orderBy: 'seq', dropped: { seq: 'PostgreSQL numbers the lines again, in the same order' } },
  { table: 'broadcast_missed', orderBy: 'rowid' },
  { table: 'rpc_requests', orderBy: 'rowid' },
  { table: 'rpc_tb_ids', orderBy: 'device_id' },
  { table: 'alerts', orderBy: 'created_at, id' },
  { table: 'alert_settings', orderBy: 'key' },
  { table: 'alert_rules', orderBy: 'created_at, id' },
  { table: 'alert_rule_state', orderBy: 'rule_id' },
];

/**
 * One-row tables both stores have from their migration on: not copied as rows but set after the copy
 * (the chain's head as in state.db; the registry version bumped so that running nodes reload).
 */
export const SINGLETON_TABLES = ['audit_head', 'registry_version'] as const;

/** Bookkeeping of each store, never copied. */
export const INTERNAL_TABLES = ['schema_migrations', 'sqlite_sequence', 'keng_migrations'] as const;

/**
 * Written by the running nodes, not by the import: which nodes live and who holds what, and the shared
 * secrets, which the first node started on a data directory stores from its own files (docs/cluster.md
 * "Shared secrets").
 */
export const CLUSTER_RUNTIME_TABLES = ['cluster_nodes', 'modbus_line_leases', 'cluster_secrets'] as const;

/**
 * Every state-store migration of this build, in order. The composition root
 * owns the list (modules export their migration without knowing its number)
 * so the server and the CLI always agree on the schema version.
 *
 * Append only: a released entry is never renumbered or edited. A new
 * migration of any module (core included) goes at the END with the next number.
 */
import { MIGRATIONS as CORE, type Migration } from './storage/state/migrations.js';
import { PG_SCHEDULE_MIGRATIONS, SCHEDULE_OCCURRENCES_MIGRATION, scheduleMigration } from './broadcast/schedule/index.js';
import { MEDIA_PG_MIGRATIONS, mediaAreasMigration, mediaMigration } from './media/index.js';
import { RPC_DEVICE_INDEX_MIGRATION, RPC_MIGRATION, RPC_PG_MIGRATIONS, RPC_TB_IDS_MIGRATION } from './rpc/index.js';
import { BROADCAST_INDEXES_MIGRATION, BROADCAST_MIGRATION, BROADCAST_PG_MIGRATIONS, BROADCAST_UNCONFIRMED_MIGRATION } from './broadcast/execution/index.js';
import { ALERTS_MIGRATION, ALERTS_PG_MIGRATIONS } from './alerts/index.js';
import { ALERT_RULES_MIGRATION } from './alerts/rules/index.js';
import { LOGIN_GUARD_MIGRATION } from './auth/index.js';
import { MODBUS_MIGRATION, MODBUS_PG_MIGRATIONS } from './modbus/index.js';
import { PROVISIONING_MIGRATION } from './devices/provisioning-repo.js';
import { ATTRIBUTES_PG_MIGRATIONS, SHARED_ATTRIBUTES_MIGRATION } from './attributes/index.js';
import { FIRMWARE_MIGRATION } from './firmware/index.js';
import { GATEWAY_MIGRATION, GATEWAY_PG_MIGRATIONS } from './gateway/index.js';
import { DEVICES_PG_MIGRATIONS } from './devices/pg-schema.js';
import { NODES_PG_MIGRATIONS } from './cluster/nodes-schema.js';

import type { SqlMigration } from './storage/sql/index.js';
import { AUDIT_PG_MIGRATIONS } from './audit/index.js';
import { FIRMWARE_PG_MIGRATIONS } from './firmware/index.js';
import { AUTH_PG_MIGRATIONS } from './auth/index.js';
import { SECRETS_PG_MIGRATIONS } from './storage/secrets/index.js';

type Step = Pick<Migration, 'name' | 'up'>;

const core = (version: number): Step => {
  const m = CORE.find((c) => c.version === version);
  if (!m) throw new Error(`core migration ${version} is missing`);
  return m;
};

const ORDER: Step[] = [
  core(1),               // areas, devices, device_state
  core(2),               // accounts: users, sessions, API tokens, login guard
  core(3),               // audit log
  scheduleMigration,     // 4
  mediaMigration,        // 5
  RPC_MIGRATION,         // 6
  BROADCAST_MIGRATION,   // 7
  BROADCAST_INDEXES_MIGRATION, // 8
  RPC_DEVICE_INDEX_MIGRATION,  // 9
  ALERTS_MIGRATION,      // 10
  core(5),                  // 11: devices: tombstones of deleted ids, history_from
  ALERT_RULES_MIGRATION,    // 12
  mediaAreasMigration,      // 13
  core(4),                  // 14: audit_log.key_id (the keyed audit chain)
  LOGIN_GUARD_MIGRATION,    // 15
  MODBUS_MIGRATION,         // 16
  PROVISIONING_MIGRATION,   // 17
  RPC_TB_IDS_MIGRATION,     // 18
  BROADCAST_UNCONFIRMED_MIGRATION, // 19
  core(6),                  // 20: devices: purges of deleted devices' readings
  SHARED_ATTRIBUTES_MIGRATION, // 21
  FIRMWARE_MIGRATION,       // 22
  GATEWAY_MIGRATION,        // 23
  SCHEDULE_OCCURRENCES_MIGRATION, // 24: one claim per schedule occurrence (replaces schedules.last_fired_at)
];

if (CORE.length !== 6) {
  throw new Error('src/storage/state/migrations.ts gained an entry: append it to ORDER in src/migrations.ts with the next number');
}

export const ALL_MIGRATIONS: readonly Migration[] = ORDER.map((m, i) => ({ version: i + 1, name: m.name, up: m.up }));

/**
 * Cluster mode: the PostgreSQL schema of the state repositories moved onto the `Db` port, one scope per owner
 * (src/storage/sql/migrate.ts), applied by the ClusterDatabase at start. A module's scope holds only its
 * PostgreSQL DDL (`sqlite: []`): on the embedded store the same tables come from the list above.
 * Append a module's scope when it moves; a scope's list is append-only like the list above.
 */
export const PG_STATE_SCOPES: ReadonlyArray<{ scope: string; migrations: readonly SqlMigration[] }> = [
  { scope: 'audit', migrations: AUDIT_PG_MIGRATIONS },
  { scope: 'schedules', migrations: PG_SCHEDULE_MIGRATIONS },
  { scope: 'firmware', migrations: FIRMWARE_PG_MIGRATIONS },
  { scope: 'auth', migrations: AUTH_PG_MIGRATIONS },
  { scope: 'modbus', migrations: MODBUS_PG_MIGRATIONS },
  { scope: 'attributes', migrations: ATTRIBUTES_PG_MIGRATIONS },
  { scope: 'gateway', migrations: GATEWAY_PG_MIGRATIONS },
  { scope: 'media', migrations: MEDIA_PG_MIGRATIONS },
  { scope: 'rpc', migrations: RPC_PG_MIGRATIONS },
  { scope: 'broadcast', migrations: BROADCAST_PG_MIGRATIONS },
  { scope: 'devices', migrations: DEVICES_PG_MIGRATIONS },
  { scope: 'nodes', migrations: NODES_PG_MIGRATIONS },
  { scope: 'secrets', migrations: SECRETS_PG_MIGRATIONS },
  { scope: 'alerts', migrations: ALERTS_PG_MIGRATIONS },
];

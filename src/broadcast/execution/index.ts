/** Broadcast execution and proof of play. */
export * from './types.js';
export * from './state-machine.js';
export * from './csv.js';
export { BROADCAST_INDEXES_MIGRATION, BROADCAST_MIGRATION, BROADCAST_UNCONFIRMED_MIGRATION } from './migrations.js';
export { BROADCAST_PG_MIGRATIONS } from './pg-schema.js';
export { BroadcastExecutor, type BroadcastExecutorOptions } from './executor.js';
export { playHooks } from './hooks.js';
export { broadcastExists } from './repo-sql.js';
export { DEFAULT_LIST_LIMIT, DEFAULT_LOG_LIMIT, LOG_CSV_HEADER, MAX_LIST_LIMIT, MAX_LOG_LIMIT, logCsvRow } from './queries.js';
export { validateBroadcastInput, BROADCAST_ID_RE } from './validate.js';

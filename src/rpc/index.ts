/** Server → device commands (firmware-protocols/device-protocol.md §11). */
export * from './types.js';
export * from './ids.js';
export { RPC_DEVICE_INDEX_MIGRATION, RPC_MIGRATION, RPC_TB_IDS_MIGRATION } from './migrations.js';
export { RPC_PG_MIGRATIONS } from './pg-schema.js';
export { RpcService, type RpcServiceOptions } from './rpc-service.js';
export { TB_ID_HANDOFF_GAP, type RpcOwnership } from './ownership.js';
export { CommandKeys, COMMAND_KEYS_FILE, type CommandKeyInfo, type CommandKeysOptions } from './command-keys/index.js';

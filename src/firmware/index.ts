export { CLUSTER_RELOAD_MS, FIRMWARE_SIGNING_KEY_FILE, FIRMWARE_SIGNING_SECRET, Firmware, MAX_PACKAGE_BYTES, type InTransaction, SIGNED_URL_TTL_SEC, type ChunkAnswer, type FirmwareDeps, type NewPackage } from './service.js';
export { FIRMWARE_MIGRATION } from './migration.js';
export { FIRMWARE_PG_MIGRATIONS } from './pg-schema.js';
export { CHECKSUM_ALGORITHMS, checksum, type ChecksumAlgorithm } from './checksum.js';
export { FW_STATES, type FirmwarePackage, type Rollout, type FwState } from './types.js';
export { FirmwareView, type DeviceFirmware } from './view.js';

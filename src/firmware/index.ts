export { Firmware, MAX_PACKAGE_BYTES, SIGNED_URL_TTL_SEC, type ChunkAnswer, type DeviceFirmware, type FirmwareDeps, type NewPackage } from './service.js';
export { FIRMWARE_MIGRATION } from './migration.js';
export { CHECKSUM_ALGORITHMS, checksum, type ChecksumAlgorithm } from './checksum.js';
export { FW_STATES, type FirmwarePackage, type Rollout, type FwState } from './types.js';

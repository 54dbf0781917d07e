export { DeviceRegistry, REGISTRY_POLL_MS, type DeviceRegistryOptions } from './registry.js';
export { validateNewDevice } from './devices.js';
export { CredentialVerifier, type VerifierOptions } from './secrets.js';
export { AreaTree, validateNewArea, PARENT_LEVEL } from './area-tree.js';
export * from './types.js';
export * from './registry-types.js';
export { PurgeJobs, PURGE_SETTLE_MS, type PurgeJob, type PurgeStage } from './purge-jobs.js';
export { DevicePurger, PURGE_RETRY_MIN_MS, PURGE_RETRY_MAX_MS, type DevicePurgerDeps } from './purger.js';

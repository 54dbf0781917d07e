export { DeviceRegistry, type DeviceRegistryOptions } from './registry.js';
export { validateNewDevice } from './devices.js';
export { CredentialVerifier, type VerifierOptions } from './secrets.js';
export { AreaTree, validateNewArea, PARENT_LEVEL } from './area-tree.js';
export * from './types.js';
export * from './registry-types.js';

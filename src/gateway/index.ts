export { Gateways, CLUSTER_RELOAD_INTERVAL_MS as GATEWAY_RELOAD_INTERVAL_MS, type GatewaysDeps, type RefusedName, type SubDeviceRefusal, type SubDeviceResolution } from './gateways.js';
export { GatewayAwareBroker } from './broker.js';
export { GATEWAY_MIGRATION } from './migrations.js';
export { GATEWAY_PG_MIGRATIONS } from './pg-schema.js';
export { subDeviceId, validSubDeviceName, MAX_SUB_DEVICE_NAME } from './names.js';

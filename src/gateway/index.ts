export { Gateways, type GatewaysDeps, type RefusedName, type SubDeviceRefusal, type SubDeviceResolution } from './gateways.js';
export { GatewayAwareBroker } from './broker.js';
export { GATEWAY_MIGRATION } from './migrations.js';
export { subDeviceId, validSubDeviceName, MAX_SUB_DEVICE_NAME } from './names.js';

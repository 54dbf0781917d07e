export { AedesBroker, DEFAULT_TUNING, type AedesBrokerDeps, type BrokerTuning } from './aedes-broker.js';
export { SINK_TOPIC, type MqttConfig } from './context.js';
export type { DevicePresence } from './session.js';
export {
  DeviceAcl, parseDeviceTopic, checkDeviceSubscription, ME_PREFIX, TOPIC_ROOT,
  type PublishAccess, type SubscribeAccess, type TopicRefusal,
} from './topics.js';
export { TokenBucket } from './rate-limit.js';
export { AbuseCounter, WarnGate } from './abuse.js';
export type * from './types.js';
export { NO_SESSION_CLAIMS, type SessionClaims } from './session-claims.js';

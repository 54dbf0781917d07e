export { AedesBroker, DEFAULT_TUNING, SINK_TOPIC, type AedesBrokerDeps, type BrokerTuning, type MqttConfig } from './aedes-broker.js';
export type { DevicePresence } from './session.js';
export {
  DeviceAcl, parseDeviceTopic, checkDeviceSubscription, ME_PREFIX, TOPIC_ROOT,
  type PublishAccess, type SubscribeAccess, type TopicRefusal,
} from './topics.js';
export { TokenBucket } from './rate-limit.js';
export { AbuseCounter, WarnGate } from './abuse.js';
export type * from './types.js';

export { LocalOnlyBus, type ClusterBus, type RemoteReadings } from './port.js';
export { CommitRelay } from './relay.js';
export { RedisClusterBus, REDIS_BUS_DEFAULTS, type RedisBusOptions, type RedisBusTuning } from './redis-bus.js';

export { LocalOnlyBus, type ClusterBus, type RemoteClaim, type RemoteReadings, type SessionClaimNotice } from './port.js';
export { CommitRelay } from './relay.js';
export { RedisClusterBus, REDIS_BUS_DEFAULTS, type RedisBusOptions, type RedisBusTuning } from './redis-bus.js';
export { PgSessionClaims, SESSION_CLAIM_DEFAULTS, type PgSessionClaimsOptions, type SessionClaimTuning } from './session-claims.js';
export { SESSION_MIGRATIONS } from './sessions-schema.js';

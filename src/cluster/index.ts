export { LocalOnlyBus, type ClusterBus, type RemoteClaim, type RemoteReadings, type SessionClaimNotice } from './port.js';
export { CommitRelay } from './relay.js';
export { RedisClusterBus, REDIS_BUS_DEFAULTS, type RedisBusOptions, type RedisBusTuning } from './redis-bus.js';
export { PgSessionClaims, SESSION_CLAIM_DEFAULTS, type PgSessionClaimsOptions, type SessionClaimTuning } from './session-claims.js';
export { SESSION_MIGRATIONS } from './sessions-schema.js';
export { NodeLeases, NODE_LEASE_DEFAULTS, type NodeLeasesOptions, type NodeLeaseTuning } from './node-leases.js';
export type { ExpiredDevice } from './lease-sql.js';
export { NODES_PG_MIGRATIONS } from './nodes-schema.js';
export { EmbeddedNode, type ClusterNodeInfo, type ClusterNodes } from './nodes-view.js';

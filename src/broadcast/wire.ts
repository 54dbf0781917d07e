/**
 * Broadcast wiring: RPC service, broadcast executor (and, as the broadcast
 * issue lands, the scheduler, the broadcast service and its routes). app.ts
 * calls wireBroadcast() once; this module owns everything broadcast-side.
 */
import type { Config } from '../config/index.js';
import type { Clock, Component, EventBus, Logger, Metrics } from '../core/index.js';
import type { StateDb } from '../storage/state/index.js';
import type { DeviceRegistry } from '../devices/index.js';
import type { BrokerPort } from '../broker/index.js';
import type { MediaLibrary } from '../media/index.js';
import type { ApiServer } from '../api/index.js';
import { RpcService } from '../rpc/index.js';
import { BroadcastExecutor } from './execution/index.js';

export interface BroadcastWiringDeps {
  config: Readonly<Config>;
  stateDb: StateDb;
  registry: DeviceRegistry;
  broker: BrokerPort;
  bus: EventBus;
  media: MediaLibrary;
  api: ApiServer;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  /** Base URL speakers use to fetch media (known once HTTP listens). */
  mediaBaseUrl: () => string;
}

export interface BroadcastWiring {
  /** In start order; stopped in reverse. */
  components: Component[];
  rpc: RpcService;
  executor: BroadcastExecutor;
}

export function wireBroadcast(d: BroadcastWiringDeps): BroadcastWiring {
  const rpc = new RpcService({ stateDb: d.stateDb, broker: d.broker, bus: d.bus, logger: d.logger.child({ part: 'rpc' }), metrics: d.metrics, clock: d.clock });
  const executor = new BroadcastExecutor({
    stateDb: d.stateDb, rpc, bus: d.bus, registry: d.registry,
    mediaUrl: (mediaId) => d.media.signedUrl(mediaId, d.mediaBaseUrl()),
    logger: d.logger.child({ part: 'executor' }), metrics: d.metrics, clock: d.clock, timeZone: d.config.tz,
  });
  return { components: [rpc, executor], rpc, executor };
}

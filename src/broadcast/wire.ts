/**
 * Broadcast wiring: RPC service, broadcast executor, the broadcast service
 * (schedules + scheduler) and its routes. app.ts calls wireBroadcast() once;
 * this module owns everything broadcast-side.
 */
import type { Config } from '../config/index.js';
import type { Clock, Component, EventBus, Logger, Metrics } from '../core/index.js';
import type { StateDb } from '../storage/state/index.js';
import type { DeviceRegistry } from '../devices/index.js';
import type { BrokerPort } from '../broker/index.js';
import type { MediaLibrary } from '../media/index.js';
import type { ApiServer } from '../api/index.js';
import { scheduleRoutes } from '../api/routes/schedules.js';
import { broadcastRoutes } from '../api/routes/broadcasts.js';
import { RpcService } from '../rpc/index.js';
import { BroadcastExecutor } from './execution/index.js';
import { BroadcastService } from './service.js';
import { GroupCommit } from './group-commit.js';

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
  service: BroadcastService;
}

export function wireBroadcast(d: BroadcastWiringDeps): BroadcastWiring {
  // Subscribed before RpcService and the executor (they subscribe in start()), see group-commit.ts.
  const group = new GroupCommit({ stateDb: d.stateDb, bus: d.bus, logger: d.logger.child({ part: 'group-commit' }) });
  group.attach();
  const rpc = new RpcService({ stateDb: d.stateDb, broker: d.broker, bus: d.bus, logger: d.logger.child({ part: 'rpc' }), metrics: d.metrics, clock: d.clock });
  const executor = new BroadcastExecutor({
    stateDb: d.stateDb, rpc, bus: d.bus, registry: d.registry,
    mediaUrl: (mediaId) => d.media.signedUrl(mediaId, d.mediaBaseUrl()),
    logger: d.logger.child({ part: 'executor' }), metrics: d.metrics, clock: d.clock, timeZone: d.config.tz,
  });
  const service = new BroadcastService({
    config: d.config, stateDb: d.stateDb, registry: d.registry, media: d.media, executor,
    logger: d.logger.child({ part: 'schedules' }), metrics: d.metrics, clock: d.clock,
    // The scheduler starts once media links can be made (the HTTP listener is up): a catch-up
    // occurrence at start-up must not fail for want of the address.
    isReady: () => { try { d.mediaBaseUrl(); return true; } catch { return false; } },
    batch: (fn) => group.runDurably(fn),
  });
  d.api.extend(async (sub, ctx) => { await sub.register(scheduleRoutes, { ctx, service }); });
  d.api.extend(async (sub, ctx) => { await sub.register(broadcastRoutes, { ctx, service, executor }); });
  return { components: [group, rpc, executor, service], rpc, executor, service };
}

/**
 * The broadcast side of Keng, assembled: RPC service, broadcast executor, the
 * broadcast service (schedules) and the state window they share.
 * app.ts calls wireBroadcast() once and places `components` and `scheduler`
 * in its start order; the API serves `service` and `executor`.
 */
import type { Config } from '../config/index.js';
import type { Clock, Component, EventBus, Logger, Metrics } from '../core/index.js';
import type { AuditRecorder } from '../audit/log.js';
import type { Db } from '../storage/sql/index.js';
import type { DeviceRegistry } from '../devices/index.js';
import type { BrokerPort } from '../broker/index.js';
import type { MediaLibrary, MediaViewer } from '../media/index.js';
import type { Principal } from '../auth/types.js';
import { RpcService, type CommandSigner, type RpcOwnership } from '../rpc/index.js';
import { BroadcastExecutor, playHooks } from './execution/index.js';
import { BroadcastService } from './service.js';
import { StateWindow } from '../storage/state/index.js';
import type { UrgentOutbound } from '../core/urgent.js';

export interface BroadcastWiringDeps {
  config: Readonly<Config>;
  /** Schedules and their occurrence claims: the state store as a Db, or PostgreSQL in cluster mode. */
  stateSql: Db<unknown>;
  /** This node's name in occurrence claims. */
  nodeId: string;
  /** Cluster mode: other nodes change schedules too; re-read them this often (0: never). */
  scheduleResyncMs?: number;
  registry: DeviceRegistry;
  broker: BrokerPort;
  bus: EventBus;
  media: MediaLibrary;
  audit: AuditRecorder;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  /** Base URL speakers use to fetch media (known once HTTP listens). */
  mediaBaseUrl: () => string;
  /** Which media a principal sees (media/access.ts): schedules and broadcasts play only those. */
  mediaViewer: (p: Principal) => MediaViewer;
  /** Signs broadcast.play / broadcast.stop at every send (device protocol §11.6); start it before `components`. */
  signer: CommandSigner;
  /** Where an emergency's commands register as urgent (core/urgent.ts): device answers wait for them. */
  urgent?: Pick<UrgentOutbound, 'hold'>;
  /** Cluster mode: RPC commands owned by the node holding their device's session (the window is on PostgreSQL then). */
  rpcOwnership?: RpcOwnership;
}

export interface BroadcastWiring {
  /** In start order; stopped in reverse. */
  components: Component[];
  /**
   * Runs the schedules: start it after the HTTP listener, since occurrences
   * (the catch-up of missed ones at start-up too) need media links.
   */
  scheduler: Component;
  rpc: RpcService;
  executor: BroadcastExecutor;
  service: BroadcastService;
  /** The state window RPC commands and broadcasts write through: units that start or stop broadcasts use it. */
  window: StateWindow;
  /** The database the window writes to (its readers read committed rows there). */
  windowDb: Db<unknown>;
  /**
   * Resolves when the state writes decided so far are committed (the state window, after the reads of
   * answers and events that memory did not hold): device answers and events are acknowledged after it.
   */
  settled: () => Promise<void>;
}

export function wireBroadcast(d: BroadcastWiringDeps): BroadcastWiring {
  // One database for the state (the embedded store, or PostgreSQL in cluster mode): commands, broadcasts and alerts
  // commit with their audit entries, and a command is owned by the node holding its device (rpc/ownership.ts).
  const rpcDb = d.stateSql;
  const window = new StateWindow({ db: rpcDb, logger: d.logger.child({ part: 'state-window' }), metrics: d.metrics });
  const rpc = new RpcService({
    db: rpcDb, window, broker: d.broker, bus: d.bus, logger: d.logger.child({ part: 'rpc' }), metrics: d.metrics, clock: d.clock,
    paramsHooks: playHooks(() => executor), signer: d.signer, ...(d.urgent ? { urgent: d.urgent } : {}),
    ...(d.rpcOwnership ? { ownership: d.rpcOwnership } : {}),
  });
  const executor: BroadcastExecutor = new BroadcastExecutor({
    db: rpcDb, window, rpc, bus: d.bus, registry: d.registry,
    mediaUrl: (mediaId) => d.media.signedUrl(mediaId, d.mediaBaseUrl()),
    logger: d.logger.child({ part: 'executor' }), metrics: d.metrics, clock: d.clock, timeZone: d.config.tz,
    reportGraceMs: d.config.broadcast.playbackReportGraceSec * 1000,
    // The service is built next; the log asks for names only once everything runs.
    names: { schedule: (id): string | undefined => service.scheduleName(id), media: (id): string | undefined => d.media.get(id)?.name },
  });
  const service: BroadcastService = new BroadcastService({
    config: d.config, stateSql: d.stateSql, nodeId: d.nodeId, window,
    ...(d.scheduleResyncMs !== undefined ? { resyncMs: d.scheduleResyncMs } : {}), registry: d.registry, media: d.media, executor, audit: d.audit, mediaViewer: d.mediaViewer,
    logger: d.logger.child({ part: 'schedules' }), metrics: d.metrics, clock: d.clock,
  });
  const scheduler: Component = { name: 'scheduler', start: () => service.startScheduler(), stop: () => service.stopScheduler() };
  return {
    components: [window, rpc, executor, service], scheduler, rpc, executor, service, window, windowDb: rpcDb,
    // An answer matched by a read reports to the executor only then: its move may start a read of its own.
    settled: () => rpc.settled().then(() => executor.settled()),
  };
}

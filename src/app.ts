/**
 * buildApp(config) wires Keng's parts and returns {start, stop}. Tests run the
 * whole service in-process on ephemeral ports (port 0).
 *
 * Every part is constructed here with what it needs passed in (constructors
 * only assign); the access policy and the authenticator chain are built once
 * and shared by the HTTP API, MQTT service clients and the live feed.
 *
 * Start order: data directory lock (one server per directory) → state store →
 * audit chain (the audit key, before anything records: src/audit/keeper.ts) →
 * device registry → shared attributes → firmware → gateways → telemetry store → device purger → ingest → node lease
 * and session claims (cluster mode) → broker → Modbus poller → media tools check →
 * media → command keys → broadcast
 * parts → HTTP API → scheduler (needs the HTTP address for media links) →
 * live feed → cluster bus, the calls between nodes (cluster mode) and the relay (embedded mode: no-ops). Stop runs in reverse: the scheduler stops before the API, the
 * broker stops taking messages before ingest flushes its last group commit,
 * the telemetry store flushes its queue, the registry flushes presence and
 * latest values, the audit chain anchors its final head, the state store
 * closes, and the lock is released last.
 */
import { mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import type { Config } from './config/index.js';
import { EventBus, Metrics, createLogger, systemClock, type Clock, type Component, type KengEvents, type Logger } from './core/index.js';
import { UrgentOutbound } from './core/urgent.js';
import { DataDirLock, StateDb, stateSqlitePort } from './storage/state/index.js';
import { DevicePurger, DeviceRegistry } from './devices/index.js';
import { createTelemetryStore, type TelemetryStore } from './storage/telemetry/index.js';
import { ClusterDatabase, type Db } from './storage/sql/index.js';
import { SharedSecrets } from './storage/secrets/index.js';
import { IngestService } from './ingest/index.js';
import { AedesBroker, type BrokerPort } from './broker/index.js';
import { principalServiceAuthenticator } from './broker/service-clients.js';
import { TlsSource } from './tls.js';
import { AdminAuth, ApiTokenAuthenticator, AuthenticatorChain, Policy, UserSessionAuthenticator, createAccounts, guardOptions, type Accounts, type Principal } from './auth/index.js';
import { ApiServer } from './api/index.js';
import { MediaLibrary, EspeakTts, MediaToolsCheck, mediaViewer } from './media/index.js';
import { wireBroadcast, type BroadcastWiring } from './broadcast/wire.js';
import { CommandKeys } from './rpc/index.js';
import { AlertService } from './alerts/index.js';
import { AlertRules } from './alerts/rules/index.js';
import { AuditChain } from './audit/index.js';
import { FORWARD_KIND, MapCatalog, ModbusDevices, ModbusLineLeases, ModbusPoller, ModbusWrites, lineHolders } from './modbus/index.js';
import { ProvisioningService } from './devices/provisioning.js';
import { SharedAttributes } from './attributes/index.js';
import { Firmware } from './firmware/index.js';
import { GatewayAwareBroker, Gateways } from './gateway/index.js';
import { ALL_MIGRATIONS, PG_STATE_SCOPES } from './migrations.js';
import { speakerBaseUrl } from './net.js';
import { LiveFeed } from './live/index.js';
import { BusCalls, CommitRelay, EmbeddedNode, LocalOnlyBus, NodeLeases, PgSessionClaims, RedisClusterBus, type ClusterBus } from './cluster/index.js';
import { webApp } from './web/index.js';

export interface BuildOptions {
  logger?: Logger;
  clock?: Clock;
  metrics?: Metrics;
}

export interface KengApp {
  readonly config: Readonly<Config>;
  readonly logger: Logger;
  readonly bus: EventBus;
  readonly metrics: Metrics;
  readonly stateDb: StateDb;
  readonly registry: DeviceRegistry;
  readonly store: TelemetryStore;
  /** Purges deleted devices' readings in the background (telemetry.onDeviceDelete = 'purge', `keng devices purge`). */
  readonly purger: DevicePurger;
  readonly ingest: IngestService;
  readonly broker: BrokerPort;
  readonly adminAuth: AdminAuth;
  readonly api: ApiServer;
  readonly media: MediaLibrary;
  readonly broadcast: BroadcastWiring;
  /** Ed25519 keys that sign broadcast.play / broadcast.stop (device protocol §11.6). */
  readonly commandKeys: CommandKeys;
  readonly alerts: AlertService;
  /** Sensor rules that raise alerts from telemetry. */
  readonly alertRules: AlertRules;
  /** Shared attributes (server-side settings pushed to devices, ThingsBoard's shared scope). */
  readonly sharedAttributes: SharedAttributes;
  /** Firmware updates (OTA): packages, staged rollouts, ThingsBoard chunk downloads, device states. */
  readonly firmware: Firmware;
  /** Modbus sensors: their settings (registry side table) and the poller. */
  readonly modbus: { devices: ModbusDevices; poller: ModbusPoller };
  /** ThingsBoard-style gateways and the devices behind them. */
  readonly gateways: Gateways;
  readonly live: LiveFeed;
  readonly accounts: Accounts;
  /** The audit key and the anchors of the audit chain (docs/audit.md). */
  readonly auditChain: AuditChain;
  /** The bearer-token chain and the access policy shared by the API, MQTT service clients and the live feed. */
  readonly authenticator: AuthenticatorChain;
  readonly policy: Policy;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Bound addresses, valid after start(). */
  addresses(): { http: { host: string; port: number }; mqtt: { host: string; port: number } };
}

/** Cluster mode: how soon a node's scheduler sees schedules created, changed or deleted through another node. */
const SCHEDULE_RESYNC_MS = 5_000;

export function buildApp(config: Readonly<Config>, opts: BuildOptions = {}): KengApp {
  const logger = opts.logger ?? createLogger(config.logLevel);
  const clock = opts.clock ?? systemClock;
  const metrics = opts.metrics ?? new Metrics();
  const bus = new EventBus();
  const dataDir = path.resolve(config.dataDir);
  const log = (module: string): Logger => logger.child({ module });

  const lock = new DataDirLock({ dataDir, logger: log('state'), clock });
  const stateDb = new StateDb({ dataDir, logger: log('state'), migrations: ALL_MIGRATIONS });
  // Cluster mode (docs/cluster.md): the PostgreSQL pool, started before and stopped after its users.
  const clusterDb = config.cluster.databaseUrl !== undefined ? new ClusterDatabase(config.cluster.databaseUrl, log('cluster'), PG_STATE_SCOPES) : null;
  // The state repositories moved to the Db port use PostgreSQL in cluster mode, state.db otherwise (docs/cluster.md).
  const stateSql: Db<unknown> = clusterDb ? clusterDb.db : stateSqlitePort(stateDb);
  const nodeId = config.cluster.nodeId ?? hostname();
  const registry = new DeviceRegistry({
    db: stateDb, sql: stateSql, bus, logger: log('devices'), metrics, clock, onDelete: config.telemetry.onDeviceDelete,
    // Cluster mode: presence changes on other nodes reach this node's live feed (built below) only, never its bus.
    ...(clusterDb ? { nodeId, remoteStatus: (e: KengEvents['status']) => live.remoteStatus(e) } : {}),
  });
  const store = createTelemetryStore(config, { dataDir, logger: log('storage'), metrics, clock, clusterDb: clusterDb?.db });
  const tls = new TlsSource(config.tls); // HTTPS and MQTT over TLS when tls.certFile/keyFile are set

  // Cluster mode: the command keys, the link-signing keys and a generated admin token are the cluster's, sealed in PostgreSQL under a key
  // derived from the audit key (known once the audit chain started, before their users start).
  const secrets = clusterDb ? new SharedSecrets({
    db: clusterDb.db, rootSecret: () => auditChain.auditKey?.bytes ?? null, rootLabel: () => auditChain.auditKey?.source ?? 'the audit key',
    clock, logger: log('secrets'), metrics: metrics.registry,
  }) : undefined;
  // Who is calling and what they may do: one chain and one policy for HTTP, MQTT service clients and socket.io.
  const adminAuth = new AdminAuth({ dataDir, adminToken: config.adminToken, logger: log('auth'), ...(secrets ? { shared: secrets } : {}) });
  const accounts = createAccounts({ db: stateSql, clock, logger: log('auth'), areas: registry, guard: guardOptions(config.auth) });
  const authenticator = new AuthenticatorChain([adminAuth, new UserSessionAuthenticator(accounts.sessions), new ApiTokenAuthenticator(accounts.tokens)]);
  const policy = new Policy(registry);
  const audit = accounts.audit;
  // Keys the audit log and anchors its head outside state.db; started right after the state store.
  const auditChain = new AuditChain({ audit, db: stateSql, dataDir, settings: config.audit, logger: log('audit'), clock });

  // Provisioning keys: ThingsBoard firmware registering itself in an area (firmware-protocols/provisioning.md).
  const provisioning = new ProvisioningService({ db: stateSql, devices: registry, audit, clock, logger: log('provisioning'), metrics: metrics.registry });
  // After the store it purges from (started after it, stopped before it); also runs purges asked under 'keep' (CLI).
  const purger = new DevicePurger({ db: stateSql, store, registry, audit, bus, logger: log('purge'), clock });

  // Cluster mode: one MQTT session per device across nodes (docs/cluster.md); the broker and the bus are built below.
  const sessionClaims = clusterDb ? new PgSessionClaims({
    db: clusterDb.db, nodeId, logger: log('sessions'), clock, metrics,
    close: (deviceId, epoch) => broker.closeClaimed(deviceId, epoch), announce: (deviceId, epoch) => clusterBus.announceClaim(deviceId, epoch),
    // Fenced (lease not renewed in time): no device is taken (CONNECT refused with 3).
    fence: { valid: (): boolean => nodeLeases!.fence.valid() },
  }) : null;
  // Cluster mode: this node's lease; every node sweeps the sessions of nodes whose lease ran out and writes their
  // devices offline (docs/cluster.md "Node leases"). Started before the session claims and the broker, stopped after
  // them: its lease ends once the broker has released its sessions. Its `fence` says until when the lease is surely
  // valid: past that, the node publishes no command, adopts nothing, closes and refuses its device connections
  // (start() below) and fails /readyz, until a renewal succeeds.
  const nodeLeases = clusterDb ? new NodeLeases({
    db: clusterDb.db, nodeId, logger: log('cluster'), metrics,
    expired: (devices) => registry.presenceExpired(devices.map((d) => d.deviceId)),
    lost: () => sessionClaims!.dropUnclaimed(),
  }) : null;
  const broker: AedesBroker = new AedesBroker({
    config: config.mqtt, authenticator: registry, presence: registry, logger: log('broker'), metrics, clock, tls,
    // Ingest is built next (it answers devices through the broker); messages only arrive once both started.
    inbound: (msg) => ingest.handle(msg),
    // IOC: API tokens with role service (or admin) subscribe read-only over MQTT to their areas' device topics.
    services: principalServiceAuthenticator({ tokens: accounts.tokens, policy, devices: registry }),
    provisioner: provisioning,
    provisionTuning: { perIpPerMinute: config.mqtt.provisionRequestsPerMinute },
    // A device listening on its `attributes` topic gets its shared attributes (built next).
    subscribed: (deviceId, topics) => sharedAttributes.subscribed(deviceId, topics),
    ...(sessionClaims ? { claims: sessionClaims } : {}),
  });
  const sharedAttributes = new SharedAttributes({ db: stateSql, registry, broker, bus, logger: log('attributes'), clock });
  // Its assignments are a layer of the shared attributes (fw_*): started after them.
  const firmware = new Firmware({ db: stateSql, dataDir, registry, attributes: sharedAttributes, bus, logger: log('firmware'), clock, metrics: metrics.registry, ...(secrets ? { secrets } : {}) });
  // ThingsBoard-style gateways (v1/gateway/...): their sub-devices are devices like any other; what is sent to
  // one (RPC) goes through its gateway, so everything that sends to devices gets the gateway-aware broker.
  const gateways = new Gateways({ db: stateSql, registry, bus, logger: log('gateway'), metrics, clock });
  const devicesBroker = new GatewayAwareBroker(broker, gateways);
  // An emergency alert's commands go out before the speakers' answers to them are handled (core/urgent.ts).
  const urgent = new UrgentOutbound();
  const ingest = new IngestService({ config, registry, store, broker, bus, logger: log('ingest'), metrics, clock, sharedAttributes, firmware, gateways, urgent,
    // Answers and events are acknowledged once the state window holding their writes has committed.
    stateDurable: () => broadcast.settled() });

  // ffprobe, ffmpeg and espeak-ng's Vietnamese voice: logged at start and shown in /readyz (never fatal).
  const mediaTools = new MediaToolsCheck({ media: config.media, tts: config.tts, logger: log('media') });
  const media = new MediaLibrary({
    // Cluster mode: the records in PostgreSQL (every node), staged files per node (<dataDir>/media may be shared).
    db: stateSql, dataDir, logger: log('media'), metrics, clock, ...(clusterDb ? { nodeId } : {}), ...(secrets ? { secrets } : {}),
    // Media a schedule plays cannot be deleted; the schedules are the broadcast service's (built next).
    isInUse: (mediaId, viewer, trx) => broadcast.service.mediaInUse(mediaId, viewer, trx),
    tts: new EspeakTts({ espeakPath: config.tts.espeakPath, ffmpegPath: config.media.ffmpegPath, speed: config.tts.speed }),
    options: {
      maxUploadBytes: config.media.maxUploadBytes, signedUrlTtlSec: config.media.signedUrlTtlSec,
      publicBaseUrl: config.media.publicBaseUrl, ffprobePath: config.media.ffprobePath, ffmpegPath: config.media.ffmpegPath,
      maxDurationSec: config.media.maxDurationSec, maxConcurrentJobs: config.media.maxConcurrentJobs, maxQueuedJobs: config.media.maxQueuedJobs,
    },
  });
  // Every signed media link (to speakers and in API replies) starts here, never at a request's Host header.
  const mediaBaseUrl = (): string => config.media.publicBaseUrl
    ?? speakerBaseUrl(config.http.host, api.address().port).replace(/^http:/, tls.configured ? 'https:' : 'http:');
  // Media belongs to areas: what a principal sees is its scope plus the areas above its own (media/access.ts).
  const mediaViewerOf = (p: Principal) => mediaViewer(policy.scope(p), p.areas, (code) => registry.getArea(code)?.parent);
  const commandKeys = new CommandKeys({ dataDir, logger: log('command-keys'), clock, ...(secrets ? { shared: secrets } : {}) });
  const broadcast = wireBroadcast({
    config, stateSql, nodeId, scheduleResyncMs: clusterDb ? SCHEDULE_RESYNC_MS : 0, registry, broker: devicesBroker, bus, media, audit, logger: log('broadcast'), metrics, clock, mediaBaseUrl, mediaViewer: mediaViewerOf, signer: commandKeys, urgent,
    // Cluster mode: RPC commands are owned by the node holding their device's session (src/rpc/ownership.ts).
    // A fenced node publishes no command and adopts none (its devices' commands stay for their owner or an adopter).
    ...(clusterDb ? { rpcOwnership: { nodeId, nudge: (owner: string) => clusterBus.nudgeRpc(owner), canPublish: (): boolean => nodeLeases!.fence.valid() } } : {}),
  });
  // Emergency alerts play as broadcasts: built on the broadcast side; a step that starts or stops one commits
  // with it and with its audit entry (a unit of the broadcast side's state window).
  const alerts = new AlertService({
    window: broadcast.window, windowDb: broadcast.windowDb, registry, media, executor: broadcast.executor, bus, audit, logger: log('alerts'), clock,
    options: { volume: config.alerts.volume, toneSec: config.alerts.toneSec, cancelNoticeValiditySec: config.alerts.cancelNoticeValiditySec },
  });
  // Started after the alerts it raises; stopped before them (it waits for an alert being raised).
  const alertRules = new AlertRules({
    window: broadcast.window, windowDb: broadcast.windowDb, resyncMs: clusterDb ? SCHEDULE_RESYNC_MS : 0,
    registry, alerts, bus, audit, logger: log('alert-rules'), clock, sender: config.alerts.sender,
  });
  // Cluster mode: each Modbus line is polled by one node, the holder of its lease (src/modbus/leases.ts).
  // Started before the poller and stopped after it: lines are given up once their last poll is done.
  // The fair share of lines counts the nodes with a live lease (NodeLeases), including those that hold no line yet.
  const modbusLeases = clusterDb && nodeLeases ? new ModbusLineLeases({
    db: clusterDb.db, nodeId, liveNodes: nodeLeases, logger: log('modbus'), metrics,
  }) : null;
  // Modbus sensors: a side table of the registry (transport, register map, poll interval).
  const modbus = new ModbusDevices({
    db: stateSql, registry, catalog: MapCatalog.shipped(), clock, serialPathPrefixes: config.modbus.serialPathPrefixes,
    onBadRow: (deviceId, err) => log('modbus').error({ err, deviceId }, 'unreadable Modbus settings row; device not polled'),
    ...(clusterDb ? { lineHolders: () => lineHolders(clusterDb.db) } : {}),
  });
  // Polls them; their readings take the path of MQTT telemetry (ingest). Starts after ingest, stops before it.
  const modbusPoller = new ModbusPoller({
    devices: modbus, registry, sink: ingest.submitReadings, bus, logger: log('modbus'), metrics, clock, options: config.modbus,
    ...(modbusLeases ? { gate: modbusLeases } : {}),
  });
  // Cluster mode: calls between nodes over the bus (src/cluster/calls.ts); the bus is built below.
  const busCalls = config.cluster.redisUrl === undefined ? null : new BusCalls({
    bus: { sendDirect: (to, body) => clusterBus.sendDirect(to, body) }, nodeId, logger: log('cluster-calls'), metrics,
  });
  // Writes as operators ask for them, audited; in cluster mode forwarded to the node polling the device's line.
  const modbusWrites = new ModbusWrites({
    poller: modbusPoller, audit, logger: log('modbus'),
    ...(clusterDb && busCalls ? {
      cluster: { nodeId, holders: () => lineHolders(clusterDb.db), calls: busCalls, requestTimeoutMs: config.modbus.requestTimeoutMs },
    } : {}),
  });
  // The node polling a line writes for callers of every node (their role and areas were checked by the node they reached).
  busCalls?.serve(FORWARD_KIND, (payload, ctx) => modbusWrites.serve(payload, ctx));
  const api = new ApiServer({
    config, registry, store, broker: devicesBroker, authenticator, policy, audit, bus, metrics, logger: log('api'), clock, tls,
    // liveBus (the cluster bus, built below): degraded while Redis is away, never not-ready.
    readyChecks: {
      media: () => mediaTools.report(),
      ...(config.cluster.redisUrl === undefined ? {} : { liveBus: () => clusterBus.report() }),
      // Failed renewals only show in its detail (PostgreSQL away already fails `telemetry`); not ready while fenced.
      ...(nodeLeases ? { nodeLease: () => nodeLeases.report() } : {}),
      // Commands, broadcasts and alerts commit through it: a node that cannot is drained.
      stateWindow: () => broadcast.window.report(),
    },
    services: {
      accounts, media, mediaLinkBase: mediaBaseUrl, broadcasts: { service: broadcast.service, executor: broadcast.executor }, rpc: broadcast.rpc, commandKeys, alerts, alertRules,
      auditHead: () => auditChain.signedHead(),
      modbus: { devices: modbus, write: (req) => modbusWrites.write(req) },
      provisioning,
      sharedAttributes, firmware,
      gateways,
      clusterNodes: nodeLeases ?? new EmbeddedNode({ nodeId, startedAt: clock.now(), connectedDevices: () => broker.connectedCount() }),
      web: webApp({ tz: config.tz, mapTileUrl: config.web.mapTileUrl, mapTileAttribution: config.web.mapTileAttribution }),
    },
  });

  // socket.io on the HTTP port; stops before the API (it must not close fastify's server itself).
  const live = new LiveFeed({
    bus, authenticator, policy, registry, logger: log('live'), metrics,
    options: { tz: config.tz, corsOrigins: [...config.http.corsOrigins], batchIntervalMs: config.live.batchIntervalMs, maxClients: config.live.maxClients,
      maxEventRate: config.live.maxEventRate, throttleIntervalMs: config.live.throttleIntervalMs },
    httpServer: () => api.fastify.server,
  });

  // Cluster mode: readings committed here go to the other nodes' live feeds and IOC clients, and theirs come to
  // ours, over Redis (best effort: docs/cluster.md). Remote readings reach those two views only, never the bus
  // (rules, alerts, storage, presence act on the node that ingested them). Embedded mode: a no-op.
  const clusterBus: ClusterBus = config.cluster.redisUrl === undefined ? new LocalOnlyBus() : new RedisClusterBus({
    url: config.cluster.redisUrl, nodeId, logger: log('cluster-bus'), clock, metrics,
    claimed: (c) => sessionClaims?.remoteClaim(c),
    rpcNudged: () => broadcast.rpc.nudge(),
    direct: (m) => busCalls?.received(m),
    remote: (events) => {
      live.remoteTelemetry(events);
      for (const e of events) broker.publishTelemetry(e);
    },
  });
  // Started after the live feed and broker it feeds, stopped before them; the relay (committed batches → bus) last.
  // The calls between nodes start after the bus and stop before it: writes served for other nodes answer before it closes.
  const clusterRelay = new CommitRelay({ bus, cluster: clusterBus, logger: log('cluster-bus') });

  const components: Component[] = [lock, ...(clusterDb ? [clusterDb] : []), stateDb, auditChain, registry, sharedAttributes, firmware, gateways, store, purger, ingest, ...(nodeLeases ? [nodeLeases] : []), ...(sessionClaims ? [sessionClaims] : []), broker, ...(modbusLeases ? [modbusLeases] : []), modbusPoller, mediaTools, media, commandKeys, ...broadcast.components, alerts, alertRules, adminAuth, api, broadcast.scheduler, live, clusterBus, ...(busCalls ? [busCalls] : []), clusterRelay];
  const started: Component[] = [];
  const unsubscribe: Array<() => void> = [];

  return {
    config, logger, bus, metrics, stateDb, registry, store, purger, ingest, broker, adminAuth, api, media, broadcast, commandKeys, alerts, alertRules, live, accounts, auditChain, authenticator, policy, sharedAttributes, firmware,
    modbus: { devices: modbus, poller: modbusPoller }, gateways,
    async start() {
      mkdirSync(dataDir, { recursive: true });
      if (clusterDb) logger.info({ nodeId, dataDir }, 'cluster mode: the state is in the cluster database');
      // Fenced: the devices go (through the balancer) to a node whose lease holds; no database is asked.
      if (nodeLeases && sessionClaims) {
        unsubscribe.push(nodeLeases.fence.onChange((fenced) => {
          if (fenced) logger.info({ closed: sessionClaims.dropAll() }, 'fenced: device connections closed');
        }));
      }
      unsubscribe.push(bus.on('telemetry', (e) => broker.publishTelemetry(e)));
      // A disabled device loses its connection at once; a deleted one also its persistent MQTT session.
      unsubscribe.push(bus.on('device.changed', (e) => {
        if (e.change === 'deleted') broker.forget(e.deviceId);
        else if (e.change === 'updated' && registry.getDevice(e.deviceId)?.enabled === false) broker.kick(e.deviceId);
      }));
      try {
        for (const c of components) {
          await c.start();
          started.push(c);
        }
      } catch (err) {
        // Nothing is half-started: undo what did start, then report.
        await stopAll(started, logger);
        throw err;
      }
      const a = this.addresses();
      logger.info({ http: a.http, mqtt: a.mqtt, store: store.kind, dataDir }, 'keng started');
    },
    async stop() {
      api.beginClosing();
      for (const off of unsubscribe.splice(0)) off();
      await stopAll(started, logger);
      logger.info('keng stopped');
    },
    addresses() {
      return { http: api.address(), mqtt: broker.address().mqtt };
    },
  };
}

async function stopAll(started: Component[], logger: Logger): Promise<void> {
  while (started.length) {
    const c = started.pop()!;
    try { await c.stop(); } catch (err) { logger.error({ err, component: c.name }, 'error while stopping'); }
  }
}

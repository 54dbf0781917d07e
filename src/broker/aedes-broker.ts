/**
 * The embedded MQTT 3.1.1 broker (aedes) behind BrokerPort: lifecycle,
 * listeners, server → device publishes; every aedes hook looks up the
 * connection's session once and hands it to the module of its kind, as aedes
 * hands each packet to one handler (lib/handlers/index.js):
 * - devices: device-hooks.ts (firmware-protocols/device-protocol.md §1
 *   connection, §4 access rules, §7 limits never cost acknowledged data,
 *   §8 delivery guarantee, §13 ThingsBoard compatibility);
 * - read-only service clients (the IOC, API tokens): service-clients.ts.
 *
 * Spec device-protocol.md, clauses implemented here:
 * - Sessions belong to devices: the aedes client id is the device id (or a
 *   service token's namespace), whatever id the client sent.
 * - "Connection", TLS (8883): a second listener on mqtt.tlsPort feeds the same
 *   aedes instance when tls.certFile / tls.keyFile are set (src/tls.ts).
 * - Behind a load balancer (mqtt.proxyProtocol "required", docs/load-balancer.md):
 *   both listeners read a PROXY protocol header first (proxy-accept.ts).
 */
import { settleWithin, waitUntil } from '../core/async.js';
import net from 'node:net';
import tls from 'node:tls';
import { Aedes, type AedesPublishPacket, type Client, type PublishPacket, type Subscription } from 'aedes';
import type { Clock } from '../core/clock.js';
import { limitConnectionsPerIp, PerIpConnections } from '../core/connection-limit.js';
import { Errors } from '../core/errors.js';
import type { KengEvents } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { DeviceAuthenticator } from '../devices/types.js';
import type { TlsSource } from '../tls.js';
import { BrokerContext, SINK_TOPIC, authError, type AuthDone, type MqttConfig, type PubDone } from './context.js';
import { DEVICE_MAX_QOS, DeviceHooks } from './device-hooks.js';
import type { SessionClaims } from './session-claims.js';
import { deliverToSession } from './direct-delivery.js';
import { installBufferListReads } from './buffer-list-reads.js';
import { installFrameGuard } from './frame-guard.js';
import { ProvisionSessions, isProvisionLogin, type ProvisionTuning } from './provision-session.js';
import { proxyGate } from './proxy-accept.js';
import type { DeviceProvisioner } from '../devices/provisioning.js';
import { capGrantedQos } from './granted-qos.js';
import { ServiceClients, serviceConnectionsGauge, serviceCredential, serviceMaxQos, type ServiceAuthenticator } from './service-clients.js';
import type { DevicePresence } from './session.js';
import type { BrokerPort, DeliverOptions, InboundHandler, PublishOptions } from './types.js';

import { DEFAULT_TUNING, type BrokerTuning } from './tuning.js';

export { DEFAULT_TUNING, type BrokerTuning };

export interface AedesBrokerDeps {
  config: MqttConfig;
  authenticator: DeviceAuthenticator;
  presence: DevicePresence;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  /** Where devices' accepted messages go (ingest); PUBACK waits for its promise. */
  inbound: InboundHandler;
  /** Admits read-only service clients (API tokens of role service or admin, see service-clients.ts); absent: none. */
  services?: ServiceAuthenticator;
  tuning?: Partial<BrokerTuning>;
  /** TLS material (null / absent / not configured: no TLS listener). */
  tls?: Pick<TlsSource, 'load'> | null;
  /** Registers ThingsBoard firmware that logs in as `provision` (provision-session.ts); absent: that login is refused. */
  provisioner?: DeviceProvisioner;
  provisionTuning?: Partial<ProvisionTuning>;
  /** A device's granted subscriptions, as stored (real-id form): shared attributes are pushed once it listens. */
  subscribed?: (deviceId: string, topics: string[]) => void;
  /** Cluster mode: one session per device across nodes (session-claims.ts); absent: embedded, none. */
  claims?: SessionClaims;
}

/** Bytes a PUBLISH frame may have beyond its payload: topic (≤ 64 KiB + 2) and packet id. */
const FRAME_OVERHEAD = 65_536 + 16;
const LIMITS_SWEEP_MS = 60_000;
/** Frames below this are always read before being refused (a 1 MiB firmware bug is dropped, not disconnected). */
const HARD_FRAME_FLOOR = 2 * 1_048_576;

export class AedesBroker implements BrokerPort {
  readonly name = 'broker';

  private readonly config: MqttConfig;
  private readonly tuning: BrokerTuning;
  /** What the hook modules share with the broker (aedes instance, stop flag, sessions, limits, counters). */
  private readonly ctx: BrokerContext;
  private readonly devices: DeviceHooks;
  /** Read-only service (IOC) clients; null when the broker admits none. */
  private readonly services: ServiceClients | null;
  private readonly provision: ProvisionSessions | null;
  private server: net.Server | null = null;
  private tlsServer: tls.Server | null = null;
  /** mqtt.proxyProtocol "required" with TLS: the TCP listener that reads the header, then hands the socket to tlsServer. */
  private tlsFront: net.Server | null = null;
  private listening = false;
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly deps: AedesBrokerDeps) {
    this.config = deps.config;
    this.tuning = { ...DEFAULT_TUNING, ...(deps.tuning ?? {}) };
    this.ctx = new BrokerContext(deps.config, deps.logger, deps.metrics, deps.clock, (client) => this.onGone(client, 'socket_closed'));
    this.devices = new DeviceHooks(this.ctx, deps.authenticator, deps.presence, deps.inbound, deps.claims);
    this.services = deps.services ? new ServiceClients({
      ctx: this.ctx, auth: deps.services, devices: deps.authenticator, gauge: serviceConnectionsGauge(deps.metrics.registry), recheckMs: this.tuning.serviceRecheckMs,
    }) : null;
    this.provision = deps.provisioner ? new ProvisionSessions({ ctx: this.ctx, provisioner: deps.provisioner, tuning: deps.provisionTuning }) : null;
  }

  /** The running aedes instance; the context holds it, for the hook modules too. */
  private get aedes(): Aedes | null {
    return this.ctx.aedes;
  }

  /** Cluster mode: the device's claim `epoch` was taken by another node or a later claim; closes it if still here. */
  closeClaimed(deviceId: string, epoch: number): boolean {
    return this.devices.closeClaimed(deviceId, epoch);
  }

  /** Bus 'telemetry' (durable readings) → service subscribers; a no-op unless one may receive it. */
  publishTelemetry(e: KengEvents['telemetry']): void {
    this.services?.publishTelemetry(e);
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    if (this.aedes) return;
    const t = this.tuning;
    const tlsMaterial = this.deps.tls?.load() ?? null; // throws ConfigError naming the setting
    this.ctx.stopping = false;
    // The MQTT parser's header reads without a Buffer each (buffer-list-reads.ts); process-wide, once.
    if (!installBufferListReads()) this.deps.logger.debug('mqtt-packet buffer list not as expected: its reads stay as they are');
    const aedes = await Aedes.createBroker({
      connectTimeout: t.connectTimeoutMs,
      heartbeatInterval: t.heartbeatIntervalMs,
      keepaliveLimit: t.keepaliveLimit,
      queueLimit: t.queueLimit,
      drainTimeout: t.drainTimeoutMs,
      maxClientsIdLength: t.maxClientsIdLength,
      authenticate: this.authenticate,
      authorizePublish: this.authorizePublish,
      authorizeSubscribe: this.authorizeSubscribe,
      authorizeForward: this.authorizeForward,
    });
    this.ctx.aedes = aedes;
    skipSinkRouting(aedes);
    aedes.on('client', (c) => this.onClient(c));
    aedes.on('clientDisconnect', (c) => this.onGone(c, 'disconnect'));
    aedes.on('keepaliveTimeout', (c) => this.onGone(c, 'keepalive_timeout'));
    aedes.on('clientError', (c, err) => this.onGone(c, 'error', err));
    aedes.on('connectionError', (c, err) => this.onConnectionError(c, err));
    aedes.on('ping', (_p, c) => { const s = this.ctx.states.get(c); if (s?.kind === 'device') this.devices.ping(s); });
    aedes.on('unsubscribe', (topics, c) => this.onUnsubscribe(topics, c));
    aedes.on('subscribe', (subs, c) => this.onSubscribe(subs, c));
    // aedes emits 'error' for persistence failures; an unhandled 'error' event would crash the process.
    (aedes as unknown as NodeJS.EventEmitter).on('error', (err: Error) => this.deps.logger.error({ err }, 'mqtt broker error'));

    const sockOpts = { noDelay: true, keepAlive: true, keepAliveInitialDelay: t.tcpKeepAliveMs };
    // Connections per client address, plain and TLS together, refused before CONNECT (TLS: before the handshake).
    const perIp = new PerIpConnections({ maxPerIp: this.config.maxConnectionsPerIp, exemptLoopback: this.config.exemptLoopback });
    const proxied = this.config.proxyProtocol === 'required';
    const server = net.createServer(sockOpts, proxied ? proxyGate(this.ctx, perIp, t.proxyHeaderTimeoutMs, (sock) => this.onConnection(sock)) : (sock) => this.onConnection(sock));
    this.server = server;
    const tlsServer = tlsMaterial
      ? tls.createServer({ ...sockOpts, key: tlsMaterial.key, cert: tlsMaterial.cert, ca: tlsMaterial.ca, handshakeTimeout: t.connectTimeoutMs },
        (sock) => this.onConnection(sock))
      : null;
    this.tlsServer = tlsServer;
    // Behind a proxy the header comes before the TLS handshake: a TCP listener reads it, then the TLS server takes the socket.
    const tlsFront = tlsServer && proxied ? net.createServer(sockOpts, proxyGate(this.ctx, perIp, t.proxyHeaderTimeoutMs, (sock) => tlsServer.emit('connection', sock))) : null;
    this.tlsFront = tlsFront;
    // Without a proxy the limit applies at accept, to the socket's own address; behind one, to the header's (proxyGate).
    if (!proxied) for (const s of [server, tlsServer]) if (s) limitConnectionsPerIp(s, perIp, () => this.ctx.count('connect', 'per_ip_limit'));
    const tlsListener = tlsFront ?? tlsServer;
    try {
      await listen(server, this.config.port, this.config.host);
      if (tlsListener) await listen(tlsListener, this.config.tlsPort ?? 8883, this.config.host);
    } catch (err) {
      this.server = null;
      this.tlsServer = null;
      this.tlsFront = null;
      await Promise.all([server, tlsListener].map((s) => new Promise<void>((r) => (s?.listening ? s.close(() => r()) : r()))));
      this.ctx.aedes = null;
      await new Promise<void>((r) => aedes.close(() => r()));
      throw err;
    }
    server.on('error', (err) => this.deps.logger.error({ err }, 'mqtt listener error'));
    if (tlsServer) {
      tlsServer.on('error', (err) => this.deps.logger.error({ err }, 'mqtt TLS listener error'));
      tlsServer.on('tlsClientError', (err) => this.deps.logger.debug({ err: err.message }, 'mqtt TLS handshake failed'));
    }
    this.listening = true;
    this.sweepTimer = setInterval(() => this.devices.sweepLimits(), LIMITS_SWEEP_MS);
    this.sweepTimer.unref();
    this.deps.logger.info({ ...this.address(), ...(tlsMaterial ? { certSubject: tlsMaterial.subject, certValidTo: tlsMaterial.validTo } : {}) }, 'mqtt broker listening');
  }

  /**
   * Stop accepting, let in-flight handler calls finish (their PUBACKs go
   * out), mark every connected device offline, close all clients without
   * their wills (a server stop is not a device crash), close aedes. Each
   * phase is bounded by tuning.stopTimeoutMs.
   */
  async stop(): Promise<void> {
    const aedes = this.aedes;
    const server = this.server;
    if (!aedes || !server) return;
    this.ctx.stopping = true;
    this.listening = false;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    const tlsListener = this.tlsFront ?? this.tlsServer;
    const serverClosed = Promise.all([server, tlsListener].map((s) => new Promise<void>((r) => (s ? s.close(() => r()) : r())))).then(() => undefined);
    const bound = this.tuning.stopTimeoutMs;

    this.devices.releaseHeld();
    await waitUntil(() => this.devices.settled(), bound);
    this.devices.offlineAll(this.deps.clock.now());
    this.services?.clear();
    this.provision?.clear();
    this.deps.metrics.mqttConnections.set(0);

    await settleWithin(new Promise<void>((r) => aedes.close(() => r())), bound);
    for (const sock of this.sockets) sock.destroy();
    await settleWithin(serverClosed, bound);
    this.ctx.aedes = null;
    this.server = null;
    this.tlsServer = null;
    this.tlsFront = null;
    this.deps.logger.info('mqtt broker stopped');
  }

  ready(): boolean {
    return this.listening && !this.ctx.stopping;
  }

  address(): { mqtt: { host: string; port: number }; mqtts?: { host: string; port: number } } {
    const a = this.server?.address();
    const mqtt = a && typeof a === 'object' ? { host: a.address, port: a.port } : { host: this.config.host, port: this.config.port };
    const tlsListener = this.tlsFront ?? this.tlsServer;
    if (!tlsListener) return { mqtt };
    const b = tlsListener.address();
    return { mqtt, mqtts: b && typeof b === 'object' ? { host: b.address, port: b.port } : { host: this.config.host, port: this.config.tlsPort ?? 8883 } };
  }

  // ------------------------------------------------------------ server → device

  /** Server → device publish; bypasses authorizePublish (aedes.publish). Default QoS 1 (device protocol §3: commands are QoS 1). */
  publish(topic: string, payload: string | Buffer, opts: PublishOptions = {}): Promise<void> {
    const aedes = this.aedes;
    if (!aedes || aedes.closed) return Promise.reject(Errors.NOT_READY('mqtt broker'));
    const packet = {
      cmd: 'publish' as const,
      topic,
      payload: typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload,
      qos: opts.qos ?? 1,
      retain: opts.retain ?? false,
      dup: false,
    };
    return new Promise((resolve, reject) => aedes.publish(packet, (err) => (err ? reject(err) : resolve())));
  }

  /** To the device's connection whatever its subscriptions (direct-delivery.ts). */
  deliverTo(deviceId: string, topic: string, payload: string | Buffer, opts: DeliverOptions = {}): Promise<boolean> {
    const s = this.aedes && !this.aedes.closed ? this.devices.current(deviceId) : undefined;
    if (!s) return Promise.resolve(false);
    const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
    return deliverToSession(s, topic, body, opts.qos ?? 1, opts.viaMe === true).then(() => true);
  }

  isConnected(deviceId: string): boolean {
    return this.devices.isConnected(deviceId);
  }

  credentialOf(deviceId: string): 'secret' | 'token' | null {
    const s = this.devices.current(deviceId);
    return s === undefined ? null : s.identity.viaToken ? 'token' : 'secret';
  }

  connectedCount(): number {
    return this.devices.connectedCount();
  }

  kick(deviceId: string, credential?: 'secret' | 'token'): void {
    this.devices.kick(deviceId, credential);
  }

  forget(deviceId: string): void {
    this.devices.forget(deviceId);
  }

  // ------------------------------------------------------------ connections

  private onConnection(sock: net.Socket): void {
    const aedes = this.aedes;
    if (sock.destroyed) return; // over mqtt.maxConnectionsPerIp (closed by the listener's limit)
    if (this.ctx.stopping || !aedes) { sock.destroy(); return; }
    this.sockets.add(sock);
    sock.once('close', () => this.sockets.delete(sock));
    const client = aedes.handle(sock);
    // Payloads up to the hard cap are read, acknowledged and dropped (payload_too_large) so a
    // misbehaving device moves on instead of resending forever; only frames beyond it cut the connection.
    const maxFrame = Math.max(this.config.maxPayloadBytes * 4, HARD_FRAME_FLOOR) + FRAME_OVERHEAD;
    installFrameGuard(client, maxFrame, (announced) => {
      this.ctx.count('publish', 'frame_too_large');
      const s = this.ctx.states.get(client);
      this.deps.logger.warn({ clientId: client.id, deviceId: s?.kind === 'device' ? s.deviceId : undefined, announced, maxFrame }, 'mqtt frame too large: connection closed');
      sock.destroy(new Error('frame too large'));
    });
    // SUBACK tells the QoS granted, not the one asked for: devices 1, service clients 1 or 0 (granted-qos.ts).
    capGrantedQos(client, (c) => (this.services !== null && c.username !== undefined && serviceCredential(c.username, c.password) !== null
      ? serviceMaxQos(c.clean !== false) : DEVICE_MAX_QOS));
  }

  // ------------------------------------------------------------ aedes hooks: one session lookup, one switch on its kind

  /** aedes `authenticate` hook: device protocol §1. Runs before the client is registered. */
  private readonly authenticate = (client: Client, username: string | undefined, password: Buffer | undefined, done: AuthDone): void => {
    if (this.ctx.stopping) { done(authError(3, 'server stopping'), null); return; }
    // aedes checks the length for MQTT 3.1 only; an unbounded id costs memory in every log line and map.
    if (client.id.length > this.tuning.maxClientsIdLength) { this.ctx.refuseConnect(client, 'client_id_too_long', 2, done); return; }
    if (!username) { this.ctx.refuseConnect(client, 'bad_credentials', 4, done); return; }
    if (this.provision !== null && isProvisionLogin(username, password ?? undefined, (id) => this.deps.authenticator.isDevice(id))) { this.provision.authenticate(client, done); return; }
    const services = this.services;
    const token = services === null ? null : serviceCredential(username, password ?? undefined);
    if (services !== null && token !== null) services.authenticate(client, token, done);
    else this.devices.authenticate(client, username, password ?? undefined, done);
  };

  /**
   * Errors before a connection is admitted. MQTT 5 clients (e.g. current ThingsBoard IoT Gateway releases) get
   * CONNACK 1 from aedes; they are counted as refused (`protocol_version`) so an operator can tell why such a
   * gateway never connects (firmware-protocols/gateway.md).
   */
  private onConnectionError(client: Client, err: Error): void {
    if (err.message === 'unacceptable protocol version') {
      this.ctx.count('connect', 'protocol_version');
      this.deps.logger.debug({ clientId: client.id }, 'mqtt connect refused: only MQTT 3.1.1 (and 3.1) are served');
      return;
    }
    this.deps.logger.debug({ err: err.message }, 'mqtt connection error before CONNECT');
  }

  /** aedes 'client': registered (authenticated, CONNACK about to be sent). */
  private onClient(client: Client): void {
    const s = this.ctx.states.get(client);
    if (s === undefined) return;
    if (s.kind === 'device') this.devices.registered(s);
    // One branch per kind, here and below: each kind's hooks take its own session type.
    else if (s.kind === 'provision') s.hooks.registered(s);
    else s.hooks.registered(s);
  }

  /** First of clientDisconnect / keepaliveTimeout / clientError / socket close (each kind acts on the first only). */
  private onGone(client: Client, cause: string, err?: Error): void {
    const s = this.ctx.states.get(client);
    if (s === undefined) return;
    if (s.kind === 'device') this.devices.gone(s, cause, err);
    else if (s.kind === 'provision') s.hooks.gone(s, cause);
    else s.hooks.gone(s, cause);
  }

  /** aedes `authorizePublish`: the whole inbound path, before PUBACK (device-hooks.ts). */
  private readonly authorizePublish = (client: Client | null, packet: PublishPacket, cb: PubDone): void => {
    if (client === null) { cb(null); return; } // the server's own publishes (e.g. stale wills)
    const s = this.ctx.states.get(client);
    if (s === undefined) cb(new Error('not authenticated'));
    else if (s.kind === 'device') this.devices.authorizePublish(s, client, packet, cb);
    else if (s.kind === 'provision') s.hooks.authorizePublish(s, packet, cb);
    else s.hooks.authorizePublish(s, packet, cb);
  };

  /** aedes `authorizeSubscribe`: refused filters get `null` → granted 0x80 in SUBACK (lib/handlers/subscribe.js storeSubscriptions). */
  private readonly authorizeSubscribe = (client: Client, sub: Subscription, cb: (error: Error | null, subscription?: Subscription | null) => void): void => {
    const s = this.ctx.states.get(client);
    if (s === undefined) cb(null, null);
    else if (s.kind === 'device') cb(null, this.devices.authorizeSubscribe(s, client, sub));
    else if (s.kind === 'provision') cb(null, s.hooks.authorizeSubscribe(s, sub));
    else cb(null, s.hooks.authorizeSubscribe(s, sub));
  };

  /** aedes `authorizeForward`: the packet to deliver to `client` (possibly rewritten), or null. */
  private readonly authorizeForward = (client: Client, packet: AedesPublishPacket): AedesPublishPacket | null => {
    const s = this.ctx.states.get(client);
    if (s === undefined) return null;
    if (s.kind === 'provision') return s.hooks.forward(s, packet);
    return s.kind === 'device' ? this.devices.forward(s, packet) : s.hooks.forward(s, packet);
  };

  /** aedes has no unsubscribe hook: its 'unsubscribe' event, after the filters are removed. */
  private onUnsubscribe(topics: string[], client: Client): void {
    const s = this.ctx.states.get(client);
    if (s === undefined) return;
    if (s.kind === 'device') this.devices.unsubscribed(s, client, topics);
    else if (s.kind === 'provision') s.hooks.unsubscribed(s, topics);
    else s.hooks.unsubscribed(s, topics);
  }

  /** aedes emits this once the subscriptions are stored (granted 128: refused). */
  private onSubscribe(subs: Subscription[], client: Client): void {
    const notify = this.deps.subscribed;
    const s = this.ctx.states.get(client);
    if (notify === undefined || s?.kind !== 'device') return;
    const granted = subs.filter((x) => (x.qos as number) !== 128).map((x) => x.topic);
    if (granted.length) notify(s.deviceId, granted);
  }
}

function listen(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(); });
  });
}

/**
 * aedes routes every packet authorizePublish let through, after the PUBACK:
 * a Packet copy, the retained store, the subscription trie, the offline-queue
 * lookup (two promises) and the 'publish' event. A packet pointed at the sink
 * (every device message: consumed by ingest or refused, context.ts sink())
 * has no subscriber by construction, so that work is skipped: it was about a
 * tenth of the broker thread per device message at full load.
 */
function skipSinkRouting(aedes: Aedes): void {
  // Called as publish(packet, done) by the API and publish(packet, client, done) by aedes' own handlers.
  type Done = (err?: Error | null) => void;
  type Publish = (packet: PublishPacket, client?: Client | Done | null, done?: Done) => void;
  const target = aedes as unknown as { publish: Publish };
  const route = target.publish.bind(aedes);
  target.publish = (packet, client, done) => {
    if (packet.topic !== SINK_TOPIC) { route(packet, client, done); return; }
    const cb = typeof client === 'function' ? client : done;
    if (cb) cb(null);
  };
}

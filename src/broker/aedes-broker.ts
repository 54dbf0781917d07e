/**
 * The embedded MQTT 3.1.1 broker (aedes) behind BrokerPort.
 *
 * Spec device-protocol.md, clauses implemented here:
 * - "Connection": id + secret or access token at CONNECT; unknown devices,
 *   wrong secrets and disabled devices refused (CONNACK 4, or 5 for disabled).
 * - "Access rules": publishes and subscriptions checked by DeviceAcl
 *   (topics.ts); a refused publish is dropped (still acknowledged), counted
 *   and logged; a refused subscription is granted as 0x80; repeated abuse
 *   disconnects; presence follows connect / disconnect / keep-alive loss.
 * - "Limits never cost acknowledged data": over its rate a device is slowed
 *   (its callbacks held, so aedes stops reading its socket), never dropped.
 * - Sessions belong to devices: the aedes client id is the device id (or a
 *   service token's namespace), whatever id the client sent.
 * - "Telemetry payload", delivery guarantee: the inbound handler is awaited
 *   inside authorizePublish, the only hook aedes runs before it writes PUBACK
 *   (lib/handlers/publish.js: authorizePublish → enqueuePublish → PUBACK →
 *   broker.publish), so PUBACK means the handler resolved (readings on disk).
 *   A handler that throws fails the callback: no PUBACK, connection closed.
 * - "ThingsBoard compatibility": `me` topics for token devices; `me`
 *   subscriptions rewritten to the real id, deliveries rewritten back.
 * - "Connection", TLS (8883): a second listener on mqtt.tlsPort feeds the same
 *   aedes instance when tls.certFile / tls.keyFile are set (src/tls.ts).
 *
 * Read-only service clients (the IOC, API tokens) are handled by
 * ServiceClients (service-clients.ts): each hook below first looks for a
 * device Session and only then, off the device path, for a service session.
 */
import net from 'node:net';
import tls from 'node:tls';
import { Aedes, type AedesPublishPacket, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes';
import type { Config } from '../config/index.js';
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import type { KengEvents } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { DeviceAuthenticator } from '../devices/types.js';
import type { TlsSource } from '../tls.js';
import { installFrameGuard } from './frame-guard.js';
import { DEFAULT_SERVICE_RECHECK_MS, ServiceClients, ownerKey, serviceCredential, type ServiceAuthenticator } from './service-clients.js';
import { DeviceLimits, Session, suppressWill, type DevicePresence } from './session.js';
import type { PublishAccess } from './topics.js';
import type { BrokerPort, InboundHandler, InboundMessage, InboundType, PublishOptions } from './types.js';

/**
 * Where refused (and consumed) publishes go after authorizePublish: aedes
 * routes every authorized packet, so we point it at a topic nobody can
 * subscribe to (authorizeSubscribe refuses `$` topics; `#`/`+` never match `$`).
 */
export const SINK_TOPIC = '$keng/dropped';

export type MqttConfig = Readonly<Config['mqtt']>;

/** aedes and socket settings that are not in the config file (tests shorten them). */
export interface BrokerTuning {
  /** Time allowed between TCP accept and CONNECT (aedes default 30 s). */
  connectTimeoutMs: number;
  /** aedes $SYS heartbeat interval; wills of dead cluster peers are swept every 4×. */
  heartbeatIntervalMs: number;
  /**
   * Maximum MQTT keep-alive a client may ask for. 0 = no limit: aedes refuses
   * keep-alive 0 whenever a limit is set (with non-3.1.1 return code 6), and
   * field firmware sending keep-alive 0 exists; TCP keep-alive below detects
   * dead peers of such clients instead.
   */
  keepaliveLimit: number;
  /** Packets a client may pipeline before its CONNACK (authentication takes ~50 ms). */
  queueLimit: number;
  /** A client whose socket does not drain within this time is disconnected. */
  drainTimeoutMs: number;
  /** Client id length limit (aedes applies it to MQTT 3.1 only; ids up to 64 chars plus suffixes). */
  maxClientsIdLength: number;
  /** Bound on each phase of stop(). */
  stopTimeoutMs: number;
  /** TCP keep-alive probe delay (dead-peer detection for keep-alive 0 clients). */
  tcpKeepAliveMs: number;
  /** How often service clients' tokens are re-checked (revoked → disconnected). */
  serviceRecheckMs: number;
}

export const DEFAULT_TUNING: BrokerTuning = {
  connectTimeoutMs: 10_000,
  heartbeatIntervalMs: 60_000,
  keepaliveLimit: 0,
  queueLimit: 100,
  drainTimeoutMs: 30_000,
  maxClientsIdLength: 256,
  stopTimeoutMs: 5_000,
  tcpKeepAliveMs: 60_000,
  serviceRecheckMs: DEFAULT_SERVICE_RECHECK_MS,
};

export interface AedesBrokerDeps {
  config: MqttConfig;
  authenticator: DeviceAuthenticator;
  presence: DevicePresence;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  tuning?: Partial<BrokerTuning>;
  /** TLS material (null / absent / not configured: no TLS listener). */
  tls?: Pick<TlsSource, 'load'> | null;
}

type AuthDone = (error: AuthenticateError | null, success: boolean | null) => void;
type PubDone = (error?: Error | null) => void;
/** A message held back by its device's rate limit: its callback runs when the timer fires. */
interface Held { timer: NodeJS.Timeout | null; cb: PubDone }
interface CounterChild { inc(): void }
/** messagesInTotal{type}, rejectedTotal{reason}, mqttRefusedTotal{op,reason} by op. */
type CounterKind = 'in' | 'rejected' | 'connect' | 'publish' | 'subscribe';

/** Bytes a PUBLISH frame may have beyond its payload: topic (≤ 64 KiB + 2) and packet id. */
const FRAME_OVERHEAD = 65_536 + 16;
const LIMITS_SWEEP_MS = 60_000;
/** Frames below this are always read before being refused (a 1 MiB firmware bug is dropped, not disconnected). */
const HARD_FRAME_FLOOR = 2 * 1_048_576;

const noHandler: InboundHandler = () => Promise.reject(Errors.NOT_READY('no inbound handler'));

function authError(returnCode: 2 | 3 | 4 | 5, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode: returnCode as AuthenticateError['returnCode'] });
}

export class AedesBroker implements BrokerPort {
  readonly name = 'broker';

  private readonly config: MqttConfig;
  private readonly tuning: BrokerTuning;
  private handler: InboundHandler = noHandler;
  private aedes: Aedes | null = null;
  private server: net.Server | null = null;
  private tlsServer: tls.Server | null = null;
  /** Read-only service (IOC) clients; null until setServiceAuthenticator(). */
  private services: ServiceClients | null = null;
  private listening = false;
  private stopping = false;
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly sockets = new Set<net.Socket>();
  /** Identity and state per authenticated connection. */
  private readonly states = new WeakMap<Client, Session>();
  /** The current connection of each device (spec: a second connection replaces the first). */
  private readonly sessions = new Map<string, Session>();
  /** Rate, abuse and warn state per device (outlives connections; swept when idle). */
  private readonly limits = new Map<string, DeviceLimits>();
  /** Devices whose persistent session subscribed via `me` (restored subscriptions keep the rewrite). */
  private readonly meSessions = new Set<string>();
  /** Messages held back by flow control (rate limit), released at their time or on stop(). */
  private readonly held = new Set<Held>();
  private connected = 0;
  private inflight = 0;
  private readonly counters: Record<CounterKind, Map<string, CounterChild>> = {
    in: new Map(), rejected: new Map(), connect: new Map(), publish: new Map(), subscribe: new Map(),
  };

  constructor(private readonly deps: AedesBrokerDeps) {
    this.config = deps.config;
    this.tuning = { ...DEFAULT_TUNING, ...(deps.tuning ?? {}) };
  }

  setInboundHandler(handler: InboundHandler): void {
    this.handler = handler;
  }

  /** Admit read-only service clients (API tokens with role service or admin), see service-clients.ts. */
  setServiceAuthenticator(auth: ServiceAuthenticator): void {
    this.services = new ServiceClients({
      auth, registry: this.deps.metrics.registry, logger: this.deps.logger, recheckMs: this.tuning.serviceRecheckMs,
      refused: (op, reason) => this.count(op, reason),
      publish: (topic, payload) => {
        const aedes = this.aedes;
        if (!aedes || aedes.closed) return;
        aedes.publish({ cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false }, (err) => {
          if (err) this.deps.logger.debug({ err, topic }, 'service telemetry publish failed');
        });
      },
    });
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
    this.stopping = false;
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
    this.aedes = aedes;
    aedes.on('client', (c) => this.onClient(c));
    aedes.on('clientDisconnect', (c) => this.onGone(c, 'disconnect'));
    aedes.on('keepaliveTimeout', (c) => this.onGone(c, 'keepalive_timeout'));
    aedes.on('clientError', (c, err) => this.onGone(c, 'error', err));
    aedes.on('connectionError', (_c, err) => this.deps.logger.debug({ err: err.message }, 'mqtt connection error before CONNECT'));
    aedes.on('ping', (_p, c) => { const s = this.states.get(c); if (s) this.deps.presence.touch(s.deviceId, this.deps.clock.now()); });
    aedes.on('unsubscribe', (topics, c) => this.onUnsubscribe(topics, c));
    // aedes emits 'error' for persistence failures; an unhandled 'error' event would crash the process.
    (aedes as unknown as NodeJS.EventEmitter).on('error', (err: Error) => this.deps.logger.error({ err }, 'mqtt broker error'));

    const sockOpts = { noDelay: true, keepAlive: true, keepAliveInitialDelay: t.tcpKeepAliveMs };
    const server = net.createServer(sockOpts, (sock) => this.onConnection(sock));
    this.server = server;
    const tlsServer = tlsMaterial
      ? tls.createServer({ ...sockOpts, key: tlsMaterial.key, cert: tlsMaterial.cert, ca: tlsMaterial.ca, handshakeTimeout: t.connectTimeoutMs },
        (sock) => this.onConnection(sock))
      : null;
    this.tlsServer = tlsServer;
    try {
      await listen(server, this.config.port, this.config.host);
      if (tlsServer) await listen(tlsServer, this.config.tlsPort ?? 8883, this.config.host);
    } catch (err) {
      this.server = null;
      this.tlsServer = null;
      await Promise.all([server, tlsServer].map((s) => new Promise<void>((r) => (s?.listening ? s.close(() => r()) : r()))));
      this.aedes = null;
      await new Promise<void>((r) => aedes.close(() => r()));
      throw err;
    }
    server.on('error', (err) => this.deps.logger.error({ err }, 'mqtt listener error'));
    if (tlsServer) {
      tlsServer.on('error', (err) => this.deps.logger.error({ err }, 'mqtt TLS listener error'));
      tlsServer.on('tlsClientError', (err) => this.deps.logger.debug({ err: err.message }, 'mqtt TLS handshake failed'));
    }
    this.listening = true;
    this.sweepTimer = setInterval(() => this.sweepLimits(), LIMITS_SWEEP_MS);
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
    this.stopping = true;
    this.listening = false;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    const tlsServer = this.tlsServer;
    const serverClosed = Promise.all([server, tlsServer].map((s) => new Promise<void>((r) => (s ? s.close(() => r()) : r())))).then(() => undefined);
    const bound = this.tuning.stopTimeoutMs;

    this.releaseHeld();
    await waitFor(() => this.inflight === 0, bound);
    const now = this.deps.clock.now();
    for (const s of this.sessions.values()) {
      suppressWill(s.client);
      this.deps.presence.setOnline(s.deviceId, false, now);
    }
    this.sessions.clear();
    this.services?.clear();
    this.connected = 0;
    this.deps.metrics.mqttConnections.set(0);

    await withTimeout(new Promise<void>((r) => aedes.close(() => r())), bound);
    for (const sock of this.sockets) sock.destroy();
    await withTimeout(serverClosed, bound);
    this.aedes = null;
    this.server = null;
    this.tlsServer = null;
    this.deps.logger.info('mqtt broker stopped');
  }

  ready(): boolean {
    return this.listening && !this.stopping;
  }

  address(): { mqtt: { host: string; port: number }; mqtts?: { host: string; port: number } } {
    const a = this.server?.address();
    const mqtt = a && typeof a === 'object' ? { host: a.address, port: a.port } : { host: this.config.host, port: this.config.port };
    if (!this.tlsServer) return { mqtt };
    const b = this.tlsServer.address();
    return { mqtt, mqtts: b && typeof b === 'object' ? { host: b.address, port: b.port } : { host: this.config.host, port: this.config.tlsPort ?? 8883 } };
  }

  // ------------------------------------------------------------ server → device

  /** Server → device publish; bypasses authorizePublish (aedes.publish). Default QoS 1 (spec: commands are QoS 1). */
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

  isConnected(deviceId: string): boolean {
    const s = this.sessions.get(deviceId);
    return s !== undefined && s.registered && !s.gone;
  }

  connectedCount(): number {
    return this.connected;
  }

  kick(deviceId: string): void {
    const s = this.sessions.get(deviceId);
    if (s) this.closeSession(s, 'kicked');
  }

  /**
   * A deleted device: disconnect it and end its persistent session (stored
   * subscriptions, queued messages), so nothing of it passes to a device
   * created later under the same id. Runs once the connection is gone.
   */
  forget(deviceId: string): void {
    this.limits.delete(deviceId);
    const s = this.sessions.get(deviceId);
    if (s && !s.gone) {
      if (s.forgotten) return;
      s.forgotten = true;
      this.closeSession(s, 'deleted');
    } else {
      this.dropSession(deviceId);
    }
  }

  private dropSession(deviceId: string): void {
    this.meSessions.delete(deviceId);
    const aedes = this.aedes;
    if (!aedes) return;
    dropPersistentSession(aedes, deviceId).catch((err: unknown) => this.deps.logger.warn({ err, deviceId }, 'could not drop the MQTT session of a deleted device'));
  }

  // ------------------------------------------------------------ connections

  private onConnection(sock: net.Socket): void {
    if (this.stopping || !this.aedes) { sock.destroy(); return; }
    this.sockets.add(sock);
    sock.once('close', () => this.sockets.delete(sock));
    const client = this.aedes.handle(sock);
    // Payloads up to the hard cap are read, acknowledged and dropped (payload_too_large) so a
    // misbehaving device moves on instead of resending forever; only frames beyond it cut the connection.
    const maxFrame = Math.max(this.config.maxPayloadBytes * 4, HARD_FRAME_FLOOR) + FRAME_OVERHEAD;
    installFrameGuard(client, maxFrame, (announced) => {
      this.count('publish', 'frame_too_large');
      this.deps.logger.warn({ clientId: client.id, deviceId: this.states.get(client)?.deviceId, announced, maxFrame }, 'mqtt frame too large: connection closed');
      sock.destroy(new Error('frame too large'));
    });
  }

  /** aedes `authenticate` hook: spec "Connection". Runs before the client is registered. */
  private readonly authenticate = (client: Client, username: string | undefined, password: Buffer | undefined, done: AuthDone): void => {
    if (this.stopping) { done(authError(3, 'server stopping'), null); return; }
    // aedes checks the length for MQTT 3.1 only; an unbounded id costs memory in every log line and map.
    if (client.id.length > this.tuning.maxClientsIdLength) { this.refuseConnect(client, 'client_id_too_long', 2, done); return; }
    if (!username) { this.refuseConnect(client, 'bad_credentials', 4, done); return; }
    const token = this.services && serviceCredential(username, password ?? undefined);
    if (token) { this.authenticateService(this.services!, client, token, done); return; }
    this.deps.authenticator.authenticate(username, password ?? undefined).then((res) => {
      if (this.stopping || client.closed) { done(authError(3, 'connection closed'), null); return; }
      if (!res.ok) { this.refuseConnect(client, res.reason, res.reason === 'disabled' ? 5 : 4, done); return; }
      const identity = res.identity;
      const id = identity.deviceId;
      const presented = client.id;
      // Another device's id is refused outright: it is a misconfiguration or an attack either way.
      if (presented !== id && this.deps.authenticator.isDevice(presented)) { this.refuseConnect(client, 'client_id_in_use', 2, done, id); return; }
      // The MQTT session (subscriptions, queued messages, will) belongs to the device, whatever
      // id its firmware chose: aedes keys sessions by client.id, which it reads only after this
      // hook (fetchSubs, registerClient). So no device can reach or replace another's session,
      // a device has at most one, and a second connection takes over the first (spec "Connection").
      client.id = id;
      const s = new Session(client, identity, this.limitsFor(id), presented);
      this.states.set(client, s);
      const prev = this.sessions.get(id);
      this.sessions.set(id, s);
      if (prev && prev.client !== client) {
        // Spec: a second connection for the same device replaces the first. The old
        // one must neither mark the device offline nor publish its will.
        prev.superseded = true;
        suppressWill(prev.client);
        // Same (device) client id: aedes itself closes the old client in registerClient;
        // closing it here too would race aedes' unregister with the new registration.
        this.deps.logger.debug({ deviceId: id, clientId: presented, oldClientId: prev.presentedId }, 'device connection replaced');
      }
      client.conn.once('close', () => this.onGone(client, 'socket_closed'));
      done(null, true);
    }, (err: unknown) => {
      this.deps.logger.error({ err, clientId: client.id }, 'device authentication failed with an error');
      this.count('connect', 'auth_error');
      done(authError(3, 'authentication unavailable'), null);
    });
  };

  /** A service client (API token): read-only, see service-clients.ts. CONNACK 5 for a token whose role may not. */
  private authenticateService(svc: ServiceClients, client: Client, token: string, done: AuthDone): void {
    svc.authenticate(token).then((res) => {
      if (this.stopping || client.closed) { done(authError(3, 'connection closed'), null); return; }
      if (!res.ok) { this.refuseConnect(client, res.reason, res.reason === 'role_not_allowed' ? 5 : 4, done); return; }
      if (this.deps.authenticator.isDevice(client.id)) { this.refuseConnect(client, 'client_id_in_use', 2, done); return; }
      const owner = ownerKey(res.principal.id);
      // Service sessions live in their token's own namespace (a device id has no colon), so a
      // service client can neither take over a device's session nor another token's.
      client.id = `${owner}/${client.id}`;
      svc.add(client, res.principal, token, this.limitsFor(owner));
      client.conn.once('close', () => this.onGone(client, 'socket_closed'));
      done(null, true);
    }, (err: unknown) => {
      this.deps.logger.error({ err, clientId: client.id }, 'service client authentication failed with an error');
      this.count('connect', 'auth_error');
      done(authError(3, 'authentication unavailable'), null);
    });
  }

  private refuseConnect(client: Client, reason: string, code: 2 | 4 | 5, done: AuthDone, deviceId?: string): void {
    this.count('connect', reason);
    this.deps.logger.debug({ clientId: client.id, deviceId, reason, remote: client.conn && (client.conn as net.Socket).remoteAddress }, 'mqtt connect refused');
    done(authError(code, reason), null);
  }

  /** aedes 'client': registered (authenticated, CONNACK about to be sent). Spec: connect updates online. */
  private onClient(client: Client): void {
    const s = this.states.get(client);
    if (!s) { this.services?.registered(client); return; }
    if (s.gone || s.registered || this.sessions.get(s.deviceId) !== s) return;
    s.registered = true;
    this.connected++;
    const m = this.deps.metrics;
    m.mqttConnectsTotal.inc();
    m.mqttConnections.set(this.connected);
    const now = this.deps.clock.now();
    this.deps.presence.setOnline(s.deviceId, true, now);
    this.publishStatus(s, true, now);
    this.deps.logger.debug({ deviceId: s.deviceId, clientId: client.id, viaToken: s.identity.viaToken }, 'device connected');
  }

  /**
   * First of clientDisconnect / keepaliveTimeout / clientError / socket close.
   * Spec: disconnect (including keep-alive loss) updates online — but only
   * for the device's current connection (a replaced one stays silent).
   */
  private onGone(client: Client, cause: string, err?: Error): void {
    const s = this.states.get(client);
    if (!s) { this.serviceGone(client, cause); return; }
    if (s.gone) return;
    s.gone = true;
    if (s.registered && !this.stopping) {
      this.connected--;
      this.deps.metrics.mqttConnections.set(this.connected);
    }
    const id = s.deviceId;
    const current = this.sessions.get(id) === s;
    if (current) {
      this.sessions.delete(id);
      if (!this.stopping) {
        const now = this.deps.clock.now();
        this.deps.presence.setOnline(id, false, now);
        this.publishStatus(s, false, now);
      }
    }
    if (s.forgotten) this.dropSession(id);
    this.deps.logger.debug({ deviceId: id, clientId: s.presentedId, cause, err: err?.message, superseded: s.superseded }, 'device disconnected');
  }

  private serviceGone(client: Client, cause: string): void {
    this.services?.gone(client, cause);
  }

  /** Server-initiated close (kick, abuse, stop): no will, presence via onGone. */
  private closeSession(s: Session, why: string): void {
    suppressWill(s.client);
    this.deps.logger.debug({ deviceId: s.deviceId, why }, 'closing device connection');
    s.client.close();
  }

  /** Retained `v1/devices/D/status` `{"online":bool,"at":ms}` published by the server on connect and disconnect. */
  private publishStatus(s: Session, online: boolean, at: number): void {
    const aedes = this.aedes;
    if (!aedes || aedes.closed) return;
    aedes.publish({
      cmd: 'publish', topic: s.acl.statusTopic, qos: 1, retain: true, dup: false,
      payload: Buffer.from(`{"online":${online},"at":${at}}`),
    }, (err) => { if (err) this.deps.logger.debug({ err, deviceId: s.deviceId }, 'status publish failed'); });
  }

  // ------------------------------------------------------------ inbound path

  /**
   * aedes `authorizePublish`: the whole inbound path, before PUBACK.
   * ACL → payload size → rate limit (wait, see hold()) → await handler → callback(null).
   * Refusals are dropped without disconnecting (sink topic, still acked);
   * a handler that throws fails the callback (no PUBACK, disconnect).
   */
  private readonly authorizePublish = (client: Client | null, packet: PublishPacket, cb: PubDone): void => {
    if (client === null) { cb(null); return; } // the server's own publishes (e.g. stale wills)
    const s = this.states.get(client);
    if (s === undefined) { this.servicePublish(client, packet, cb); return; }
    if (this.stopping) { cb(new Error('server stopping')); return; } // not acknowledged: the device resends later
    // client.closed: this is the device's Last Will, published by aedes after the socket closed.
    const isWill = client.closed;
    if (isWill && s.superseded) { this.sink(packet); cb(null); return; }
    const now = this.deps.clock.now();
    this.deps.presence.touch(s.deviceId, now);
    const topic = packet.topic;
    const access = s.acl.publish(topic);
    if (typeof access === 'string') { this.refuse(s, packet, topic, access, now, cb); return; }
    const raw = packet.payload;
    const payload = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
    if (payload.length > this.config.maxPayloadBytes) { this.refuse(s, packet, topic, 'payload_too_large', now, cb); return; }
    s.limits.lastUsed = now;
    // Spec "Limits never cost acknowledged data": over the rate, the message waits
    // (and with it the PUBACK and the reading of this device's socket), it is never dropped.
    const wait = isWill ? 0 : s.limits.bucket.reserve(now);
    if (wait > 0) this.hold(s, wait, packet, access, payload, cb);
    else this.accept(s, packet, access, payload, now, cb);
  };

  /**
   * Flow control: aedes reads no more from a client's socket until every
   * packet already parsed has called back, so holding the callback slows the
   * device to its rate without dropping or refusing anything. A held message
   * of a connection that closes, or of a server that stops, is not
   * acknowledged (the device sends it again).
   */
  private hold(s: Session, waitMs: number, packet: PublishPacket, access: PublishAccess, payload: Buffer, cb: PubDone): void {
    const m = this.deps.metrics;
    m.throttledMessagesTotal.inc();
    m.throttledSecondsTotal.inc(waitMs / 1000);
    const held: Held = { timer: null, cb };
    held.timer = setTimeout(() => {
      this.held.delete(held);
      if (this.stopping || s.client.closed) { cb(new Error('connection closed while throttled')); return; }
      this.accept(s, packet, access, payload, this.deps.clock.now(), cb);
    }, waitMs);
    this.held.add(held);
  }

  /** Hand a message that passed every rule to the inbound handler; the callback (PUBACK) follows its outcome. */
  private accept(s: Session, packet: PublishPacket, access: PublishAccess, payload: Buffer, now: number, cb: PubDone): void {
    this.messagesIn(access.type);
    const topic = packet.topic;
    const msg: InboundMessage = {
      identity: s.identity, type: access.type, payload, qos: packet.qos, retain: packet.retain, receivedAt: now,
    };
    if (access.requestId !== undefined) msg.requestId = access.requestId;
    // Routing after the ack: nothing a device sends is for other subscribers (the only
    // subscriber of a device topic is that device itself; echoing e.g. its own
    // `attributes` or `rpc/response/n` back to a ThingsBoard SDK would be wrong). So only
    // the status stays, retained under the real id; everything else goes to the sink.
    if (access.type === 'status') packet.topic = s.acl.statusTopic;
    else this.sink(packet);

    let pending: Promise<{ ok: true } | { ok: false; reason: string; detail?: string }>;
    try { pending = this.handler(msg); } catch (err) { pending = Promise.reject(err); }
    this.inflight++;
    pending.then((res) => {
      this.inflight--;
      if (res.ok) cb(null);
      else this.refuse(s, packet, topic, res.reason, this.deps.clock.now(), cb, res.detail);
    }, (err: unknown) => {
      this.inflight--;
      this.handlerFailed(s, topic, err, cb);
    });
  }

  /** Release every held message unacknowledged (stop()). */
  private releaseHeld(): void {
    for (const h of this.held) {
      if (h.timer) clearTimeout(h.timer);
      h.cb(new Error('server stopping'));
    }
    this.held.clear();
  }

  /** Service clients are read-only: every publish (and will) is dropped, acknowledged and counted; abuse disconnects. */
  private servicePublish(client: Client, packet: PublishPacket, cb: PubDone): void {
    const svc = this.services?.get(client);
    if (svc === undefined) { cb(new Error('not authenticated')); return; }
    const topic = packet.topic;
    this.sink(packet);
    cb(null);
    if (this.services!.refusePublish(svc, topic, this.deps.clock.now())) setImmediate(() => svc.client.close());
  }

  private sink(packet: PublishPacket): void {
    packet.topic = SINK_TOPIC;
    packet.retain = false;
  }

  /** Drop without disconnecting (spec "Access rules"): acknowledged, counted, logged; abuse check. */
  private refuse(s: Session, packet: PublishPacket, topic: string, reason: string, now: number, cb: PubDone, detail?: string): void {
    this.sink(packet);
    this.count('rejected', reason);
    this.count('publish', reason);
    const log = this.deps.logger;
    const fields = { deviceId: s.deviceId, reason, detail, topic: topic.length > 200 ? topic.slice(0, 200) : topic };
    if (s.limits.warn.allow(now)) log.warn(fields, 'device publish refused (more from this device within 1 min at debug)');
    else log.debug(fields, 'device publish refused');
    cb(null);
    if (!s.client.closed && s.limits.abuse.hit(now)) {
      s.limits.abuse.reset();
      this.count('publish', 'abuse_disconnect');
      log.warn({ deviceId: s.deviceId, limit: this.config.abuseDisconnectAfter }, 'device disconnected for repeated refused publishes');
      setImmediate(() => this.closeSession(s, 'abuse'));
    }
  }

  /** Handler threw (e.g. KENG_ERR_QUEUE_FULL): not acknowledged, connection closed; the device retries later. */
  private handlerFailed(s: Session, topic: string, err: unknown, cb: PubDone): void {
    this.count('rejected', 'store_unavailable');
    const e = err instanceof Error ? err : new Error(String(err));
    const now = this.deps.clock.now();
    const fields = { deviceId: s.deviceId, topic, code: (e as { code?: unknown }).code, err: e.message };
    if (s.limits.warn.allow(now)) this.deps.logger.warn(fields, 'message not accepted (store unavailable): not acknowledged, device disconnected');
    else this.deps.logger.debug(fields, 'message not accepted (store unavailable)');
    cb(e);
  }

  // ------------------------------------------------------------ subscriptions and delivery

  /** aedes `authorizeSubscribe`: refused filters get `null` → granted 0x80 in SUBACK (lib/handlers/subscribe.js storeSubscriptions). */
  private readonly authorizeSubscribe = (client: Client, sub: Subscription, cb: (error: Error | null, subscription?: Subscription | null) => void): void => {
    const s = this.states.get(client);
    if (!s) { cb(null, this.serviceSubscribe(client, sub)); return; }
    const r = s.acl.subscribe(sub.topic);
    if (typeof r === 'string') {
      this.count('subscribe', r);
      this.deps.logger.debug({ deviceId: s.deviceId, topic: sub.topic.slice(0, 200), reason: r }, 'subscription refused');
      cb(null, null);
      return;
    }
    if (r.viaMe) {
      s.viaMe = true;
      if (!client.clean) this.meSessions.add(s.deviceId);
    } else if (!client.connected && !client.clean && this.meSessions.has(s.deviceId)) {
      // Restoring a persistent session whose `me` subscriptions were stored in real-id form.
      s.viaMe = true;
    }
    sub.topic = r.topic;
    if (sub.qos > 1) sub.qos = 1; // server → device traffic is QoS 0/1 (spec "Topics")
    cb(null, sub);
  };

  private serviceSubscribe(client: Client, sub: Subscription): Subscription | null {
    const svc = this.services?.get(client);
    if (!svc) return null;
    const r = this.services!.subscribe(svc, sub);
    if (typeof r !== 'string') return r;
    this.count('subscribe', r);
    this.deps.logger.debug({ tokenId: svc.principal.id, topic: sub.topic.slice(0, 200), reason: r }, 'service subscription refused');
    return null;
  }

  /**
   * aedes `authorizeForward`: only the device's own topics reach it, rewritten
   * to `me` for clients that subscribed via `me`. The rewrite is made on the
   * packet aedes passes: in aedes 1.2 it is a per-delivery copy on every path
   * (lib/client.js handlePacketSubscription `new Packet`, subscribe.js
   * sendRetained `new Packet`, connect.js emptyQueue `new QoSPacket`), and the
   * offline-queue path ignores the return value and writes that very packet.
   */
  private readonly authorizeForward = (client: Client, packet: AedesPublishPacket): AedesPublishPacket | null => {
    const s = this.states.get(client);
    if (!s) return this.serviceForward(client, packet);
    const topic = s.acl.forward(packet.topic, s.viaMe);
    if (topic === null) return null;
    if (topic !== packet.topic) packet.topic = topic;
    return packet;
  };

  /** Service clients: their areas' device topics only (checked per message, against the device's current area). */
  private serviceForward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    const svc = this.services?.get(client);
    return svc ? this.services!.forward(svc, packet) : null;
  }

  /** aedes has no unsubscribe hook: a `me` unsubscribe is applied to the real-id filter it was stored as. */
  private onUnsubscribe(topics: string[], client: Client): void {
    const s = this.states.get(client);
    if (!s) { const svc = this.services?.get(client); if (svc) this.services!.unsubscribed(svc, topics); return; }
    if (!s.viaMe || client.closed) return;
    const mapped: string[] = [];
    for (const t of topics) {
      const r = s.acl.subscribe(t);
      if (typeof r !== 'string' && r.viaMe) mapped.push(r.topic);
    }
    // A packet without messageId: no UNSUBACK is written for this internal step.
    if (mapped.length) client.unsubscribe({ cmd: 'unsubscribe', unsubscriptions: mapped }, () => undefined);
  }

  // ------------------------------------------------------------ helpers

  private limitsFor(deviceId: string): DeviceLimits {
    let l = this.limits.get(deviceId);
    if (!l) {
      const c = this.config;
      l = new DeviceLimits(c.rateLimitPerSec, c.rateLimitBurst, c.abuseDisconnectAfter, this.deps.clock.now());
      this.limits.set(deviceId, l);
    }
    return l;
  }

  private sweepLimits(): void {
    const now = this.deps.clock.now();
    for (const [id, l] of this.limits) {
      if (!this.sessions.has(id) && l.idle(now)) this.limits.delete(id);
    }
  }

  private messagesIn(type: InboundType): void {
    this.count('in', type);
  }

  /** Cached labelled counter children, one map per counter (the refusal path can be hot during a flood). */
  private count(kind: CounterKind, label: string): void {
    const cache = this.counters[kind];
    let child = cache.get(label);
    if (!child) {
      const m = this.deps.metrics;
      child = kind === 'in' ? m.messagesInTotal.labels({ type: label })
        : kind === 'rejected' ? m.rejectedTotal.labels({ reason: label })
          : m.mqttRefusedTotal.labels({ op: kind, reason: label });
      cache.set(label, child);
    }
    child.inc();
  }
}

/** The part of aedes-persistence used to end a session (aedes' types leave `persistence` untyped). */
interface SessionPersistence {
  cleanSubscriptions(client: { id: string }): Promise<void>;
  cleanIncoming?(client: { id: string }): Promise<void>;
  outgoingStream(client: { id: string }): AsyncIterable<unknown>;
  outgoingClearMessageId(client: { id: string }, packet: unknown): Promise<unknown>;
}

/** What aedes does for a clean session, for a client that is not connected. */
async function dropPersistentSession(aedes: Aedes, clientId: string): Promise<void> {
  const p = (aedes as unknown as { persistence: SessionPersistence }).persistence;
  const c = { id: clientId };
  await p.cleanSubscriptions(c);
  await p.cleanIncoming?.(c);
  // Queued messages: outgoingClearMessageId removes one entry with the packet's messageId per call.
  for await (const packet of p.outgoingStream(c)) await p.outgoingClearMessageId(c, packet);
}

function listen(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(); });
  });
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond() && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
}

async function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((r) => { timer = setTimeout(r, ms); })]);
  if (timer) clearTimeout(timer);
}

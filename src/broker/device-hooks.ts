/**
 * The broker's hooks for device connections (AedesBroker switches on the
 * session kind and calls in here for devices).
 *
 * Spec device-protocol.md, clauses implemented here:
 * - "Connection": id + secret or access token at CONNECT; unknown devices,
 *   wrong secrets and disabled devices refused (CONNACK 4, or 5 for disabled);
 *   a second connection for the same device replaces the first.
 * - "Access rules": publishes and subscriptions checked by DeviceAcl
 *   (topics.ts); a refused publish is dropped (still acknowledged), counted
 *   and logged; a refused subscription is granted as 0x80; repeated abuse
 *   disconnects; presence follows connect / disconnect / keep-alive loss.
 * - "Limits never cost acknowledged data": over its rate a device is slowed
 *   (its callbacks held, so aedes stops reading its socket), never dropped.
 * - Sessions belong to devices: the aedes client id is the device id,
 *   whatever id the client sent.
 * - "Telemetry payload", delivery guarantee: the inbound handler is awaited
 *   inside authorizePublish, the only hook aedes runs before it writes PUBACK
 *   (lib/handlers/publish.js: authorizePublish → enqueuePublish → PUBACK →
 *   broker.publish), so PUBACK means the handler resolved (readings on disk).
 *   A handler that throws fails the callback: no PUBACK, connection closed.
 * - "ThingsBoard compatibility": `me` topics for token devices; `me`
 *   subscriptions rewritten to the real id, deliveries rewritten back.
 */
import type { Aedes, AedesPublishPacket, Client, PublishPacket, Subscription } from 'aedes';
import type { DeviceAuthenticator } from '../devices/types.js';
import { AckGroups } from './ack-groups.js';
import { authError, sink, type AuthDone, type BrokerContext, type PubDone } from './context.js';
import { peerAddress } from './proxy-accept.js';
import { claimThenAdmit, NO_SESSION_CLAIMS, type SessionClaims } from './session-claims.js';
import { DeviceSession, suppressWill, type DevicePresence } from './session.js';
import type { PublishAccess } from './topics.js';
import type { HandleResult, InboundHandler, InboundMessage } from './types.js';

/** Highest QoS a device is granted: server → device traffic is QoS 0/1 (device protocol §3). */
export const DEVICE_MAX_QOS = 1;

/** A message handed to its handler, waiting for the outcome. */
interface Waiting { s: DeviceSession; packet: PublishPacket; topic: string; cb: PubDone }

/** A message held back by its device's rate limit: its callback runs when the timer fires. */
interface Held { timer: NodeJS.Timeout | null; cb: PubDone }

export class DeviceHooks {
  /** The current connection of each device (device protocol §1.2: a second connection replaces the first). */
  private readonly sessions = new Map<string, DeviceSession>();
  /** Devices whose persistent session subscribed via `me` (restored subscriptions keep the rewrite). */
  private readonly meSessions = new Set<string>();
  /** Messages held back by flow control (rate limit), released at their time or on stop(). */
  private readonly held = new Set<Held>();
  private connected = 0;
  private inflight = 0;

  /** `handler`: where accepted messages go (ingest); its promise decides the PUBACK. */
  constructor(
    private readonly ctx: BrokerContext, private readonly authenticator: DeviceAuthenticator, private readonly presence: DevicePresence,
    private readonly handler: InboundHandler, private readonly claims: SessionClaims = NO_SESSION_CLAIMS,
  ) {}

  // ------------------------------------------------------------ connections

  /** aedes `authenticate` for device credentials: device protocol §1. Runs before the client is registered. */
  authenticate(client: Client, username: string, password: Buffer | undefined, done: AuthDone): void {
    const ctx = this.ctx;
    this.authenticator.authenticate(username, password).then((res) => {
      if (ctx.stopping || client.closed) { done(authError(3, 'connection closed'), null); return; }
      if (!res.ok) { ctx.refuseConnect(client, res.reason, res.reason === 'disabled' ? 5 : 4, done); return; }
      const identity = res.identity;
      const id = identity.deviceId;
      const presented = client.id;
      // Another device's id is refused outright: it is a misconfiguration or an attack either way.
      if (presented !== id && this.authenticator.isDevice(presented)) { ctx.refuseConnect(client, 'client_id_in_use', 2, done, id); return; }
      // The MQTT session (subscriptions, queued messages, will) belongs to the device, whatever
      // id its firmware chose: aedes keys sessions by client.id, which it reads only after this
      // hook (fetchSubs, registerClient). So no device can reach or replace another's session,
      // a device has at most one, and a second connection takes over the first (device protocol §1).
      client.id = id;
      // Cluster mode: the session is claimed across nodes first (session-claims.ts); embedded: at once.
      claimThenAdmit(ctx, this.claims, client, id, done, (epoch) => (this.sessions.get(id)?.epoch ?? 0) > epoch,
        (epoch) => this.admit(new DeviceSession(client, identity, ctx.limitsFor(id), presented, epoch), done));
    }, (err: unknown) => ctx.authUnavailable(client, err, 'device authentication failed with an error', done));
  }

  /** Authenticated (and claimed, in cluster mode): the device's current connection from now on. */
  private admit(s: DeviceSession, done: AuthDone): void {
    const ctx = this.ctx;
    const { client, deviceId: id, presentedId: presented } = s;
    const prev = this.sessions.get(id);
    this.sessions.set(id, s);
    if (prev && prev.client !== client) {
      // Spec: a second connection for the same device replaces the first. The old
      // one must neither mark the device offline nor publish its will.
      prev.superseded = true;
      suppressWill(prev.client);
      // Same (device) client id: aedes itself closes the old client in registerClient;
      // closing it here too would race aedes' unregister with the new registration.
      ctx.logger.debug({ deviceId: id, clientId: presented, oldClientId: prev.presentedId }, 'device connection replaced');
    }
    ctx.admit(s, done);
  }

  /** aedes 'client': registered (authenticated, CONNACK about to be sent). Spec: connect updates online. */
  registered(s: DeviceSession): void {
    if (s.gone || s.registered || this.sessions.get(s.deviceId) !== s) return;
    s.registered = true;
    this.connected++;
    const m = this.ctx.metrics;
    m.mqttConnectsTotal.inc();
    m.mqttConnections.set(this.connected);
    const now = this.ctx.clock.now();
    this.presence.setOnline(s.deviceId, true, now);
    this.publishStatus(s, true, now);
    this.ctx.logger.debug({ deviceId: s.deviceId, clientId: s.client.id, viaToken: s.identity.viaToken, remote: peerAddress(s.client.conn) }, 'device connected');
  }

  /**
   * First of clientDisconnect / keepaliveTimeout / clientError / socket close.
   * Spec: disconnect (including keep-alive loss) updates online — but only
   * for the device's current connection (a replaced one stays silent).
   */
  gone(s: DeviceSession, cause: string, err?: Error): void {
    if (s.gone) return;
    s.gone = true;
    const ctx = this.ctx;
    if (s.registered && !ctx.stopping) {
      this.connected--;
      ctx.metrics.mqttConnections.set(this.connected);
    }
    const id = s.deviceId;
    const current = this.sessions.get(id) === s;
    if (current) {
      this.sessions.delete(id);
      if (!ctx.stopping) {
        const now = ctx.clock.now();
        this.presence.setOnline(id, false, now);
        this.publishStatus(s, false, now);
      }
    }
    if (s.epoch > 0) this.claims.release(id, s.epoch);
    if (s.forgotten) this.dropSession(id);
    ctx.logger.debug({ deviceId: id, clientId: s.presentedId, cause, err: err?.message, superseded: s.superseded }, 'device disconnected');
  }

  ping(s: DeviceSession): void {
    this.presence.touch(s.deviceId, this.ctx.clock.now());
  }

  /**
   * Another node (or a later claim) holds the device's session now: close this
   * node's connection of claim `epoch`, if it is still here. No will, and the
   * device is not marked offline (it is online on the other node).
   */
  closeClaimed(deviceId: string, epoch: number): boolean {
    const s = this.sessions.get(deviceId);
    if (!s || s.gone || s.epoch !== epoch) return false;
    s.superseded = true;
    this.closeSession(s, 'session taken over');
    return true;
  }

  /** The device's current connection (authenticated, not closed), if any. */
  current(deviceId: string): DeviceSession | undefined {
    const s = this.sessions.get(deviceId);
    return s !== undefined && !s.gone && !s.client.closed ? s : undefined;
  }

  isConnected(deviceId: string): boolean {
    const s = this.sessions.get(deviceId);
    return s !== undefined && s.registered && !s.gone;
  }

  connectedCount(): number {
    return this.connected;
  }

  kick(deviceId: string, credential?: 'secret' | 'token'): void {
    const s = this.sessions.get(deviceId);
    if (!s) return;
    if (credential !== undefined && s.identity.viaToken !== (credential === 'token')) return;
    this.closeSession(s, 'kicked');
  }

  /**
   * A deleted device: disconnect it and end its persistent session (stored
   * subscriptions, queued messages), so nothing of it passes to a device
   * created later under the same id. Runs once the connection is gone.
   */
  forget(deviceId: string): void {
    this.ctx.limits.delete(deviceId);
    const s = this.sessions.get(deviceId);
    if (s && !s.gone) {
      if (s.forgotten) return;
      s.forgotten = true;
      this.closeSession(s, 'deleted');
    } else {
      this.dropSession(deviceId);
    }
  }

  /** Limits of devices that are not connected and have nothing left to remember. */
  sweepLimits(): void {
    const now = this.ctx.clock.now();
    for (const [id, l] of this.ctx.limits) {
      if (!this.sessions.has(id) && l.idle(now)) this.ctx.limits.delete(id);
    }
  }

  /** stop(): no handler call still running (their PUBACKs have gone out). */
  settled(): boolean {
    return this.inflight === 0;
  }

  /** stop(): every connected device offline, no wills (a server stop is not a device crash). */
  offlineAll(now: number): void {
    for (const s of this.sessions.values()) {
      suppressWill(s.client);
      this.presence.setOnline(s.deviceId, false, now);
    }
    this.sessions.clear();
    this.connected = 0;
  }

  private dropSession(deviceId: string): void {
    this.meSessions.delete(deviceId);
    const aedes = this.ctx.aedes;
    if (!aedes) return;
    dropPersistentSession(aedes, deviceId).catch((err: unknown) => this.ctx.logger.warn({ err, deviceId }, 'could not drop the MQTT session of a deleted device'));
  }

  /** Server-initiated close (kick, abuse, stop): no will, presence via gone(). */
  private closeSession(s: DeviceSession, why: string): void {
    suppressWill(s.client);
    this.ctx.logger.debug({ deviceId: s.deviceId, why }, 'closing device connection');
    s.client.close();
  }

  /** Retained `v1/devices/D/status` `{"online":bool,"at":ms}` published by the server on connect and disconnect. */
  private publishStatus(s: DeviceSession, online: boolean, at: number): void {
    const aedes = this.ctx.aedes;
    if (!aedes || aedes.closed) return;
    aedes.publish({
      cmd: 'publish', topic: s.acl.statusTopic, qos: 1, retain: true, dup: false,
      payload: Buffer.from(`{"online":${online},"at":${at}}`),
    }, (err) => { if (err) this.ctx.logger.debug({ err, deviceId: s.deviceId }, 'status publish failed'); });
  }

  // ------------------------------------------------------------ inbound path

  /**
   * aedes `authorizePublish`: the whole inbound path, before PUBACK.
   * ACL → payload size → rate limit (wait, see hold()) → await handler → callback(null).
   * Refusals are dropped without disconnecting (sink topic, still acked);
   * a handler that throws fails the callback (no PUBACK, disconnect).
   */
  authorizePublish(s: DeviceSession, client: Client, packet: PublishPacket, cb: PubDone): void {
    const ctx = this.ctx;
    if (ctx.stopping) { cb(new Error('server stopping')); return; } // not acknowledged: the device resends later
    // client.closed: this is the device's Last Will, published by aedes after the socket closed.
    const isWill = client.closed;
    if (isWill && s.superseded) { sink(packet); cb(null); return; }
    const now = ctx.clock.now();
    this.presence.touch(s.deviceId, now);
    const topic = packet.topic;
    const access = s.acl.publish(topic);
    if (typeof access === 'string') { this.refuse(s, packet, topic, access, now, cb); return; }
    const raw = packet.payload;
    const payload = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
    if (payload.length > ctx.config.maxPayloadBytes) { this.refuse(s, packet, topic, 'payload_too_large', now, cb); return; }
    s.limits.lastUsed = now;
    // Spec "Limits never cost acknowledged data": over the rate, the message waits
    // (and with it the PUBACK and the reading of this device's socket), it is never dropped.
    const wait = isWill ? 0 : s.limits.bucket.reserve(now);
    if (wait > 0) this.hold(s, wait, packet, access, payload, cb);
    else this.accept(s, packet, access, payload, now, cb);
  }

  /**
   * Flow control: aedes reads no more from a client's socket until every
   * packet already parsed has called back, so holding the callback slows the
   * device to its rate without dropping or refusing anything. A held message
   * of a connection that closes, or of a server that stops, is not
   * acknowledged (the device sends it again).
   */
  private hold(s: DeviceSession, waitMs: number, packet: PublishPacket, access: PublishAccess, payload: Buffer, cb: PubDone): void {
    const m = this.ctx.metrics;
    m.throttledMessagesTotal.inc();
    m.throttledSecondsTotal.inc(waitMs / 1000);
    const held: Held = { timer: null, cb };
    held.timer = setTimeout(() => {
      this.held.delete(held);
      if (this.ctx.stopping || s.client.closed) { cb(new Error('connection closed while throttled')); return; }
      this.accept(s, packet, access, payload, this.ctx.clock.now(), cb);
    }, waitMs);
    this.held.add(held);
  }

  /** Hand a message that passed every rule to the inbound handler; the callback (PUBACK) follows its outcome. */
  private accept(s: DeviceSession, packet: PublishPacket, access: PublishAccess, payload: Buffer, now: number, cb: PubDone): void {
    this.ctx.count('in', access.type);
    const topic = packet.topic;
    const msg: InboundMessage = {
      identity: s.identity, type: access.type, payload, qos: packet.qos, retain: packet.retain, receivedAt: now,
    };
    if (access.requestId !== undefined) msg.requestId = access.requestId;
    if (access.viaMe === true) msg.viaMe = true;
    if (access.chunk !== undefined) msg.chunk = access.chunk;
    // Routing after the ack: nothing a device sends is for other subscribers (the only
    // subscriber of a device topic is that device itself; echoing e.g. its own
    // `attributes` or `rpc/response/n` back to a ThingsBoard SDK would be wrong). So only
    // the status stays, retained under the real id; everything else goes to the sink.
    if (access.type === 'status') packet.topic = s.acl.statusTopic;
    else sink(packet);

    let pending: Promise<HandleResult>;
    try { pending = this.handler(msg); } catch (err) { pending = Promise.reject(err); }
    this.inflight++;
    this.acks.add(pending, { s, packet, topic, cb });
  }

  /** A message's handler resolved: PUBACK (corked with the rest of its commit), or a refusal. */
  private readonly handled = (w: Waiting, res: HandleResult): void => {
    this.inflight--;
    corkUntilNextTick(w.s.client);
    if (res.ok) w.cb(null);
    else this.refuse(w.s, w.packet, w.topic, res.reason, this.ctx.clock.now(), w.cb, res.detail);
  };

  private readonly failed = (w: Waiting, err: unknown): void => {
    this.inflight--;
    this.handlerFailed(w.s, w.topic, err, w.cb);
  };

  /** Messages waiting for their handler, one reaction per group commit. */
  private readonly acks = new AckGroups<Waiting, HandleResult>(this.handled, this.failed);

  /** Release every held message unacknowledged (stop()). */
  releaseHeld(): void {
    for (const h of this.held) {
      if (h.timer) clearTimeout(h.timer);
      h.cb(new Error('server stopping'));
    }
    this.held.clear();
  }

  /** Drop without disconnecting (device protocol §4): acknowledged, counted, logged; abuse check. */
  private refuse(s: DeviceSession, packet: PublishPacket, topic: string, reason: string, now: number, cb: PubDone, detail?: string): void {
    const ctx = this.ctx;
    sink(packet);
    ctx.count('rejected', reason);
    ctx.count('publish', reason);
    const log = ctx.logger;
    const fields = { deviceId: s.deviceId, reason, detail, topic: topic.length > 200 ? topic.slice(0, 200) : topic };
    if (s.limits.warn.allow(now)) log.warn(fields, 'device publish refused (more from this device within 1 min at debug)');
    else log.debug(fields, 'device publish refused');
    cb(null);
    if (!s.client.closed && s.limits.abuse.hit(now)) {
      s.limits.abuse.reset();
      ctx.count('publish', 'abuse_disconnect');
      log.warn({ deviceId: s.deviceId, limit: ctx.config.abuseDisconnectAfter }, 'device disconnected for repeated refused publishes');
      setImmediate(() => this.closeSession(s, 'abuse'));
    }
  }

  /** Handler threw (e.g. KENG_ERR_QUEUE_FULL): not acknowledged, connection closed; the device retries later. */
  private handlerFailed(s: DeviceSession, topic: string, err: unknown, cb: PubDone): void {
    this.ctx.count('rejected', 'store_unavailable');
    const e = err instanceof Error ? err : new Error(String(err));
    const now = this.ctx.clock.now();
    const fields = { deviceId: s.deviceId, topic, code: (e as { code?: unknown }).code, err: e.message };
    if (s.limits.warn.allow(now)) this.ctx.logger.warn(fields, 'message not accepted (store unavailable): not acknowledged, device disconnected');
    else this.ctx.logger.debug(fields, 'message not accepted (store unavailable)');
    cb(e);
  }

  // ------------------------------------------------------------ subscriptions and delivery

  /** aedes `authorizeSubscribe`: the subscription to store, or null for a refused filter (granted 0x80). */
  authorizeSubscribe(s: DeviceSession, client: Client, sub: Subscription): Subscription | null {
    const r = s.acl.subscribe(sub.topic);
    if (typeof r === 'string') {
      this.ctx.count('subscribe', r);
      this.ctx.logger.debug({ deviceId: s.deviceId, topic: sub.topic.slice(0, 200), reason: r }, 'subscription refused');
      return null;
    }
    if (r.viaMe) {
      s.viaMe = true;
      if (!client.clean) this.meSessions.add(s.deviceId);
    } else if (!client.connected && !client.clean && this.meSessions.has(s.deviceId)) {
      // Restoring a persistent session whose `me` subscriptions were stored in real-id form.
      s.viaMe = true;
    }
    sub.topic = r.topic;
    // Server → device traffic is QoS 0/1 (device protocol §3). New subscriptions were capped before aedes
    // read them, so SUBACK says 1 (granted-qos.ts); this caps those restored from a persistent session.
    if (sub.qos > DEVICE_MAX_QOS) sub.qos = DEVICE_MAX_QOS;
    return sub;
  }

  /**
   * aedes `authorizeForward`: only the device's own topics reach it, rewritten
   * to `me` for clients that subscribed via `me`. The rewrite is made on the
   * packet aedes passes: in aedes 1.2 it is a per-delivery copy on every path
   * (lib/client.js handlePacketSubscription `new Packet`, subscribe.js
   * sendRetained `new Packet`, connect.js emptyQueue `new QoSPacket`), and the
   * offline-queue path ignores the return value and writes that very packet.
   */
  forward(s: DeviceSession, packet: AedesPublishPacket): AedesPublishPacket | null {
    const topic = s.acl.forward(packet.topic, s.viaMe);
    if (topic === null) return null;
    if (topic !== packet.topic) packet.topic = topic;
    return packet;
  }

  /** aedes has no unsubscribe hook: a `me` unsubscribe is applied to the real-id filter it was stored as. */
  unsubscribed(s: DeviceSession, client: Client, topics: string[]): void {
    if (!s.viaMe || client.closed) return;
    const mapped: string[] = [];
    for (const t of topics) {
      const r = s.acl.subscribe(t);
      if (typeof r !== 'string' && r.viaMe) mapped.push(r.topic);
    }
    // A packet without messageId: no UNSUBACK is written for this internal step.
    if (mapped.length) client.unsubscribe({ cmd: 'unsubscribe', unsubscriptions: mapped }, () => undefined);
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

/**
 * The messages of one group commit are acknowledged together, in one run of
 * promise callbacks: corked, a device's PUBACKs of that commit leave in one
 * write instead of one system call each (aedes writes each PUBACK as it is
 * called back).
 */
function corkUntilNextTick(client: Client): void {
  const sock = client.conn; // a Duplex (net, TLS or WebSocket stream): all of them cork
  if (sock.writableCorked || sock.destroyed) return;
  sock.cork();
  process.nextTick(() => sock.uncork());
}

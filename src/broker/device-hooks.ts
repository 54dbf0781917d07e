/**
 * The broker's hooks for device connections (AedesBroker switches on the
 * session kind and calls in here for devices).
 *
 * Spec device-protocol.md, clauses implemented here:
 * - "Connection": id + secret or access token at CONNECT; unknown devices,
 *   wrong secrets and disabled devices refused (CONNACK 4, or 5 for disabled);
 *   a second connection for the same device replaces the first.
 * - "Access rules": subscriptions checked by DeviceAcl (topics.ts), a
 *   refused subscription granted as 0x80; presence follows connect /
 *   disconnect / keep-alive loss. What devices publish (access rules, flow
 *   control, the PUBACK after the handler) is device-inbound.ts.
 * - Sessions belong to devices: the aedes client id is the device id,
 *   whatever id the client sent.
 * - "ThingsBoard compatibility": `me` topics for token devices; `me`
 *   subscriptions rewritten to the real id, deliveries rewritten back.
 */
import type { Aedes, AedesPublishPacket, Client, PublishPacket, Subscription } from 'aedes';
import type { DeviceAuthenticator } from '../devices/types.js';
import { authError, type AuthDone, type BrokerContext, type PubDone } from './context.js';
import { DeviceInbound } from './device-inbound.js';
import { peerAddress } from './proxy-accept.js';
import { claimThenAdmit, NO_SESSION_CLAIMS, type SessionClaims } from './session-claims.js';
import { DeviceSession, suppressWill, type DevicePresence } from './session.js';
import type { InboundHandler } from './types.js';

/** Highest QoS a device is granted: server → device traffic is QoS 0/1 (device protocol §3). */
export const DEVICE_MAX_QOS = 1;

export class DeviceHooks {
  /** The current connection of each device (device protocol §1.2: a second connection replaces the first). */
  private readonly sessions = new Map<string, DeviceSession>();
  /** Devices whose persistent session subscribed via `me` (restored subscriptions keep the rewrite). */
  private readonly meSessions = new Set<string>();
  private connected = 0;

  /** `handler`: where accepted messages go (ingest); its promise decides the PUBACK. */
  constructor(
    private readonly ctx: BrokerContext, private readonly authenticator: DeviceAuthenticator, private readonly presence: DevicePresence,
    handler: InboundHandler, private readonly claims: SessionClaims = NO_SESSION_CLAIMS,
  ) {
    this.inbound = new DeviceInbound(ctx, presence, handler, (s, why) => this.closeSession(s, why));
  }

  /** What devices publish: rules, flow control, the handler, PUBACK. */
  private readonly inbound: DeviceInbound;

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
    return this.inbound.settled();
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

  // ------------------------------------------------------------ inbound path (device-inbound.ts)

  /** aedes `authorizePublish` for devices: the whole inbound path, before PUBACK. */
  authorizePublish(s: DeviceSession, client: Client, packet: PublishPacket, cb: PubDone): void {
    this.inbound.authorizePublish(s, client, packet, cb);
  }

  /** Release every held message unacknowledged (stop()). */
  releaseHeld(): void { this.inbound.releaseHeld(); }

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

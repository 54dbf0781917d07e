/**
 * What devices publish, from aedes' `authorizePublish` to the PUBACK
 * (device-hooks.ts holds the connections and calls in here).
 *
 * Spec device-protocol.md:
 * - "Access rules": a publish on a topic the device may not use, or too
 *   large, is dropped (still acknowledged), counted and logged; repeated
 *   refusals disconnect the device.
 * - "Limits never cost acknowledged data": over its rate a device is slowed
 *   (its callbacks held, so aedes stops reading its socket), never dropped.
 * - "Telemetry payload", delivery guarantee: the handler is awaited inside
 *   authorizePublish, the only hook aedes runs before it writes PUBACK
 *   (aedes lib/handlers/publish.js: authorizePublish → enqueuePublish → PUBACK
 *   → broker.publish), so PUBACK means the handler resolved (readings on
 *   disk). A handler that throws fails the callback: no PUBACK, connection
 *   closed.
 */
import type { Client, PublishPacket } from 'aedes';
import { AckGroups } from './ack-groups.js';
import { sink, type BrokerContext, type PubDone } from './context.js';
import type { DevicePresence, DeviceSession } from './session.js';
import type { PublishAccess } from './topics.js';
import type { HandleResult, InboundHandler, InboundMessage } from './types.js';

/** A message handed to its handler, waiting for the outcome. */
interface Waiting { s: DeviceSession; packet: PublishPacket; topic: string; cb: PubDone }

/** A message held back by its device's rate limit: its callback runs when the timer fires. */
interface Held { timer: NodeJS.Timeout | null; cb: PubDone }

export class DeviceInbound {
  /** Messages held back by flow control (rate limit), released at their time or on stop(). */
  private readonly held = new Set<Held>();
  /** Messages handed to the handler and not called back yet. */
  private inflight = 0;

  /** `handler`: where accepted messages go (ingest); its promise decides the PUBACK. `close`: a server-initiated close (abuse). */
  constructor(
    private readonly ctx: BrokerContext, private readonly presence: DevicePresence, private readonly handler: InboundHandler,
    private readonly close: (s: DeviceSession, why: string) => void,
  ) {}

  /** stop(): no handler call still running (their PUBACKs have gone out). */
  settled(): boolean {
    return this.inflight === 0;
  }

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
      setImmediate(() => this.close(s, 'abuse'));
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

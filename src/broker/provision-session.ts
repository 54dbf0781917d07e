/**
 * Provisioning sessions: ThingsBoard firmware registering itself
 * (firmware-protocols/provisioning.md). AedesBroker hands a CONNECT with
 * username `provision` here (isProvisionLogin), and every hook of such a
 * session after it.
 *
 * ThingsBoard's MQTT transport (MqttTransportHandler, provision-only
 * sessions), and what Keng does the same or tighter:
 * - CONNECT is accepted whatever the client id; the session may subscribe to
 *   `/provision/response` only (other filters: 0x80) and publish to
 *   `/provision/request` only. A publish anywhere else closes the connection.
 * - The answer is written to the connection itself, subscribed or not (the
 *   SDKs subscribe and publish back to back), on `/provision/response`,
 *   QoS 0 unless the session subscribed with QoS 1.
 * - ThingsBoard closes the connection 60 s after answering; the SDKs
 *   disconnect on the answer. Keng closes it `answerGraceMs` after the answer,
 *   and `sessionMs` after CONNECT when no request came: a provisioning login
 *   holds nothing for long.
 * - One request per session; requests are limited per client address
 *   (`perIpPerMinute`, a token bucket): over it the answer is FAILURE "too
 *   many requests", without checking the key, so a device retrying a wrong
 *   key in a loop costs one small answer per try and fills no audit log.
 * - The session never gets a will, and its client id is made unique
 *   (`provision:<uuid>`), so it can neither reach nor replace a device's session.
 */
import { randomUUID } from 'node:crypto';
import { peerAddress } from './proxy-accept.js';
import type { AedesPublishPacket, Client, PublishPacket, Subscription } from 'aedes';
import { PROVISION_REQUEST_TOPIC, PROVISION_RESPONSE_TOPIC, PROVISION_USERNAME } from '../core/protocol.js';
import type { DeviceProvisioner, ProvisionAnswer } from '../devices/provisioning.js';
import { sink, type AuthDone, type BrokerContext, type PubDone } from './context.js';
import { TokenBucket } from './rate-limit.js';
import { suppressWill } from './session.js';

/**
 * A provisioning login: username `provision`. The SDKs send no password;
 * ThingsBoard ignores one, and so does Keng, except that a device whose id
 * is `provision` still logs in with its secret as the password.
 */
export function isProvisionLogin(username: string, password: Buffer | undefined, isDevice: (id: string) => boolean): boolean {
  if (username !== PROVISION_USERNAME) return false;
  return password === undefined || password.length === 0 || !isDevice(PROVISION_USERNAME);
}

export interface ProvisionTuning {
  /** A session with no request is closed this long after CONNECT. */
  sessionMs: number;
  /** After the answer is written, the connection is closed this much later (the SDKs disconnect first). */
  answerGraceMs: number;
  /** Provision requests per client address per minute (burst = the same number). */
  perIpPerMinute: number;
}

export const DEFAULT_PROVISION_TUNING: ProvisionTuning = { sessionMs: 30_000, answerGraceMs: 2_000, perIpPerMinute: 10 };

/** Addresses remembered by the per-address limit before idle ones are swept. */
const MAX_TRACKED_ADDRESSES = 10_000;

const TOO_MANY: ProvisionAnswer = { errorMsg: 'Too many provision requests from this address: try again later', status: 'FAILURE' };

export class ProvisionSession {
  readonly kind = 'provision';
  registered = false;
  gone = false;
  /** The request was taken (one per session). */
  requested = false;
  /** The payload of the answer being written (authorizeForward lets exactly it through). */
  answer: Buffer | null = null;
  /** QoS of the session's `/provision/response` subscription, if it made one. */
  subQos: 0 | 1 | null = null;
  timer: NodeJS.Timeout | null = null;

  constructor(readonly hooks: ProvisionSessions, readonly client: Client, readonly ip: string | null) {}
}

export interface ProvisionSessionsDeps {
  ctx: BrokerContext;
  provisioner: DeviceProvisioner;
  tuning?: Partial<ProvisionTuning>;
}

/** The broker's hooks for provisioning sessions. */
export class ProvisionSessions {
  private readonly tuning: ProvisionTuning;
  private readonly perIp = new Map<string, TokenBucket>();
  private readonly live = new Set<ProvisionSession>();

  constructor(private readonly deps: ProvisionSessionsDeps) {
    this.tuning = { ...DEFAULT_PROVISION_TUNING, ...(deps.tuning ?? {}) };
  }

  /** aedes `authenticate` for `provision` (isProvisionLogin): always CONNACK 0, like ThingsBoard. */
  authenticate(client: Client, done: AuthDone): void {
    const ctx = this.deps.ctx;
    client.id = `provision:${randomUUID()}`;
    // Nothing of it outlives the connection: no will, no persistent session under a random id.
    suppressWill(client);
    (client as { clean: boolean }).clean = true;
    const s = new ProvisionSession(this, client, peerAddress(client.conn) ?? null);
    this.live.add(s);
    this.closeIn(s, this.tuning.sessionMs);
    ctx.admit(s, done);
  }

  registered(s: ProvisionSession): void {
    if (s.gone) return;
    s.registered = true;
    this.deps.ctx.logger.debug({ clientId: s.client.id, ip: s.ip }, 'mqtt provisioning session opened');
  }

  gone(s: ProvisionSession, cause: string): void {
    if (s.gone) return;
    s.gone = true;
    if (s.timer) clearTimeout(s.timer);
    s.timer = null;
    this.live.delete(s);
    this.deps.ctx.logger.debug({ clientId: s.client.id, ip: s.ip, cause }, 'mqtt provisioning session closed');
  }

  /** Broker stop: drop timers. */
  clear(): void {
    for (const s of this.live) if (s.timer) clearTimeout(s.timer);
    this.live.clear();
    this.perIp.clear();
  }

  authorizeSubscribe(s: ProvisionSession, sub: Subscription): Subscription | null {
    if (sub.topic !== PROVISION_RESPONSE_TOPIC) {
      this.deps.ctx.count('subscribe', 'provision_only');
      return null;
    }
    sub.qos = Math.min(sub.qos, 1) as 0 | 1;
    s.subQos = sub.qos as 0 | 1;
    return sub;
  }

  unsubscribed(s: ProvisionSession, topics: string[]): void {
    if (topics.includes(PROVISION_RESPONSE_TOPIC)) s.subQos = null;
  }

  /** Only the session's own answer reaches it. */
  forward(s: ProvisionSession, packet: AedesPublishPacket): AedesPublishPacket | null {
    return packet.topic === PROVISION_RESPONSE_TOPIC && s.answer !== null && packet.payload === s.answer ? packet : null;
  }

  /** The request is taken (PUBACK at once) and answered when the provisioner is done; anything else closes the session. */
  authorizePublish(s: ProvisionSession, packet: PublishPacket, cb: PubDone): void {
    const ctx = this.deps.ctx;
    const topic = packet.topic;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    sink(packet); // never routed: the request is for the server only
    cb(null);
    if (topic !== PROVISION_REQUEST_TOPIC) {
      ctx.count('publish', 'provision_only');
      ctx.logger.debug({ clientId: s.client.id, ip: s.ip, topic: topic.slice(0, 200) }, 'provisioning session published elsewhere: closed');
      setImmediate(() => s.client.close());
      return;
    }
    if (s.requested) { ctx.count('publish', 'provision_repeat'); return; }
    s.requested = true;
    if (!this.allow(s.ip)) {
      ctx.count('publish', 'provision_rate_limited');
      this.answer(s, TOO_MANY);
      return;
    }
    this.deps.provisioner.provision(payload, { ip: s.ip }).then((a) => this.answer(s, a), (err: unknown) => {
      ctx.logger.error({ err }, 'provisioner failed');
      this.answer(s, { errorMsg: 'Failed to provision device!', status: 'FAILURE' });
    });
  }

  private answer(s: ProvisionSession, a: ProvisionAnswer): void {
    if (s.gone || s.client.closed) return;
    const payload = Buffer.from(JSON.stringify(a), 'utf8');
    s.answer = payload;
    const qos = s.subQos ?? 0;
    // Client.publish writes to this connection (through authorizeForward), whether it subscribed or not.
    s.client.publish({ cmd: 'publish', topic: PROVISION_RESPONSE_TOPIC, payload, qos, retain: false, dup: false } as PublishPacket, () => {
      this.closeIn(s, this.tuning.answerGraceMs);
    });
  }

  private closeIn(s: ProvisionSession, ms: number): void {
    if (s.timer) clearTimeout(s.timer);
    s.timer = setTimeout(() => { s.timer = null; if (!s.client.closed) s.client.close(); }, ms);
    s.timer.unref();
  }

  /** One token of the address's bucket; unknown addresses share one bucket. */
  private allow(ip: string | null): boolean {
    const now = this.deps.ctx.clock.now();
    const key = ip ?? '?';
    let b = this.perIp.get(key);
    if (!b) {
      if (this.perIp.size >= MAX_TRACKED_ADDRESSES) for (const [k, v] of this.perIp) if (v.isFull(now)) this.perIp.delete(k);
      const n = this.tuning.perIpPerMinute;
      b = new TokenBucket(n / 60, n, now);
      this.perIp.set(key, b);
    }
    return b.tryTake(now);
  }
}

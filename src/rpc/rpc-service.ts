/**
 * RpcService: server → device commands with store-and-forward.
 *
 * Spec device-protocol.md "Commands (RPC)":
 * - request on `v1/devices/D/rpc/request/R` (QoS 1), payload
 *   `{"method", "params", "expiresAt"}`; response on `.../rpc/response/R`
 *   (arrives here as bus 'rpc.response', validated by ingest);
 * - "A device that is offline when a command is sent gets it when it
 *   reconnects, unless expiresAt has passed": every command is a row in
 *   `rpc_requests` (SQLite, survives restarts) and is (re-)sent on reconnect.
 *
 * Keng behaviour (firmware-protocols/device-protocol.md §1.4): held commands
 * are sent after the device has subscribed to `rpc/request/+`. BrokerPort has
 * no subscribe signal, so after a connect (bus 'status' online) the device is
 * "warming up" and its commands wait until the first of:
 *   - a message from the device (status with extras → 'attributes',
 *     telemetry, an event or an RPC response): the connect sequence of §1.5
 *     subscribes before publishing anything, so the subscription exists;
 *   - `readyDelayMs` (default 1 s) after the connect.
 * Then every non-expired command of the device that is `queued`, or `sent`
 * but unanswered (it may have been lost with the previous connection: QoS 1
 * with a clean session), is published again in creation order. Devices must
 * de-duplicate request ids (guide §11.4: "be ready to see R twice").
 *
 * Responses are matched to the request id AND the device: a response for an
 * unknown id, another device's request, or a request never sent to the device
 * ("a speaker replying for a broadcast it never got") is refused: counted in
 * `keng_rpc_responses_refused_total{reason}`, logged, and reported as a
 * 'refused' event; it changes nothing.
 *
 * ThingsBoard request ids (device protocol §13.2): to a device whose connection logged in with its
 * access token, a command is published as `v1/devices/D/rpc/request/{n}` (the broker delivers it on
 * `v1/devices/me/...`) with an integer `n`: the Arduino/ESP32 SDK parses the id with atoi and
 * answers on `rpc/response/{n}`. `n` is stored in the command's row (`tb_id`, per device, only
 * growing, 1 … 2^31-1 then 1 again), so an answer maps back to the command also after a reconnect
 * or a restart; everything else (events, logs, the API) keeps Keng's own id `r_…`. A command first
 * sent to a secret session and re-sent to a token session gets its `n` then; either answer maps.
 *
 * Signed commands (device protocol §11.6, version 1.1): with a `signer`, every `broadcast.play`
 * and `broadcast.stop` also carries `signed`, `sig` and `kid`, computed at each publish (first
 * send and every re-send) because the device id and the topic's request id are inside `signed`,
 * and its params are exactly the params published (after the params hook).
 */
import { EventEmitter } from 'node:events';
import { isRpcStatus } from '../core/protocol.js';
import type { BrokerPort } from '../broker/types.js';
import { systemClock, type Clock } from '../core/clock.js';
import type { Component } from '../core/lifecycle.js';
import type { UrgentOutbound } from '../core/urgent.js';
import { Errors } from '../core/errors.js';
import type { EventBus, KengEvents } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { SqliteDatabase } from '../storage/state/db.js';
import { CommandEncoder, type Envelope } from './encoder.js';
import { newId } from './ids.js';
import { rpcMetrics, type RpcMetrics } from './metrics.js';
import { MAX_TB_ID, RpcStore } from './store.js';
import type { CommandSigner, ParamsHook, RpcEvents, RpcRefusal, RpcRequest, RpcSendOptions, RpcSendResult, RpcStatus } from './types.js';

export interface RpcServiceOptions {
  /** The state store (its `db` is read at start()). */
  stateDb: { readonly db: SqliteDatabase };
  /** `credentialOf` tells access-token sessions (integer request ids); without it every session is taken as id + secret. */
  broker: Pick<BrokerPort, 'publish' | 'isConnected'> & Partial<Pick<BrokerPort, 'credentialOf'>>;
  bus: EventBus;
  logger: Logger;
  metrics?: Metrics;
  clock?: Clock;
  /** Longest wait after a connect before held commands are sent (no earlier sign of a subscription). Default 1000. */
  readyDelayMs?: number;
  /** Expiry sweep period. Default 1000. */
  sweepIntervalMs?: number;
  /** A sent but unanswered command is marked expired this long after expiresAt. Default 30,000. */
  answerGraceMs?: number;
  /** Finished commands (answered, expired, cancelled) older than this are deleted. Default 30 days. */
  retentionMs?: number;
  /**
   * Runs the writes of one device answer inside the state store's group commit
   * (broadcast/group-commit.ts: one fsync for the answers of many speakers).
   * Default: each write commits on its own.
   */
  batch?: <T>(fn: () => T) => T;
  /**
   * Send-time params per method, called at every send (also a resend after a reconnect), so what
   * must be fresh per send (a signed media URL) is, while the stored params stay as given.
   */
  paramsHooks?: Readonly<Record<string, ParamsHook>>;
  /**
   * Signs the methods of SIGNED_METHODS at every publish (device protocol §11.6). Without it they
   * go unsigned, which firmware that does not verify accepts, and firmware that requires signatures refuses.
   */
  signer?: CommandSigner;
  /** Where sendMany(…, {urgent: true}) registers its publishes (core/urgent.ts); absent: nothing waits for them. */
  urgent?: Pick<UrgentOutbound, 'hold'>;
}

/** An integer request id as a ThingsBoard SDK writes it back (`%u` of what atoi gave). */
const TB_ID_RE = /^[0-9]{1,10}$/;

const MAX_PARAMS_BYTES = 64 * 1024;
const REFUSAL_WARNINGS_PER_MIN = 10;

type Listener<K extends keyof RpcEvents> = (e: RpcEvents[K]) => void;

export class RpcService implements Component {
  readonly name = 'rpc';
  private readonly o: RpcServiceOptions;
  private readonly clock: Clock;
  private readonly m: RpcMetrics;
  private readonly ee = new EventEmitter();
  /** Payloads on the wire: send-time params, signatures (encoder.ts). */
  private readonly enc: CommandEncoder;
  /** Connected devices whose subscription is not yet known to exist. */
  private readonly warming = new Map<string, NodeJS.Timeout>();
  /** Per-device publish chain: commands reach a device in the order they were sent. */
  private readonly chains = new Map<string, Promise<void>>();
  /** Last integer request id per device (rpc_tb_ids, read once per device): this service is its only writer. */
  private readonly tbLast = new Map<string, number>();
  private store: RpcStore | null = null;
  private offs: Array<() => void> = [];
  private sweepTimer: NodeJS.Timeout | null = null;
  private lastCleanup = 0;
  private refusalWindow = { start: 0, count: 0 };

  constructor(opts: RpcServiceOptions) {
    this.o = opts;
    this.enc = new CommandEncoder({ hooks: new Map(Object.entries(opts.paramsHooks ?? {})), ...(opts.signer ? { signer: opts.signer } : {}), logger: opts.logger });
    this.clock = opts.clock ?? systemClock;
    this.m = rpcMetrics(opts.metrics);
    this.ee.setMaxListeners(50);
  }

  // ------------------------------------------------------------ lifecycle

  async start(): Promise<void> {
    if (this.store) return;
    this.store = new RpcStore(this.o.stateDb.db);
    const bus = this.o.bus;
    this.offs = [
      bus.on('status', (e) => this.onStatus(e)),
      bus.on('rpc.response', (e) => (this.o.batch ? this.o.batch(() => this.handleResponse(e)) : this.handleResponse(e))),
      // Any message from a warming device shows it went through its connect sequence.
      bus.on('attributes', (e) => this.signal(e.deviceId)),
      bus.on('telemetry', (e) => this.signal(e.deviceId)),
      bus.on('device.event', (e) => this.signal(e.deviceId)),
    ];
    this.sweepTimer = setInterval(() => this.sweep(), this.o.sweepIntervalMs ?? 1000);
    this.sweepTimer.unref();
    this.sweep();
    // Devices already connected when we start (e.g. the service was started after the broker).
    for (const deviceId of this.store.devicesWithOpen()) {
      if (this.o.broker.isConnected(deviceId)) void this.flush(deviceId);
    }
  }

  async stop(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    for (const t of this.warming.values()) clearTimeout(t);
    this.warming.clear();
    await Promise.allSettled([...this.chains.values()]);
    this.chains.clear();
    this.store = null;
  }

  // ------------------------------------------------------------ API

  /** Subscribe to a typed event; returns the unsubscribe function. */
  on<K extends keyof RpcEvents>(event: K, fn: Listener<K>): () => void {
    this.ee.on(event, fn);
    return () => { this.ee.off(event, fn); };
  }

  /** Shorthand for on('response'). */
  onResponse(fn: Listener<'response'>): () => void {
    return this.on('response', fn);
  }

  /** true when a command sent now would be published at once. */
  isReady(deviceId: string): boolean {
    return this.o.broker.isConnected(deviceId) && !this.warming.has(deviceId);
  }

  isConnected(deviceId: string): boolean {
    return this.o.broker.isConnected(deviceId);
  }

  /**
   * Persists a command and publishes it now if the device is connected (and
   * subscribed), otherwise keeps it queued for the reconnect. Throws
   * KENG_ERR_VALIDATION for bad arguments (incl. expiresAt not in the future).
   */
  send(deviceId: string, method: string, params: Record<string, unknown>, opts: RpcSendOptions): RpcSendResult {
    const store = this.requireStore();
    const now = this.clock.now();
    if (typeof deviceId !== 'string' || deviceId.length === 0) throw Errors.VALIDATION('deviceId is required');
    const paramsJson = this.check(method, params, opts, now);
    const id = newId('r', now);
    const tbId = this.isReady(deviceId) ? this.nextTbId(deviceId) : undefined;
    const insert = { id, deviceId, method, paramsJson, expiresAt: opts.expiresAt, createdAt: now, ...(tbId !== undefined ? { tbId } : {}) };
    if (tbId === undefined) store.insert(insert);
    else this.o.stateDb.db.transaction(() => store.insert(insert))();
    // The row as stored, built here rather than read back (a broadcast sends thousands of these at once).
    const row: RpcRequest = {
      id, deviceId, method, params: JSON.parse(paramsJson) as Record<string, unknown>, expiresAt: opts.expiresAt, state: 'queued',
      createdAt: now, sentAt: null, answeredAt: null, response: null, tbId: tbId ?? null,
    };
    if (this.isReady(deviceId) && this.publish(row, false)) return { requestId: id, state: 'sent' };
    return { requestId: id, state: 'queued' };
  }

  /**
   * The checks of send() without sending: throws KENG_ERR_VALIDATION for arguments send() and
   * sendMany() would refuse. Returns the params as stored (JSON).
   */
  check(method: string, params: Record<string, unknown>, opts: RpcSendOptions, now = this.clock.now()): string {
    if (typeof method !== 'string' || method.length === 0 || method.length > 128) throw Errors.VALIDATION('method must be 1-128 characters');
    if (typeof params !== 'object' || params === null || Array.isArray(params)) throw Errors.VALIDATION('params must be an object');
    if (!Number.isFinite(opts.expiresAt)) throw Errors.VALIDATION('expiresAt must be epoch milliseconds');
    if (opts.expiresAt <= now) throw Errors.VALIDATION('expiresAt is not in the future');
    const paramsJson = JSON.stringify(params);
    if (Buffer.byteLength(paramsJson) > MAX_PARAMS_BYTES) throw Errors.VALIDATION(`params larger than ${MAX_PARAMS_BYTES} bytes`);
    return paramsJson;
  }

  /**
   * send() to many devices at once with the same method, params and expiry (a broadcast to every
   * speaker of a commune). Cheaper than a send() per device: the params are checked, serialised and
   * passed through the params hook once, the request payload is built once (per device for a signed
   * method, §11.6), and each command is inserted directly in its state (`sent` with sentAt when its
   * device is ready, else `queued`) rather than inserted queued and updated when published.
   *
   * `persist(results)` runs in the same transaction as the inserts and before anything is
   * published: the caller writes its own rows there (the broadcast's targets), so the commands and
   * the caller's rows are stored together or not at all, and nothing is published for writes that
   * failed. The publishes are chained (as in send()), so they go out after the caller's synchronous
   * code, e.g. after the caller has committed. A crash between that commit and a publish loses
   * nothing: a `sent` command without an answer is published again when its device reconnects
   * (flush()), like one lost with a dropped connection.
   *
   * A signed method needs one signature per device (§11.6). With a signer that signs off the main
   * thread (signAsync), only the first is made here (a signer that cannot sign keeps the whole
   * batch queued, as it keeps a send() queued); the others are made on libuv's thread pool while
   * the rows are written and committed, and each command is published once its signature is there
   * (still after the caller's synchronous code, in the device's order). A signature that fails
   * then leaves its command for the device's next connect, like a publish that failed. 2,000
   * signatures on the event loop were ~130 ms before the caller's commit and reply.
   *
   * No 'sent' events for these first sends (the caller has the results); re-sends after a
   * reconnect emit 'sent' as usual. Throws KENG_ERR_VALIDATION (nothing stored) like send().
   */
  sendMany(deviceIds: readonly string[], method: string, params: Record<string, unknown>, opts: RpcSendOptions,
    persist: (results: readonly RpcSendResult[]) => void = () => {}): RpcSendResult[] {
    const store = this.requireStore();
    const now = this.clock.now();
    if (deviceIds.some((d) => typeof d !== 'string' || d.length === 0)) throw Errors.VALIDATION('deviceId is required');
    const paramsJson = this.check(method, params, opts, now);
    // The send-time params are the same for every device of the batch (sent at the same instant).
    const sendParams = this.enc.sendParams({
      id: '', deviceId: '', method, params: JSON.parse(paramsJson) as Record<string, unknown>, expiresAt: opts.expiresAt, state: 'queued', createdAt: now, sentAt: null, answeredAt: null, response: null, tbId: null,
    });
    // So is the payload, unless it is signed: a signature names the device and the request id (§11.6).
    const perDevice = this.enc.signs(method);
    const common = sendParams !== null && !perDevice ? this.enc.encode({ topicId: '', deviceId: '', method, expiresAt: opts.expiresAt }, sendParams) : null;
    const pooled = perDevice && this.o.signer!.signAsync !== undefined;
    let probed = false;
    let poolFailures = 0;
    const payloads: Array<Buffer | Promise<Buffer | null> | null> = [];
    const tbIds: Array<number | undefined> = [];
    let signerFailed = false;
    const results: RpcSendResult[] = deviceIds.map((deviceId) => {
      const requestId = newId('r', now);
      let payload: Buffer | Promise<Buffer | null> | null = null;
      let tbId: number | undefined;
      if (sendParams !== null && !signerFailed && this.isReady(deviceId)) {
        tbId = this.nextTbId(deviceId);
        const e: Envelope = { topicId: tbId !== undefined ? String(tbId) : requestId, deviceId, method, expiresAt: opts.expiresAt };
        if (!perDevice) payload = common;
        else if (pooled && probed) payload = this.enc.encodeAsync(e, sendParams, () => poolFailures++ === 0);
        else { payload = this.enc.encode(e, sendParams); probed = true; }
        if (payload === null) { signerFailed = true; tbId = undefined; } // logged once; the rest of the batch stays queued too
      }
      payloads.push(payload);
      tbIds.push(payload !== null ? tbId : undefined);
      return { requestId, state: payload !== null ? 'sent' : 'queued' };
    });
    this.o.stateDb.db.transaction(() => {
      for (let i = 0; i < deviceIds.length; i++) {
        const r = results[i]!;
        const tbId = tbIds[i];
        store.insert({
          id: r.requestId, deviceId: deviceIds[i]!, method, paramsJson, expiresAt: opts.expiresAt, createdAt: now,
          ...(r.state === 'sent' ? { sentAt: now } : {}), ...(tbId !== undefined ? { tbId } : {}),
        });
      }
      persist(results);
    })();
    let sent = 0;
    const urgent = opts.urgent === true ? this.o.urgent : undefined;
    const published: Promise<void>[] = [];
    for (let i = 0; i < deviceIds.length; i++) {
      const payload = payloads[i];
      if (!payload) continue;
      const tbId = tbIds[i];
      const p = this.chainPublish(deviceIds[i]!, results[i]!.requestId, tbId !== undefined ? String(tbId) : results[i]!.requestId, payload);
      if (urgent) published.push(p);
      sent++;
    }
    if (urgent && published.length > 0) urgent.hold(Promise.all(published));
    if (sent > 0) this.m.sent.labels({ method, resend: 'false' }).inc(sent);
    return results;
  }

  /** Withdraws a command that has not been sent yet. Returns false when it was already sent (or is unknown/finished). */
  cancel(requestId: string): boolean {
    return this.requireStore().cancelQueued(requestId, this.clock.now());
  }

  /** Withdraws the queued (never sent) `method` commands whose params hold `value` at JSON path `path`; returns how many. */
  cancelQueuedByParam(method: string, path: string, value: string): number {
    return this.requireStore().cancelQueuedByParam(method, path, value, this.clock.now());
  }

  get(requestId: string): RpcRequest | undefined {
    return this.store?.get(requestId);
  }

  /** Commands of a device, oldest first (all states unless given). */
  list(deviceId: string, states?: readonly RpcRequest['state'][]): RpcRequest[] {
    return this.requireStore().listDevice(deviceId, states);
  }

  /** Runs the expiry sweep now (the timer runs it every sweepIntervalMs). */
  sweep(): void {
    const store = this.store;
    if (!store) return;
    const now = this.clock.now();
    for (const r of store.dueForExpiry(now, this.o.answerGraceMs ?? 30_000)) this.expire(r, now);
    if (now - this.lastCleanup > 3_600_000) {
      this.lastCleanup = now;
      const n = store.deleteFinishedBefore(now - (this.o.retentionMs ?? 30 * 86_400_000));
      if (n > 0) this.o.logger.debug({ deleted: n }, 'old rpc requests deleted');
    }
  }

  // ------------------------------------------------------------ connect / reconnect

  private onStatus(e: KengEvents['status']): void {
    const old = this.warming.get(e.deviceId);
    if (old) clearTimeout(old);
    this.warming.delete(e.deviceId);
    if (!e.online) return;
    const t = setTimeout(() => this.signal(e.deviceId), this.o.readyDelayMs ?? 1000);
    t.unref();
    this.warming.set(e.deviceId, t);
  }

  /** The device is (now known to be) subscribed: send what it holds. */
  private signal(deviceId: string): void {
    const t = this.warming.get(deviceId);
    if (!t) return;
    clearTimeout(t);
    this.warming.delete(deviceId);
    void this.flush(deviceId);
  }

  /** Re-sends the device's queued and unanswered commands in creation order; expires the stale ones. */
  private async flush(deviceId: string): Promise<void> {
    const store = this.store;
    if (!store || !this.isReady(deviceId)) return;
    const now = this.clock.now();
    const open = store.listDevice(deviceId, ['queued', 'sent']);
    let resent = 0;
    for (const r of open) {
      if (r.expiresAt <= now) {
        if (r.state === 'queued') this.expire(r, now);
        continue; // a sent one past expiresAt is left to the answer grace period
      }
      if (this.publish(r, true)) resent++;
    }
    if (resent > 0) this.o.logger.debug({ deviceId, resent }, 'held rpc requests sent after reconnect');
  }

  // ------------------------------------------------------------ publish

  /** Marks the command sent and chains its publish. false when the params hook failed (stays queued). */
  private publish(r0: RpcRequest, resend: boolean): boolean {
    const store = this.requireStore();
    let r = r0;
    if (this.isTokenSession(r.deviceId) && r.tbId === null) {
      const tbId = this.nextTbId(r.deviceId)!;
      store.setTbId(r.id, r.deviceId, tbId);
      r = { ...r, tbId };
    }
    const topicId = this.topicId(r);
    const payload = this.payloadOf(r, topicId);
    if (payload === null) return false;
    const now = this.clock.now();
    const wasSent = r.state === 'sent';
    store.markSent(r.id, now);
    const sent: RpcRequest = { ...r, state: 'sent', sentAt: now };
    this.m.sent.labels({ method: r.method, resend: String(resend || wasSent) }).inc();
    this.chainPublish(r.deviceId, r.id, topicId, payload);
    this.ee.emit('sent', { request: sent, at: now, resend: resend || wasSent });
    return true;
  }

  /** The request payload on the wire; null when the params hook or the signer failed. */
  private payloadOf(r: RpcRequest, topicId: string): Buffer | null {
    const params = this.enc.sendParams(r);
    return params === null ? null : this.enc.encode({ topicId, deviceId: r.deviceId, method: r.method, expiresAt: r.expiresAt }, params);
  }

  /** The device's current connection logged in with its access token (ThingsBoard SDK: integer request ids). */
  private isTokenSession(deviceId: string): boolean {
    return this.o.broker.credentialOf?.(deviceId) === 'token';
  }

  /** The id in the request topic: the integer id for an access-token session, else Keng's own id. */
  private topicId(r: RpcRequest): string {
    return r.tbId !== null && this.isTokenSession(r.deviceId) ? String(r.tbId) : r.id;
  }

  /**
   * The next integer id of a device on an access-token session (undefined otherwise), 1 … 2^31-1
   * then 1 again. The caller stores it (store.insert / setTbId) in the transaction of the command's
   * row; if that transaction fails the id is skipped, which keeps ids growing.
   */
  private nextTbId(deviceId: string): number | undefined {
    if (!this.isTokenSession(deviceId)) return undefined;
    const last = this.tbLast.get(deviceId) ?? this.requireStore().lastTbId(deviceId);
    const n = last >= MAX_TB_ID ? 1 : last + 1;
    this.tbLast.set(deviceId, n);
    return n;
  }

  /**
   * Publishes after the device's earlier commands (per-device chain), so they arrive in the order
   * sent. A payload still being signed holds the chain until it is; null (signing failed, logged)
   * keeps the command for the next connect.
   */
  /** Publishes after the device's earlier commands; the promise settles when this one is out (or kept for later). */
  private chainPublish(deviceId: string, requestId: string, topicId: string, payload: Buffer | Promise<Buffer | null>): Promise<void> {
    const topic = `v1/devices/${deviceId}/rpc/request/${topicId}`;
    const prev = this.chains.get(deviceId) ?? Promise.resolve();
    const next = prev.then(() => payload).then((p) => {
      if (p !== null) return this.o.broker.publish(topic, p, { qos: 1 });
      this.store?.requeue(requestId);
      return undefined;
    }).catch((err: unknown) => {
      // Not delivered: keep it for the next connect (unless answered meanwhile).
      this.o.logger.warn({ err, requestId, deviceId }, 'rpc publish failed: request kept for the next connect');
      this.store?.requeue(requestId);
    });
    this.chains.set(deviceId, next);
    void next.then(() => { if (this.chains.get(deviceId) === next) this.chains.delete(deviceId); });
    return next;
  }

  private expire(r: RpcRequest, now: number): void {
    if (!this.requireStore().markExpired(r.id, r.state)) return;
    this.m.expired.labels({ method: r.method }).inc();
    this.o.logger.debug({ requestId: r.id, deviceId: r.deviceId, method: r.method, was: r.state }, 'rpc request expired');
    this.ee.emit('expired', { request: { ...r, state: 'expired' }, at: now });
  }

  // ------------------------------------------------------------ responses

  private handleResponse(e0: KengEvents['rpc.response']): void {
    const store = this.store;
    if (!store) return;
    this.signal(e0.deviceId);
    // An integer id is a ThingsBoard SDK's answer (§13.2): the device's command published with that id.
    const mapped = TB_ID_RE.test(e0.requestId) ? store.idOfTbId(e0.deviceId, Number(e0.requestId)) : undefined;
    const e = mapped !== undefined ? { ...e0, requestId: mapped } : e0;
    const statusRaw = e.payload.status;
    const status: RpcStatus = isRpcStatus(statusRaw) ? statusRaw : 'ok';
    const detail = typeof e.payload.detail === 'string' ? e.payload.detail : undefined;
    const responseJson = JSON.stringify(e.payload);
    // The usual case, a first answer to a sent request of this device, in one statement; anything else
    // (refusals, duplicates, late answers) is sorted out below from the stored row.
    const answered = store.answerSent(e.requestId, e.deviceId, e.at, responseJson);
    if (answered) {
      this.m.responses.labels({ status }).inc();
      const request: RpcRequest = { ...answered, response: e.payload };
      this.ee.emit('response', { request, status, ...(detail !== undefined ? { detail } : {}), payload: e.payload, at: e.at, duplicate: false });
      return;
    }
    const r = store.get(e.requestId);
    if (!r) { this.refuse(e, 'unknown_request'); return; }
    if (r.deviceId !== e.deviceId) { this.refuse(e, 'wrong_device'); return; }
    if (r.sentAt === null) { this.refuse(e, 'never_sent'); return; }
    const duplicate = r.state === 'answered';
    if (!duplicate) {
      store.markAnswered(r.id, e.at, responseJson);
      this.m.responses.labels({ status }).inc();
      if (r.state === 'expired') this.o.logger.info({ requestId: r.id, deviceId: r.deviceId, status }, 'late rpc response to an expired request');
    }
    const request: RpcRequest = duplicate ? r : { ...r, state: 'answered', answeredAt: e.at, response: e.payload };
    this.ee.emit('response', { request, status, ...(detail !== undefined ? { detail } : {}), payload: e.payload, at: e.at, duplicate });
  }

  private refuse(e: KengEvents['rpc.response'], reason: RpcRefusal): void {
    this.m.refused.labels({ reason }).inc();
    const now = this.clock.now();
    if (now - this.refusalWindow.start > 60_000) this.refusalWindow = { start: now, count: 0 };
    const fields = { deviceId: e.deviceId, requestId: e.requestId.slice(0, 128), reason, status: e.payload.status };
    if (++this.refusalWindow.count <= REFUSAL_WARNINGS_PER_MIN) this.o.logger.warn(fields, 'rpc response refused: the device was never sent this request');
    else this.o.logger.debug(fields, 'rpc response refused');
    this.ee.emit('refused', { deviceId: e.deviceId, requestId: e.requestId, reason, at: e.at });
  }

  private requireStore(): RpcStore {
    if (!this.store) throw Errors.NOT_READY('rpc service is not started');
    return this.store;
  }
}

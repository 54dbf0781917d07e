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
 * Responses are matched to the request id AND the device (responses.ts); one
 * for a command the device was never sent is refused and changes nothing.
 * The batch send of a broadcast is send-many.ts; payloads are encoder.ts.
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
import type { BrokerPort } from '../broker/types.js';
import { systemClock, type Clock } from '../core/clock.js';
import type { Component } from '../core/lifecycle.js';
import type { UrgentOutbound } from '../core/urgent.js';
import { Errors } from '../core/errors.js';
import type { EventBus, KengEvents } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { SqliteDatabase } from '../storage/state/db.js';
import { CommandEncoder } from './encoder.js';
import { newId } from './ids.js';
import { rpcMetrics, type RpcMetrics } from './metrics.js';
import { RpcResponses } from './responses.js';
import { sendMany } from './send-many.js';
import { DeviceWarmup } from './warmup.js';
import { MAX_TB_ID, RpcStore } from './store.js';
import type { CommandSigner, ParamsHook, RpcEvents, RpcRequest, RpcSendOptions, RpcSendResult } from './types.js';

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

const MAX_PARAMS_BYTES = 64 * 1024;

type Listener<K extends keyof RpcEvents> = (e: RpcEvents[K]) => void;

export class RpcService implements Component {
  readonly name = 'rpc';
  private readonly o: RpcServiceOptions;
  private readonly clock: Clock;
  private readonly m: RpcMetrics;
  private readonly ee = new EventEmitter();
  /** Payloads on the wire: send-time params, signatures (encoder.ts). */
  private readonly enc: CommandEncoder;
  /** Device answers: matching, recording, refusing (responses.ts). */
  private readonly responses: RpcResponses;
  /** Connected devices whose subscription is not yet known to exist (warmup.ts). */
  private readonly warmup: DeviceWarmup;
  /** Per-device publish chain: commands reach a device in the order they were sent. */
  private readonly chains = new Map<string, Promise<void>>();
  /** Last integer request id per device (rpc_tb_ids, read once per device): this service is its only writer. */
  private readonly tbLast = new Map<string, number>();
  private store: RpcStore | null = null;
  private offs: Array<() => void> = [];
  private sweepTimer: NodeJS.Timeout | null = null;
  private lastCleanup = 0;

  constructor(opts: RpcServiceOptions) {
    this.o = opts;
    this.enc = new CommandEncoder({ hooks: new Map(Object.entries(opts.paramsHooks ?? {})), ...(opts.signer ? { signer: opts.signer } : {}), logger: opts.logger });
    this.clock = opts.clock ?? systemClock;
    this.m = rpcMetrics(opts.metrics);
    this.ee.setMaxListeners(50);
    this.warmup = new DeviceWarmup(opts.readyDelayMs ?? 1000, (deviceId) => { void this.flush(deviceId); });
    this.responses = new RpcResponses({ metrics: this.m, logger: opts.logger, clock: this.clock, emit: (event, e) => { this.ee.emit(event, e); } });
  }

  // ------------------------------------------------------------ lifecycle

  async start(): Promise<void> {
    if (this.store) return;
    this.store = new RpcStore(this.o.stateDb.db);
    const bus = this.o.bus;
    this.offs = [
      bus.on('status', (e) => this.warmup.status(e.deviceId, e.online)),
      bus.on('rpc.response', (e) => (this.o.batch ? this.o.batch(() => this.handleResponse(e)) : this.handleResponse(e))),
      // Any message from a warming device shows it went through its connect sequence.
      bus.on('attributes', (e) => this.warmup.signal(e.deviceId)),
      bus.on('telemetry', (e) => this.warmup.signal(e.deviceId)),
      bus.on('device.event', (e) => this.warmup.signal(e.deviceId)),
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
    this.warmup.clear();
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
    return this.o.broker.isConnected(deviceId) && !this.warmup.isWarming(deviceId);
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
   * send() to many devices at once with the same method, params and expiry; `persist(results)`
   * runs in the transaction of the inserts, before anything is published (see send-many.ts).
   * No 'sent' events for these first sends (the caller has the results); re-sends after a
   * reconnect emit 'sent' as usual. Throws KENG_ERR_VALIDATION (nothing stored) like send().
   */
  sendMany(deviceIds: readonly string[], method: string, params: Record<string, unknown>, opts: RpcSendOptions,
    persist: (results: readonly RpcSendResult[]) => void = () => {}): RpcSendResult[] {
    return sendMany({
      store: this.requireStore(), stateDb: this.o.stateDb, enc: this.enc, signer: this.o.signer, metrics: this.m, urgent: this.o.urgent, now: this.clock.now(),
      check: (m, p, o, now) => this.check(m, p, o, now),
      isReady: (d) => this.isReady(d),
      nextTbId: (d) => this.nextTbId(d),
      chainPublish: (d, id, topicId, payload) => this.chainPublish(d, id, topicId, payload),
    }, deviceIds, method, params, opts, persist);
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
   * keeps the command for the next connect. The promise settles when this one is out (or kept for later).
   */
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

  private handleResponse(e: KengEvents['rpc.response']): void {
    const store = this.store;
    if (!store) return;
    this.warmup.signal(e.deviceId);
    this.responses.handle(store, e);
  }

  private requireStore(): RpcStore {
    if (!this.store) throw Errors.NOT_READY('rpc service is not started');
    return this.store;
  }
}

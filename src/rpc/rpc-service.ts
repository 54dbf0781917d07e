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
 *
 * Memory and the state window (docs/design/state-window.md): the open commands (`queued`, `sent`) are
 * held in memory (open-commands.ts, loaded at start) and every decision is made there at once; its
 * write goes into the state window (src/storage/state/window.ts: one transaction for everything
 * handled within a few milliseconds) through the kinds of store-sql.ts. send(), sendMany() and
 * cancel() return promises that settle after that window's COMMIT; a command is published only after
 * the window storing it (or its move to `sent`) has committed. The internal events (`sent`,
 * `response`, `expired`) are emitted synchronously at the decision, so a listener's writes (the
 * broadcast executor's target moves) belong to the same moment. settled() tells the ingest when a
 * device's answer is durable (its PUBACK waits for it). A failed window evicts the commands it
 * touched; they are reloaded from the database.
 * The batch send of a broadcast is send-many.ts; payloads are encoder.ts.
 *
 * Cluster mode (`ownership`, on PostgreSQL): this node holds, publishes and expires only the commands it owns, those
 * of devices whose MQTT session it holds; the others are picked up by their owner (ownership.ts). Another node may
 * withdraw a queued command in the database (a broadcast stopped there): this node's move of it to `sent` then misses
 * and it is not published ('withdrawn' event); a hint (nudge) makes this node look at its queued commands at once.
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
import type { Db } from '../storage/sql/db.js';
import type { StateWindow } from '../storage/state/window.js';
import { CommandEncoder } from './encoder.js';
import { newId } from './ids.js';
import { rpcMetrics, type RpcMetrics } from './metrics.js';
import { RpcResponses } from './responses.js';
import { sendMany } from './send-many.js';
import { DeviceWarmup } from './warmup.js';
import { OpenCommands } from './open-commands.js';
import { CommandOwnership, type RpcOwnership } from './ownership.js';
import { MAX_TB_ID, RpcStoreSql, type NewRequestRow, type RpcCas } from './store-sql.js';
import type { CommandSigner, ParamsHook, RpcEvents, RpcRequest, RpcSendOptions, RpcSendResult } from './types.js';

export interface RpcServiceOptions {
  /** Where `rpc_requests` live (reads: memory at start, rare misses). */
  db: Db<unknown>;
  /** The node's state window over the same database: every write of this service goes through it. */
  window: StateWindow;
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
  /**
   * Cluster mode: this node owns only the commands of devices whose session it holds (ownership.ts). Used only when
   * `db` is PostgreSQL; absent or on the embedded store, the one node owns every command, as always.
   */
  ownership?: RpcOwnership;
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
  /** Last integer request id per device (rpc_tb_ids, loaded at start): this service is its only writer. */
  private readonly tbLast = new Map<string, number>();
  /** The open commands: what every decision reads. */
  private readonly open = new OpenCommands();
  /** Answers being matched by a database read (settled() waits for them). */
  private readonly lookups = new Set<Promise<void>>();
  private store: RpcStoreSql | null = null;
  /** Cluster mode: which commands are this node's (null: every command, one node). */
  private readonly own: CommandOwnership | null;
  private offs: Array<() => void> = [];
  private sweepTimer: NodeJS.Timeout | null = null;
  private lastCleanup = 0;

  constructor(opts: RpcServiceOptions) {
    this.o = opts;
    this.enc = new CommandEncoder({ hooks: new Map(Object.entries(opts.paramsHooks ?? {})), ...(opts.signer ? { signer: opts.signer } : {}), logger: opts.logger });
    this.clock = opts.clock ?? systemClock;
    this.m = rpcMetrics(opts.metrics);
    this.ee.setMaxListeners(50);
    this.warmup = new DeviceWarmup(opts.readyDelayMs ?? 1000, (deviceId) => { this.flush(deviceId); });
    this.responses = new RpcResponses({
      metrics: this.m, logger: opts.logger, clock: this.clock, emit: (event, e) => { this.ee.emit(event, e); },
      open: this.open, store: () => this.store, write: (c) => this.post(c), finish: (r) => this.finish(r),
    });
    this.own = opts.ownership && opts.db.dialect === 'postgres' ? new CommandOwnership({
      own: opts.ownership, db: opts.db, window: opts.window, open: this.open, clock: this.clock, logger: opts.logger,
      answerGraceMs: opts.answerGraceMs ?? 30_000, tbLast: this.tbLast,
      isConnected: (d) => this.o.broker.isConnected(d),
      claimed: (d) => { if (this.isReady(d)) this.flush(d); },
      taken: (rows) => this.taken(rows),
      withdrawn: (r) => { this.ee.emit('withdrawn', { request: r, at: this.clock.now() }); },
    }) : null;
  }

  // ------------------------------------------------------------ lifecycle

  async start(): Promise<void> {
    if (this.store) return;
    const store = new RpcStoreSql(this.o.db, this.own?.nodeId);
    const [open, tbLast] = await Promise.all([this.own ? this.own.load() : store.open(), store.lastTbIds()]);
    this.open.clear();
    for (const r of open) this.open.put(r);
    this.tbLast.clear();
    for (const [d, n] of tbLast) this.tbLast.set(d, n);
    this.store = store;
    const bus = this.o.bus;
    this.offs = [
      bus.on('status', (e) => {
        if (e.online) this.own?.connected(e.deviceId);
        this.warmup.status(e.deviceId, e.online);
      }),
      bus.on('rpc.response', (e) => this.handleResponse(e)),
      // Any message from a warming device shows it went through its connect sequence.
      bus.on('attributes', (e) => this.warmup.signal(e.deviceId)),
      bus.on('telemetry', (e) => this.warmup.signal(e.deviceId)),
      bus.on('device.event', (e) => this.warmup.signal(e.deviceId)),
      // A deleted device's rows go with it on the embedded store (foreign key cascade); on PostgreSQL they are deleted here.
      bus.on('device.changed', (e) => { if (e.change === 'deleted') this.deviceDeleted(e.deviceId); }),
    ];
    this.o.window.onEvict((keys) => this.evicted(keys));
    this.sweepTimer = setInterval(() => this.sweep(), this.o.sweepIntervalMs ?? 1000);
    this.sweepTimer.unref();
    this.sweep();
    this.own?.start();
    // Devices already connected when we start (e.g. the service was started after the broker).
    for (const deviceId of this.open.devices()) {
      if (this.o.broker.isConnected(deviceId)) this.flush(deviceId);
    }
  }

  async stop(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    await this.own?.stop();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    this.warmup.clear();
    await Promise.allSettled([...this.lookups]);
    await Promise.allSettled([...this.chains.values()]);
    this.chains.clear();
    this.store = null;
    this.open.clear();
  }

  // ------------------------------------------------------------ API

  /** Subscribe to a typed event; returns the unsubscribe function. */
  on<K extends keyof RpcEvents>(event: K, fn: Listener<K>): () => void {
    this.ee.on(event, fn);
    return () => { this.ee.off(event, fn); };
  }

  /**
   * Cluster mode: another node made commands for devices held here (a best-effort hint, e.g. from the cluster bus):
   * picks them up now rather than at the next pickup round. A no-op on one node.
   */
  nudge(): void {
    void this.own?.pickup();
    // The hint may also say a command held here was cancelled from another node (a broadcast stopped there): forget it now.
    void this.own?.recheckQueued();
  }

  /** Cluster mode: tells node `owner` (best effort, the live bus) to look at the commands it holds (see nudge()). */
  hintOwner(owner: string): void {
    if (this.own && owner !== this.own.nodeId) this.o.ownership?.nudge?.(owner);
  }

  /** Cluster mode: this node's id (the owner of the commands it holds); undefined on one node (embedded store, no ownership). */
  get nodeId(): string | undefined {
    return this.own?.nodeId;
  }

  /**
   * Cluster mode: forgets a command this node holds queued (never sent) because it is being withdrawn in the database by
   * a statement of the caller's (a broadcast stop, which decides from the row, not from memory). Memory only: the caller's
   * write goes into the same state window; a failed window reloads the device's commands. false when not held so.
   */
  forgetQueued(requestId: string): boolean {
    if (!this.isQueued(requestId)) return false;
    this.finish({ ...this.open.get(requestId)!, state: 'cancelled', answeredAt: this.clock.now() });
    return true;
  }

  /** Shorthand for on('response'). */
  onResponse(fn: Listener<'response'>): () => void {
    return this.on('response', fn);
  }

  /** true when a command sent now would be published at once. */
  isReady(deviceId: string): boolean {
    return this.o.broker.isConnected(deviceId) && !this.warmup.isWarming(deviceId) && !(this.own?.claiming(deviceId) ?? false);
  }

  isConnected(deviceId: string): boolean {
    return this.o.broker.isConnected(deviceId);
  }

  /**
   * Resolves once the writes decided so far (device answers included, also those still being matched by a
   * database read) are committed; rejects when their window failed. The ingest acknowledges a device's
   * answer only after it (no PUBACK for an answer that is not stored).
   */
  settled(): Promise<void> {
    if (this.lookups.size === 0) return this.o.window.settled();
    return Promise.all([...this.lookups]).then(() => this.o.window.settled());
  }

  /**
   * Stores a command and publishes it (after its commit) if the device is connected (and subscribed),
   * otherwise keeps it queued for the reconnect. Resolves after the commit. Throws KENG_ERR_VALIDATION at
   * once for bad arguments (incl. expiresAt not in the future); rejects with KENG_ERR_NOT_FOUND when the
   * device does not exist (nothing stored).
   */
  send(deviceId: string, method: string, params: Record<string, unknown>, opts: RpcSendOptions): Promise<RpcSendResult> {
    this.requireStore();
    const now = this.clock.now();
    if (typeof deviceId !== 'string' || deviceId.length === 0) throw Errors.VALIDATION('deviceId is required');
    const paramsJson = this.check(method, params, opts, now);
    const id = newId('r', now);
    // The row as stored, built here rather than read back.
    let row: RpcRequest = {
      id, deviceId, method, params: JSON.parse(paramsJson) as Record<string, unknown>, expiresAt: opts.expiresAt, state: 'queued',
      createdAt: now, sentAt: null, answeredAt: null, response: null, tbId: null,
    };
    let payload: Buffer | null = null;
    if (this.isReady(deviceId)) {
      const tbId = this.nextTbId(deviceId);
      const candidate = tbId !== undefined ? { ...row, tbId } : row;
      payload = this.payloadOf(candidate, this.topicId(candidate));
      if (payload !== null) row = { ...candidate, state: 'sent', sentAt: now };
    }
    const insert: NewRequestRow = {
      id, deviceId, method, paramsJson, expiresAt: opts.expiresAt, createdAt: now,
      ...(row.sentAt !== null ? { sentAt: now } : {}), ...(row.tbId !== null ? { tbId: row.tbId } : {}),
    };
    this.open.put(row);
    const committed = this.o.window.add(this.store!.insert, insert);
    if (payload !== null) {
      const p = payload;
      const topicId = this.topicId(row);
      this.o.window.afterCommit(() => { void this.chainPublish(deviceId, id, topicId, p); });
      this.m.sent.labels({ method, resend: 'false' }).inc();
      this.ee.emit('sent', { request: row, at: now, resend: false });
    }
    return this.o.window.durable(committed).then((o) => {
      if (!o.applied) { // its device was deleted meanwhile
        this.open.remove(id);
        throw Errors.NOT_FOUND(`Device "${deviceId}"`);
      }
      // Cluster mode: another node holds the device's session; it picks the command up (ownership.ts).
      if (o.owner !== undefined && o.owner !== this.own?.nodeId) {
        this.open.remove(id);
        this.o.ownership?.nudge?.(o.owner);
      }
      return { requestId: id, state: row.state === 'sent' ? 'sent' : 'queued' };
    });
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
   * send() to many devices at once with the same method, params and expiry; `persist(results)` is called
   * synchronously with the results before the commands are stored or published (see send-many.ts). Resolves
   * after the commit. No 'sent' events for these first sends (the caller has the results); re-sends after a
   * reconnect emit 'sent' as usual. Throws KENG_ERR_VALIDATION at once (nothing stored) like send().
   */
  sendMany(deviceIds: readonly string[], method: string, params: Record<string, unknown>, opts: RpcSendOptions,
    persist: (results: readonly RpcSendResult[]) => void = () => {}): Promise<RpcSendResult[]> {
    this.requireStore();
    return sendMany({
      enc: this.enc, signer: this.o.signer, metrics: this.m, urgent: this.o.urgent, now: this.clock.now(),
      insert: (rows) => this.insertMany(rows),
      afterCommit: (f) => this.o.window.afterCommit(f),
      check: (m, p, o, now) => this.check(m, p, o, now),
      isReady: (d) => this.isReady(d),
      nextTbId: (d) => this.nextTbId(d),
      chainPublish: (d, id, topicId, payload) => this.chainPublish(d, id, topicId, payload),
    }, deviceIds, method, params, opts, persist);
  }

  /** true while the command is held and has never been sent (cancel() would withdraw it). */
  isQueued(requestId: string): boolean {
    const r = this.open.get(requestId);
    return r !== undefined && r.state === 'queued' && r.sentAt === null;
  }

  /**
   * Withdraws a command that has not been sent yet; decided at once from memory, resolves after the commit.
   * false when it was already sent (or is unknown/finished).
   */
  cancel(requestId: string): Promise<boolean> {
    if (!this.isQueued(requestId)) return Promise.resolve(false);
    const r = this.open.get(requestId)!;
    const at = this.clock.now();
    this.finish({ ...r, state: 'cancelled', answeredAt: at });
    return this.o.window.durable(this.o.window.add(this.requireStore().cas, { id: r.id, deviceId: r.deviceId, from: 'queued', to: 'cancelled', at }))
      .then((o) => o.applied);
  }

  /**
   * Withdraws the queued (never sent) `method` commands whose params hold `value` at JSON path `path`
   * (`$.a.b`); decided at once from memory, resolves with how many after the commit.
   */
  cancelQueuedByParam(method: string, path: string, value: string): Promise<number> {
    const keys = path.replace(/^\$\.?/, '').split('.').filter((k) => k.length > 0);
    const hit = [...this.open.all()].filter((r) => r.method === method && r.state === 'queued' && r.sentAt === null && valueAt(r.params, keys) === value);
    // Cluster mode: those queued on other nodes are withdrawn in the database (their owners then never publish them).
    if (hit.length === 0 && !this.own) return Promise.resolve(0);
    const store = this.requireStore();
    const now = this.clock.now();
    let last: Promise<unknown> = Promise.resolve();
    for (const r of hit) {
      this.finish({ ...r, state: 'cancelled', answeredAt: now });
      last = this.o.window.add(store.cas, { id: r.id, deviceId: r.deviceId, from: 'queued', to: 'cancelled', at: now });
    }
    if (!this.own) return this.o.window.durable(last).then(() => hit.length);
    const elsewhere = this.o.window.add(store.cancelElsewhere, { method, path, value, at: now });
    return this.o.window.durable(Promise.all([last, elsewhere])).then(([, owners]) => {
      for (const n of new Set(owners)) this.hintOwner(n);
      return hit.length + owners.length;
    });
  }

  /** A command as it is now (memory for an open one, else the database). */
  async get(requestId: string): Promise<RpcRequest | undefined> {
    return this.open.get(requestId) ?? this.open.finished(requestId) ?? await this.store?.get(requestId);
  }

  /** Commands of a device, oldest first (all states unless given), as committed. */
  list(deviceId: string, states?: readonly RpcRequest['state'][]): Promise<RpcRequest[]> {
    return this.requireStore().listDevice(deviceId, states);
  }

  /** Runs the expiry sweep now (the timer runs it every sweepIntervalMs). */
  sweep(): void {
    const store = this.store;
    if (!store) return;
    const now = this.clock.now();
    const grace = this.o.answerGraceMs ?? 30_000;
    for (const r of [...this.open.all()]) {
      if (r.state === 'queued' ? r.expiresAt <= now : r.expiresAt <= now - grace) this.expire(r, now);
    }
    if (now - this.lastCleanup > 3_600_000) {
      this.lastCleanup = now;
      // Its own transaction; not through the window (nothing waits for it, and it may delete many rows).
      store.deleteFinishedBefore(now - (this.o.retentionMs ?? 30 * 86_400_000)).then((n) => {
        if (n > 0) this.o.logger.debug({ deleted: n }, 'old rpc requests deleted');
      }, (err: unknown) => { this.o.logger.warn({ err }, 'old rpc requests could not be deleted'); });
    }
  }

  // ------------------------------------------------------------ connect / reconnect

  /** Re-sends the device's queued and unanswered commands in creation order; expires the stale ones. */
  private flush(deviceId: string): void {
    if (!this.store || !this.isReady(deviceId)) return;
    const now = this.clock.now();
    let resent = 0;
    for (const r of this.open.device(deviceId)) {
      if (r.expiresAt <= now) {
        if (r.state === 'queued') this.expire(r, now);
        continue; // a sent one past expiresAt is left to the answer grace period
      }
      if (this.publish(r, true)) resent++;
    }
    if (resent > 0) this.o.logger.debug({ deviceId, resent }, 'held rpc requests sent after reconnect');
  }

  /** Cluster mode: commands taken from the database (pickup, adoption): published when their device is ready; due ones expire. */
  private taken(rows: readonly RpcRequest[]): void {
    const now = this.clock.now();
    for (const r0 of rows) {
      const r = this.open.get(r0.id);
      if (!r || r.expiresAt <= now || !this.isReady(r.deviceId)) continue;
      this.publish(r, r.state === 'sent');
    }
    this.sweep();
  }

  // ------------------------------------------------------------ publish

  /** Marks a held command sent and publishes it after that commit. false when the params hook failed (stays queued). */
  private publish(r0: RpcRequest, resend: boolean): boolean {
    let r = r0;
    let tbId: number | undefined;
    if (this.isTokenSession(r.deviceId) && r.tbId === null) {
      tbId = this.nextTbId(r.deviceId)!;
      r = { ...r, tbId };
    }
    const topicId = this.topicId(r);
    const payload = this.payloadOf(r, topicId);
    if (payload === null) return false;
    const now = this.clock.now();
    const wasSent = r.state === 'sent';
    const sent: RpcRequest = { ...r, state: 'sent', sentAt: now };
    this.open.put(sent);
    this.post({ id: r.id, deviceId: r.deviceId, from: r0.state, to: 'sent', at: now, ...(tbId !== undefined ? { tbId } : {}) });
    this.m.sent.labels({ method: r.method, resend: String(resend || wasSent) }).inc();
    const store = this.store!;
    this.o.window.afterCommit(() => {
      // Cluster mode: the move to `sent` missed (another node cancelled or finished the command meanwhile, e.g. a
      // broadcast stopped there): it must not go out; memory forgets it.
      if (this.own && store.sendMissed(r.id)) { this.dropMissed(r.id); return; }
      void this.chainPublish(r.deviceId, r.id, topicId, payload);
    });
    this.ee.emit('sent', { request: sent, at: now, resend: resend || wasSent });
    return true;
  }

  /** Cluster mode: a command whose move to `sent` missed in the database is no longer this node's to publish. */
  private dropMissed(id: string): void {
    const r = this.open.get(id);
    if (r?.state !== 'sent') return;
    this.open.remove(id);
    this.o.logger.debug({ requestId: id, deviceId: r.deviceId }, 'rpc command not published: finished by another node (cancelled) before it went out');
    this.ee.emit('withdrawn', { request: r, at: this.clock.now() });
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
   * then 1 again. The caller stores it (insert / cas with tbId) in the window of the command's row;
   * if that window fails the id is skipped, which keeps ids growing.
   */
  private nextTbId(deviceId: string): number | undefined {
    if (!this.isTokenSession(deviceId)) return undefined;
    const last = this.tbLast.get(deviceId) ?? 0;
    const n = last >= MAX_TB_ID ? 1 : last + 1;
    this.tbLast.set(deviceId, n);
    // After a wrap (2^31 commands) an old command may still hold n: the window's write frees it (store-sql.ts), memory too.
    const holder = this.open.byTbId(deviceId, n);
    if (holder && this.open.get(holder.id)) this.open.put({ ...holder, tbId: null });
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
      // Cluster mode: a fenced node (lease not renewed in time) publishes nothing; the command stays for its owner.
      if (p !== null && this.o.ownership?.canPublish?.() !== false) return this.o.broker.publish(topic, p, { qos: 1 });
      this.requeue(requestId);
      return undefined;
    }).catch((err: unknown) => {
      // Not delivered: keep it for the next connect (unless answered meanwhile).
      this.o.logger.warn({ err, requestId, deviceId }, 'rpc publish failed: request kept for the next connect');
      this.requeue(requestId);
    });
    this.chains.set(deviceId, next);
    void next.then(() => { if (this.chains.get(deviceId) === next) this.chains.delete(deviceId); });
    return next;
  }

  /** A sent command that did not go out: queued again (unless answered or expired meanwhile). */
  private requeue(requestId: string): void {
    const r = this.open.get(requestId);
    if (!r || r.state !== 'sent' || !this.store) return;
    this.open.put({ ...r, state: 'queued' });
    this.post({ id: r.id, deviceId: r.deviceId, from: 'sent', to: 'queued' });
  }

  private expire(r: RpcRequest, now: number): void {
    if (this.open.get(r.id)?.state !== r.state) return;
    this.finish({ ...r, state: 'expired' });
    this.post({ id: r.id, deviceId: r.deviceId, from: r.state, to: 'expired' });
    this.m.expired.labels({ method: r.method }).inc();
    this.o.logger.debug({ requestId: r.id, deviceId: r.deviceId, method: r.method, was: r.state }, 'rpc request expired');
    this.ee.emit('expired', { request: { ...r, state: 'expired' }, at: now });
  }

  // ------------------------------------------------------------ writes

  /** A move nobody awaits (the window's failure reaches settled() and onEvict); dropped once stopped. */
  private post(c: RpcCas): void {
    const store = this.store;
    if (!store) return;
    try { this.o.window.post(store.cas, c); } catch (err) { this.o.logger.warn({ err, requestId: c.id }, 'rpc write dropped: the state window is stopped'); }
  }

  /** No longer open: kept as finished (duplicate answers are told from memory) until the window of its write commits. */
  private finish(r: RpcRequest): void {
    this.open.finish(r);
    try { this.o.window.afterCommit(() => this.open.settled(r.id)); } catch { this.open.settled(r.id); }
  }

  /** sendMany's commands: memory at once, the window (one promise for all: they commit together). */
  private insertMany(rows: readonly NewRequestRow[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    const store = this.requireStore();
    const w = this.o.window;
    for (const r of rows) {
      this.open.put({
        id: r.id, deviceId: r.deviceId, method: r.method, params: JSON.parse(r.paramsJson) as Record<string, unknown>, expiresAt: r.expiresAt,
        state: r.sentAt !== undefined ? 'sent' : 'queued', createdAt: r.createdAt, sentAt: r.sentAt ?? null, answeredAt: null, response: null, tbId: r.tbId ?? null,
      });
    }
    if (this.own) { // cluster mode: keep only what this node owns (another node holds the others' sessions)
      const me = this.own.nodeId;
      const outs = rows.map((r) => w.add(store.insert, r));
      return w.durable(Promise.all(outs)).then((o) => {
        const others = new Set<string>();
        o.forEach((x, i) => { if (x.owner !== undefined && x.owner !== me) { this.open.remove(rows[i]!.id); others.add(x.owner); } });
        for (const n of others) this.o.ownership?.nudge?.(n);
      });
    }
    for (let i = 0; i < rows.length - 1; i++) w.post(store.insert, rows[i]!);
    return w.durable(w.add(store.insert, rows[rows.length - 1]!)).then(() => undefined);
  }

  /** A failed window: forget what it touched and reload those devices' open commands from the database. */
  private evicted(keys: readonly string[]): void {
    const devices = new Set<string>();
    for (const k of keys) {
      if (!k.startsWith('rpc:')) continue;
      const r = this.open.remove(k.slice(4));
      if (r) devices.add(r.deviceId);
    }
    const store = this.store;
    if (!store || devices.size === 0) return;
    const own = this.own;
    for (const d of devices) {
      (own ? store.listOwned(d, own.nodeId) : store.listDevice(d, ['queued', 'sent'])).then((rows) => { if (this.store === store) this.open.reload(d, rows); }, (err: unknown) => {
        this.o.logger.error({ err, deviceId: d }, 'rpc commands could not be reloaded after a failed window');
      });
    }
  }

  // ------------------------------------------------------------ responses

  private handleResponse(e: KengEvents['rpc.response']): void {
    if (!this.store) return;
    this.warmup.signal(e.deviceId);
    const p = this.responses.handle(e);
    if (p) {
      this.lookups.add(p);
      void p.finally(() => this.lookups.delete(p));
    }
  }

  private deviceDeleted(deviceId: string): void {
    this.open.dropDevice(deviceId);
    this.tbLast.delete(deviceId);
    const store = this.store;
    if (!store || this.o.db.dialect !== 'postgres') return;
    this.o.window.unit((trx) => store.deleteDevice(trx, deviceId), { savepoint: true }).then((n) => {
      if (n > 0) this.o.logger.info({ deviceId, commands: n }, 'deleted device: its commands deleted');
    }, (err: unknown) => { this.o.logger.warn({ err, deviceId }, 'deleted device: its commands could not be deleted'); });
  }

  private requireStore(): RpcStoreSql {
    if (!this.store) throw Errors.NOT_READY('rpc service is not started');
    return this.store;
  }
}

/** The string at `keys` inside `params` (undefined when absent or not a string). */
function valueAt(params: Record<string, unknown>, keys: readonly string[]): string | undefined {
  let v: unknown = params;
  for (const k of keys) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return typeof v === 'string' ? v : undefined;
}

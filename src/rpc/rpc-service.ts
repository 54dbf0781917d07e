/**
 * RpcService: server → device commands with store-and-forward; the public API of the folder.
 *
 * Spec device-protocol.md "Commands (RPC)":
 * - request on `v1/devices/D/rpc/request/R` (QoS 1), payload `{"method", "params", "expiresAt"}`; response on
 *   `.../rpc/response/R` (arrives here as bus 'rpc.response', validated by ingest);
 * - "A device that is offline when a command is sent gets it when it reconnects, unless expiresAt has passed":
 *   every command is a row in `rpc_requests` (SQLite, survives restarts) and is (re-)sent on reconnect.
 *
 * Keng behaviour (firmware-protocols/device-protocol.md §1.4): held commands are sent after the device has
 * subscribed to `rpc/request/+`; BrokerPort has no subscribe signal, so after a connect the device is
 * "warming up" (warmup.ts) until its first message or `readyDelayMs`; then its held commands are published
 * again in creation order (publisher.ts).
 *
 * Memory and the state window (docs/design/state-window.md): the open commands (`queued`, `sent`) are
 * held in memory (open-commands.ts, loaded at start) and every decision is made there at once; its
 * write goes into the state window (writes.ts, the kinds of store-sql.ts). send(), sendMany() and
 * cancel() return promises that settle after that window's COMMIT; a command is published only after
 * the window storing it (or its move to `sent`) has committed. The internal events (`sent`,
 * `response`, `expired`) are emitted synchronously at the decision, so a listener's writes (the
 * broadcast executor's target moves) belong to the same moment. settled() tells the ingest when a
 * device's answer is durable (its PUBACK waits for it).
 *
 * Cluster mode (`ownership`, on PostgreSQL): this node holds, publishes and expires only the commands it owns, those
 * of devices whose MQTT session it holds; the others are picked up by their owner (ownership.ts). A hint (nudge)
 * makes this node look at its commands at once.
 *
 * This file owns the public API and the wiring of its collaborators, each a concern of its own: send-one.ts and
 * send-many.ts (the sends), publisher.ts (on the wire, re-sends), expiry.ts, cancels.ts, writes.ts, responses.ts
 * (answers), tb-ids.ts (ThingsBoard integer ids), encoder.ts (payloads, signatures), warmup.ts, ownership.ts.
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
import { CommandCancels } from './cancels.js';
import { CommandEncoder } from './encoder.js';
import { CommandExpiry } from './expiry.js';
import { rpcMetrics, type RpcMetrics } from './metrics.js';
import { RpcResponses } from './responses.js';
import { sendMany } from './send-many.js';
import { checkCommand, sendOne } from './send-one.js';
import { DeviceWarmup } from './warmup.js';
import { OpenCommands } from './open-commands.js';
import { CommandOwnership, type RpcOwnership } from './ownership.js';
import { CommandPublisher } from './publisher.js';
import { RpcStoreSql } from './store-sql.js';
import { TbIds } from './tb-ids.js';
import type { CommandSigner, ParamsHook, RpcEvents, RpcRequest, RpcSendOptions, RpcSendResult } from './types.js';
import { RpcWrites } from './writes.js';

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
  /** ThingsBoard integer request ids per device (tb-ids.ts). */
  private readonly tbIds: TbIds;
  /** Publishing and re-sending (publisher.ts). */
  private readonly pub: CommandPublisher;
  /** The expiry sweep (expiry.ts). */
  private readonly expiry: CommandExpiry;
  /** Withdrawals of commands never sent (cancels.ts). */
  private readonly cancels: CommandCancels;
  /** Writes into the state window, reload after a failed one (writes.ts). */
  private readonly writes: RpcWrites;
  /** The open commands: what every decision reads. */
  private readonly open = new OpenCommands();
  private store: RpcStoreSql | null = null;
  /** Cluster mode: which commands are this node's (null: every command, one node). */
  private readonly own: CommandOwnership | null;
  private offs: Array<() => void> = [];
  private readonly emit = <K extends keyof RpcEvents>(event: K, e: RpcEvents[K]): void => { this.ee.emit(event, e); };

  constructor(opts: RpcServiceOptions) {
    this.o = opts;
    this.enc = new CommandEncoder({ hooks: new Map(Object.entries(opts.paramsHooks ?? {})), ...(opts.signer ? { signer: opts.signer } : {}), logger: opts.logger });
    this.clock = opts.clock ?? systemClock;
    this.m = rpcMetrics(opts.metrics);
    this.ee.setMaxListeners(50);
    const clustered = opts.ownership !== undefined && opts.db.dialect === 'postgres';
    const emit = this.emit;
    const store = (): RpcStoreSql | null => this.store;
    const requireStore = (): RpcStoreSql => this.requireStore();
    const finish = (r: RpcRequest): void => { this.writes.finish(r); };
    const answerGraceMs = opts.answerGraceMs ?? 30_000;
    this.tbIds = new TbIds(opts.broker, this.open);
    this.writes = new RpcWrites({
      window: opts.window, open: this.open, store, requireStore, logger: opts.logger,
      nodeId: clustered ? opts.ownership!.nodeId : undefined, nudge: (n) => { this.o.ownership?.nudge?.(n); },
    });
    this.expiry = new CommandExpiry({
      open: this.open, store, metrics: this.m, logger: opts.logger, clock: this.clock, emit, post: (c) => { this.writes.post(c); }, finish,
      sweepIntervalMs: opts.sweepIntervalMs ?? 1000, answerGraceMs, retentionMs: opts.retentionMs ?? 30 * 86_400_000,
    });
    this.pub = new CommandPublisher({
      broker: opts.broker, window: opts.window, open: this.open, store, enc: this.enc, tbIds: this.tbIds, metrics: this.m,
      logger: opts.logger, clock: this.clock, emit, isReady: (d) => this.isReady(d), post: (c) => { this.writes.post(c); },
      expire: (r, now) => { this.expiry.expire(r, now); }, sweep: () => { this.expiry.sweep(); }, clustered,
      ...(opts.ownership?.canPublish ? { canPublish: (): boolean => opts.ownership!.canPublish!() } : {}),
    });
    this.cancels = new CommandCancels({
      window: opts.window, open: this.open, requireStore, clock: this.clock, finish, clustered, hintOwner: (n) => { this.hintOwner(n); },
    });
    this.warmup = new DeviceWarmup(opts.readyDelayMs ?? 1000, (deviceId) => { this.pub.flush(deviceId); });
    this.responses = new RpcResponses({
      metrics: this.m, logger: opts.logger, clock: this.clock, emit,
      open: this.open, store, write: (c) => { this.writes.post(c); }, finish,
    });
    // Cluster mode: pickup, claims on connect and adoption of a dead node's commands (ownership.ts) hand what they
    // take to the publisher.
    this.own = clustered ? new CommandOwnership({
      own: opts.ownership!, db: opts.db, window: opts.window, open: this.open, clock: this.clock, logger: opts.logger,
      answerGraceMs, tbLast: this.tbIds.last,
      isConnected: (d) => this.o.broker.isConnected(d),
      claimed: (d) => { if (this.isReady(d)) this.pub.flush(d); },
      taken: (rows) => { this.pub.taken(rows); },
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
    this.tbIds.load(tbLast);
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
    this.o.window.onEvict((keys) => this.writes.evicted(keys));
    this.expiry.start();
    this.own?.start();
    // Devices already connected when we start (e.g. the service was started after the broker).
    for (const deviceId of this.open.devices()) {
      if (this.o.broker.isConnected(deviceId)) this.pub.flush(deviceId);
    }
  }

  async stop(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    await this.own?.stop();
    this.expiry.stop();
    this.warmup.clear();
    await this.responses.drained();
    await this.pub.idle();
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
    return this.cancels.forgetQueued(requestId);
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
    const reads = this.responses.idle();
    return reads ? reads.then(() => this.o.window.settled()) : this.o.window.settled();
  }

  /**
   * Stores a command and publishes it (after its commit) if the device is connected (and subscribed),
   * otherwise keeps it queued for the reconnect. Resolves after the commit. Throws KENG_ERR_VALIDATION at
   * once for bad arguments (incl. expiresAt not in the future); rejects with KENG_ERR_NOT_FOUND when the
   * device does not exist (nothing stored).
   */
  send(deviceId: string, method: string, params: Record<string, unknown>, opts: RpcSendOptions): Promise<RpcSendResult> {
    const store = this.requireStore();
    return sendOne({
      store, window: this.o.window, open: this.open, tbIds: this.tbIds, pub: this.pub, metrics: this.m,
      emit: this.emit, now: this.clock.now(),
      check: (m, p, o, now) => this.check(m, p, o, now), isReady: (d) => this.isReady(d),
      nodeId: this.own?.nodeId, nudge: (n) => { this.o.ownership?.nudge?.(n); },
    }, deviceId, method, params, opts);
  }

  /**
   * The checks of send() without sending: throws KENG_ERR_VALIDATION for arguments send() and
   * sendMany() would refuse. Returns the params as stored (JSON).
   */
  check(method: string, params: Record<string, unknown>, opts: RpcSendOptions, now = this.clock.now()): string {
    return checkCommand(method, params, opts, now);
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
      insert: (rows) => this.writes.insertMany(rows),
      afterCommit: (f) => this.o.window.afterCommit(f),
      check: (m, p, o, now) => this.check(m, p, o, now),
      isReady: (d) => this.isReady(d),
      nextTbId: (d) => this.tbIds.next(d),
      chainPublish: (d, id, topicId, payload) => this.pub.chainPublish(d, id, topicId, payload),
    }, deviceIds, method, params, opts, persist);
  }

  /** true while the command is held and has never been sent (cancel() would withdraw it). */
  isQueued(requestId: string): boolean {
    return this.cancels.isQueued(requestId);
  }

  /**
   * Withdraws a command that has not been sent yet; decided at once from memory, resolves after the commit.
   * false when it was already sent (or is unknown/finished).
   */
  cancel(requestId: string): Promise<boolean> {
    return this.cancels.cancel(requestId);
  }

  /**
   * Withdraws the queued (never sent) `method` commands whose params hold `value` at JSON path `path`
   * (`$.a.b`); decided at once from memory, resolves with how many after the commit.
   */
  cancelQueuedByParam(method: string, path: string, value: string): Promise<number> {
    return this.cancels.byParam(method, path, value);
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
    this.expiry.sweep();
  }

  // ------------------------------------------------------------ responses, deleted devices

  private handleResponse(e: KengEvents['rpc.response']): void {
    if (!this.store) return;
    this.warmup.signal(e.deviceId);
    this.responses.receive(e);
  }

  private deviceDeleted(deviceId: string): void {
    this.open.dropDevice(deviceId);
    this.tbIds.forget(deviceId);
    if (this.o.db.dialect === 'postgres') this.writes.deleteDevice(deviceId);
  }

  private requireStore(): RpcStoreSql {
    if (!this.store) throw Errors.NOT_READY('rpc service is not started');
    return this.store;
  }
}

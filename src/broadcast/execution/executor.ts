/**
 * BroadcastExecutor: broadcast execution and proof of play.
 *
 * start(): stores the broadcast, one target row per speaker with its log lines and one `broadcast.play`
 * command per speaker (RpcService.sendMany, `expiresAt = notAfter`, device protocol §12.1) in ONE state
 * window (one transaction, src/storage/state/window.ts), then the commands are published. RpcService keeps
 * the command for an offline speaker and sends it when it reconnects, unless `expiresAt` has passed: the
 * target goes `offline` → `sent` …, or `expired`. The media URL is made at each send by `mediaUrl(mediaId)`
 * (a fresh short-lived signed URL; the media library is not imported here).
 *
 * Target states follow RPC events (sent / expired), the `broadcast.play` response (accepted / rejected /
 * error → failed) and playback events (device protocol §12.5: started → playing, completed, failed,
 * preempted, stopped); see state-machine.ts. Every transition is written to the append-only
 * `broadcast_log` and emitted as bus 'broadcast.state'.
 *
 * Priorities (device protocol §12.4): the speaker enforces them (an emergency interrupts anything playing;
 * priority goes before normal; normal never interrupts); the executor records what the speaker reports,
 * e.g. a normal broadcast `preempted` by an emergency.
 *
 * Collaborators: target-events.ts (RPC events, answers and playback events → transitions, refusals),
 * stream-stops.ts (planned ends of streams), report-deadlines.ts (targets never reported finished →
 * `unconfirmed`), held.ts (memory), prefetch.ts, queries.ts (lists, log, CSV, totals); in cluster mode
 * stop-queued.ts (a stop withdraws plays queued on any node) and target-sweep.ts (the timers of a dead node's
 * targets). This file owns the commands and the transitions themselves.
 *
 * Memory and the state window (docs/design/state-window.md): the broadcasts with targets still open
 * (and the last few finished ones) are held in memory, loaded at start; every decision (a transition's
 * check, a stop) is made there at once and written as intents of the open state window through
 * repo-sql.ts, the window RpcService writes its commands and answers to. So a broadcast's commands and
 * its targets commit together, and an answer's RPC row and the target move it causes commit together
 * (RpcService emits its events synchronously at its decision). `broadcast.state` events go out after
 * that commit. A broadcast memory does not hold (an event for an old one) is read first (settled()
 * waits for those reads); a failed window evicts the broadcasts it touched (read again on next use): held.ts.
 * Lists, the log, the CSV, totals and getStored() read committed rows through the same `Db` (queries.ts).
 */
import type { Counter } from 'prom-client';
import { systemClock, type Clock } from '../../core/clock.js';
import { Errors } from '../../core/errors.js';
import type { EventBus } from '../../core/events.js';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import { counterOn, type Metrics } from '../../core/metrics.js';
import type { DeviceRegistryApi } from '../../devices/registry-types.js';
import { newId } from '../../rpc/ids.js';
import type { RpcService } from '../../rpc/rpc-service.js';
import type { Db } from '../../storage/sql/db.js';
import type { StateWindow, WindowKind } from '../../storage/state/window.js';
import { asStored, byDevice, HeldBroadcasts, view, type HeldBroadcast } from './held.js';
import { BroadcastQueries } from './queries.js';
import type { NewBroadcast, NewTarget, TargetRow } from './repo.js';
import { BroadcastRepoSql, type Applied } from './repo-sql.js';
import { ReportDeadlines } from './report-deadlines.js';
import { checkTransition, isTerminal } from './state-machine.js';
import { RECOVERY_WINDOW_MS, StreamStops } from './stream-stops.js';
import { TargetEvents } from './target-events.js';
import type {
  Broadcast, BroadcastInput, ListQuery, LogEntry, LogNames, LogQuery, LogSource, MediaContent, TargetState, TotalsQuery, TotalsResult,
} from './types.js';
import { speakerTargets, validateBroadcastInput } from './validate.js';
import { DEFAULT_TIME_ZONE } from '../../core/time.js';
import { PLAY_METHOD, STOP_METHOD } from '../../core/protocol.js';
import { pickMedia, prefetch, withdrawPrefetch, withSignedUrl } from './prefetch.js';
import { stopQueuedKind, type StopQueued, type StopQueuedOutcome } from './stop-queued.js';
import { TargetSweep } from './target-sweep.js';

export interface BroadcastExecutorOptions {
  /** The state store as a Db (the one the window writes to): memory at start, rare misses and the readers (queries.ts) read it. */
  db: Db<unknown>;
  /** The node's state window, shared with `rpc`: every write of this executor goes through it. */
  window: StateWindow;
  rpc: RpcService;
  bus: EventBus;
  registry: Pick<DeviceRegistryApi, 'getDevice' | 'getArea' | 'subtree' | 'listDevices' | 'attributes' | 'isOnlineAnywhere'>;
  /** A fresh short-lived signed URL of a media file, called at every send. */
  mediaUrl: (mediaId: string) => string;
  logger: Logger;
  metrics?: Metrics;
  clock?: Clock;
  /** For CSV times. Default DEFAULT_TIME_ZONE. */
  timeZone?: string;
  /** Names of schedules and media for the log (default: ids only). */
  names?: LogNames;
  /** expiresAt of broadcast.stop commands, from now. Default 10 minutes. */
  stopTtlMs?: number;
  /**
   * How long after the content must have ended (notAfter + its length) a speaker's report of the end
   * is still waited for before its target becomes `unconfirmed`. Default 60,000.
   */
  reportGraceMs?: number;
  /**
   * Cluster mode: period of the sweep that finishes the targets whose report deadline or stream stop passed while the
   * node that followed them is gone (target-sweep.ts). Default 5000.
   */
  targetSweepMs?: number;
}

export class BroadcastExecutor implements Component {
  readonly name = 'broadcast-executor';
  private readonly o: BroadcastExecutorOptions;
  private readonly clock: Clock;
  private sql: BroadcastRepoSql | null = null;
  private q: BroadcastQueries | null = null;
  private offs: Array<() => void> = [];
  private readonly held: HeldBroadcasts;
  private readonly events: TargetEvents;
  private readonly streamStops: StreamStops;
  private readonly reports: ReportDeadlines;
  private readonly ignored: Counter<'reason'>;
  /** Cluster mode (commands owned by nodes, on PostgreSQL): the stop of queued plays decided in the database. */
  private stopQueued: WindowKind<StopQueued, StopQueuedOutcome> | null = null;
  /** Cluster mode: the report deadlines and stream stops of targets whose node died (target-sweep.ts). */
  private sweep: TargetSweep | null = null;

  constructor(opts: BroadcastExecutorOptions) {
    this.o = opts;
    this.clock = opts.clock ?? systemClock;
    const move = this.move.bind(this);
    this.held = new HeldBroadcasts({ repo: () => this.sql, logger: opts.logger });
    const withHeld = this.held.withHeld.bind(this.held);
    const running = (): boolean => this.sql !== null;
    this.streamStops = new StreamStops({
      withHeld, running, rpc: opts.rpc, clock: this.clock, logger: opts.logger, stopTtlMs: opts.stopTtlMs ?? 600_000,
      stopSent: (b, d, requestId) => this.stopSent(b, d, requestId),
    });
    this.events = new TargetEvents({
      withHeld, logger: opts.logger, metrics: opts.metrics, move, onPlaying: (b, d) => this.streamStops.onPlaying(b, d),
      forget: (b) => { this.held.delete(b); },
      // Other nodes move targets too on a shared database: what memory refuses is checked against the rows once.
      ...(opts.db.dialect === 'postgres' ? {
        reread: (id: string, fn: (h: HeldBroadcast | undefined) => void) => this.held.reread(id, fn),
        delivered: (requestId: string, fn: (yes: boolean) => void) => {
          this.held.track(opts.rpc.get(requestId).then((r) => fn(r?.state === 'sent' || r?.state === 'answered'), (err: unknown) => {
            opts.logger.error({ err }, 'command could not be read');
          }));
        },
      } : {}),
    });
    this.reports = new ReportDeadlines({
      withHeld, running, clock: this.clock, logger: opts.logger, graceMs: opts.reportGraceMs ?? 60_000, move,
    });
    this.ignored = counterOn(opts.metrics?.registry, 'keng_broadcast_transitions_ignored_total',
      'Target state changes ignored (from a terminal state, or backwards), e.g. a late accepted after completed', ['reason'] as const);
  }

  /**
   * Component lifecycle, and the broadcast commands, on the same
   * names: start() / stop() with no argument start and stop the component;
   * start(input) / stop(broadcastId) are startBroadcast / stopBroadcast.
   */
  start(): Promise<void>;
  start(input: BroadcastInput): Promise<Broadcast>;
  start(input?: BroadcastInput): Promise<void> | Promise<Broadcast> {
    return input === undefined ? this.open() : this.startBroadcast(input);
  }

  stop(): Promise<void>;
  stop(broadcastId: string): Promise<Broadcast>;
  stop(broadcastId?: string): Promise<void> | Promise<Broadcast> {
    return broadcastId === undefined ? this.close() : this.stopBroadcast(broadcastId);
  }

  private async open(): Promise<void> {
    if (this.sql) return;
    const sqlRepo = new BroadcastRepoSql(this.o.db);
    // Memory: every broadcast of the recovery window with a target still open, with all its targets.
    const open = await sqlRepo.openTargets(this.clock.now() - RECOVERY_WINDOW_MS);
    this.held.clear();
    for (const id of new Set(open.map((t) => t.broadcast_id))) {
      const row = await sqlRepo.getBroadcastRow(id);
      if (row) this.held.put({ row, targets: new Map((await sqlRepo.targetRows(id)).map((t) => [t.device_id, t])) });
    }
    this.q = new BroadcastQueries(this.o.db, this.o.registry, this.o.timeZone ?? DEFAULT_TIME_ZONE, this.o.names);
    this.sql = sqlRepo;
    const nodeId = this.o.db.dialect === 'postgres' ? this.o.rpc.nodeId : undefined;
    this.stopQueued = nodeId !== undefined ? stopQueuedKind() : null;
    this.offs = this.events.listen(this.o.rpc, this.o.bus);
    this.o.window.onEvict((keys) => this.held.evicted(keys));
    this.streamStops.rearm(this.held.values());
    this.reports.rearm(this.held.values());
    if (nodeId !== undefined) {
      this.sweep = new TargetSweep({
        db: this.o.db, nodeId, clock: this.clock, logger: this.o.logger, everyMs: this.o.targetSweepMs ?? 5_000,
        graceMs: this.o.reportGraceMs ?? 60_000, held: this.held,
        reportsDue: (h) => this.reports.finishDue(h), streamStopDue: (b, d) => this.streamStops.stopNow(b, d),
      });
      this.sweep.start();
    }
  }

  private async close(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    await this.sweep?.stop();
    this.sweep = null;
    this.streamStops.clear();
    this.reports.clear();
    await this.held.idle();
    await this.o.window.settled().catch(() => undefined); // what it decided is committed (or failed) when it has stopped
    this.sql = null;
    this.q = null;
    this.held.clear();
  }

  /**
   * Resolves once the writes decided so far (also those waiting for a read of a broadcast memory did not hold)
   * are committed; rejects when their window failed. Device answers and events are acknowledged after it.
   */
  settled(): Promise<void> {
    if (!this.held.reading) return this.o.window.settled();
    return this.held.idle().then(() => this.o.window.settled());
  }

  // ------------------------------------------------------------ commands

  /**
   * Starts a broadcast. Targets must be registered speakers (404 / 400
   * otherwise, thrown at once); duplicates are ignored. Decided and written
   * to the open state window at once (with its commands); resolves after that
   * window's commit with the broadcast as stored (targets `sent`, `offline`,
   * or `pending` while a speaker is still connecting; all `expired` if the
   * command cannot be made). Rejects when the window failed (nothing stored,
   * nothing published) or the id exists (409).
   */
  startBroadcast(input: BroadcastInput): Promise<Broadcast> {
    return this.begin(input).stored;
  }

  /**
   * startBroadcast() that also gives the broadcast as decided (what `stored` resolves with), at once: for a caller
   * that records it in the same window (an audit record in a unit of the state window).
   */
  begin(input: BroadcastInput): { broadcast: Broadcast; stored: Promise<Broadcast> } {
    const sqlRepo = this.requireSql();
    const w = this.o.window;
    const now = this.clock.now();
    validateBroadcastInput(input, now);
    const id = input.id ?? newId('bc', now);
    if (this.held.has(id)) throw Errors.CONFLICT(`broadcast "${id}" already exists`);
    const targets = speakerTargets(this.o.registry, input.targets);
    const content = input.media ? { media: pickMedia(input.media) } : { stream: { url: input.stream!.url } };
    const row: NewBroadcast = {
      id, ...(input.scheduleId !== undefined ? { scheduleId: input.scheduleId } : {}), plannedAt: input.plannedAt ?? now,
      priority: input.priority, volume: input.volume, content,
      ...(input.durationSec !== undefined ? { durationSec: input.durationSec } : {}), notAfter: input.notAfter, createdAt: now,
    };
    // Stored params keep mediaId; the send-time hook (playParams) puts the signed URL in.
    const params: Record<string, unknown> = {
      broadcastId: id, priority: input.priority, volume: input.volume, ...content, notAfter: input.notAfter,
    };
    // An emergency's commands go out before the answers of the speakers that have theirs are handled (core/urgent.ts).
    const opts = { expiresAt: input.notAfter, urgent: input.priority === 'emergency' };
    const rpc = this.o.rpc;
    let created: NewTarget[] | undefined;
    let commands: Promise<unknown> = Promise.resolve();
    try {
      rpc.check(PLAY_METHOD, params, opts, now);
    } catch (err) {
      this.o.logger.error({ err, broadcastId: id }, 'broadcast.play could not be queued');
      const detail = `not sent: ${(err as Error).message}`;
      created = targets.map((t) => ({ ...t, state: 'expired', source: 'controller', detail }));
    }
    if (!created) {
      // The commands and the targets go into the same window, each target directly in the state its send gave
      // it (sent; offline while its speaker is away; pending while it is connecting, until RpcService sends the
      // command and reports 'sent'); the commands are published after that window's commit.
      commands = rpc.sendMany(targets.map((t) => t.deviceId), PLAY_METHOD, params, opts, (results) => {
        created = targets.map((t, i): NewTarget => {
          const r = results[i]!;
          const base = { ...t, playRequestId: r.requestId };
          if (r.state === 'sent') return { ...base, state: 'sent', source: 'rpc' };
          // Queued for a device that is not connected: offline until it comes back (or notAfter passes).
          // (cluster mode: connected to another node, whose copy of the command goes out from there: pending)
          if (!rpc.isConnected(t.deviceId) && !this.o.registry.isOnlineAnywhere(t.deviceId)) return { ...base, state: 'offline', source: 'controller', detail: 'speaker offline: command held until it reconnects' };
          return base;
        });
        this.held.hold(row, created);
      });
    } else {
      this.held.hold(row, created);
    }
    const stored = created!;
    const stored$ = sqlRepo.create(w, row, stored, sqlRepo.newBroadcast);
    w.afterCommit(() => {
      for (const t of stored) this.emit(id, t.deviceId, t.area, 'pending', now);
      for (const t of stored) if (t.state !== undefined && t.state !== 'pending') this.emit(id, t.deviceId, t.area, t.state, now);
    });
    this.o.logger.info({ broadcastId: id, scheduleId: input.scheduleId, priority: input.priority, targets: targets.length }, 'broadcast started');
    const broadcast = asStored(row, stored);
    return { broadcast, stored: w.durable(Promise.all([stored$, commands])).then(() => broadcast) };
  }

  /**
   * Stops a broadcast: `broadcast.stop {broadcastId}` to every speaker still
   * sent/accepted/playing (marked `stopped` when the speaker confirms, by a
   * `stopped` event or an `ok` answer); targets never sent (pending, offline)
   * are withdrawn and marked `stopped` at once. Decided at once when memory
   * holds the broadcast (else after one read); resolves after the commit with
   * the broadcast as stopped. Unknown id → 404.
   */
  stopBroadcast(broadcastId: string): Promise<Broadcast> {
    this.requireSql();
    const h = this.held.get(broadcastId);
    if (h) return this.stopHeld(h);
    return this.held.load(broadcastId).then((l) => {
      if (!l) throw Errors.NOT_FOUND(`Broadcast "${broadcastId}"`);
      return this.stopHeld(l);
    });
  }

  /**
   * Reads a broadcast into memory if it is not held (before a unit of the state window that stops it: stopBroadcast()
   * then decides at once, in the unit's window). Resolves false when it does not exist.
   */
  async preload(broadcastId: string): Promise<boolean> {
    if (this.held.has(broadcastId)) return true;
    return (await this.held.load(broadcastId)) !== undefined;
  }

  private stopHeld(h: HeldBroadcast): Promise<Broadcast> {
    const sqlRepo = this.requireSql();
    const w = this.o.window;
    const broadcastId = h.row.id;
    const now = this.clock.now();
    const waits: Array<Promise<unknown>> = [];
    if (h.row.stop_requested_at === null) {
      h.row = { ...h.row, stop_requested_at: now };
      waits.push(w.add(sqlRepo.stopRequested, { broadcastId, at: now }));
    }
    // Cluster mode: a play command may be queued on the node holding its speaker; the database decides (stop-queued.ts).
    const clustered = this.stopQueued !== null;
    for (const t of [...h.targets.values()].sort(byDevice)) {
      if (isTerminal(t.state)) continue;
      const unsent = t.state === 'pending' || t.state === 'offline';
      if (unsent && t.play_request_id !== null && clustered) {
        waits.push(this.withdraw(h, t, now));
        continue;
      }
      if (unsent && (t.play_request_id === null || this.o.rpc.isQueued(t.play_request_id))) {
        if (t.play_request_id !== null) waits.push(this.o.rpc.cancel(t.play_request_id));
        this.move(broadcastId, t.device_id, 'stopped', { source: 'controller', detail: 'stopped before it was sent' });
        continue;
      }
      waits.push(this.sendStop(broadcastId, t.device_id, now));
    }
    this.o.logger.info({ broadcastId }, 'broadcast stop requested');
    const v = view(h);
    if (!clustered) return w.durable(Promise.all(waits)).then(() => v);
    // The targets withdrawn in the database are known after its commit: the broadcast as memory holds it then.
    return w.durable(Promise.all(waits)).then(async () => {
      const cur = this.held.get(broadcastId) ?? await this.held.load(broadcastId).catch(() => undefined);
      return cur ? view(cur) : v;
    });
  }

  /** A `broadcast.stop` to the speaker (stored and published by the owner of its session); never rejects. */
  private sendStop(broadcastId: string, deviceId: string, now: number): Promise<unknown> {
    try {
      return this.o.rpc.sendMany([deviceId], STOP_METHOD, { broadcastId }, { expiresAt: now + (this.o.stopTtlMs ?? 600_000) },
        ([r]) => { this.stopSent(broadcastId, deviceId, r!.requestId); }).catch((err: unknown) => {
        this.o.logger.error({ err, broadcastId, deviceId }, 'broadcast.stop could not be stored');
      });
    } catch (err) {
      this.o.logger.error({ err, broadcastId, deviceId }, 'broadcast.stop could not be queued');
      return Promise.resolve();
    }
  }

  /**
   * Cluster mode: withdraws a target's play command wherever it is queued and stops the target, in one statement of the
   * window (stop-queued.ts); when the command went out first, a `broadcast.stop` follows it. Never rejects.
   */
  private withdraw(h: HeldBroadcast, t: TargetRow, now: number): Promise<unknown> {
    const broadcastId = h.row.id;
    const deviceId = t.device_id;
    const detail = 'stopped before it was sent';
    this.o.rpc.forgetQueued(t.play_request_id!); // held here: never published now (the statement below withdraws the row)
    let out: Promise<StopQueuedOutcome>;
    try {
      out = this.o.window.add(this.stopQueued!, {
        broadcastId, deviceId, requestId: t.play_request_id!, from: t.state, at: now, detail,
        ...(h.row.schedule_id !== null ? { scheduleId: h.row.schedule_id } : {}),
      });
    } catch (err) {
      this.o.logger.warn({ err, broadcastId, deviceId }, 'broadcast stop dropped: the state window is stopped');
      return Promise.resolve();
    }
    // Memory as decided (what the caller's audit record and reply show); a miss below evicts it.
    h.targets.set(deviceId, { ...t, state: 'stopped', updated_at: now, detail });
    return out.then((o) => {
      if (o.owner !== undefined) this.o.rpc.hintOwner(o.owner);
      if (o.moved) { this.emit(broadcastId, deviceId, t.area, 'stopped', now); return undefined; }
      this.held.delete(broadcastId); // memory was stale (the command went out, or the target moved on elsewhere): read again
      if (o.cancelled || o.neverSent) return undefined; // withdrawn (now or before): no play to stop
      return this.sendStop(broadcastId, deviceId, this.clock.now());
    }, (err: unknown) => { this.o.logger.error({ err, broadcastId, deviceId }, 'broadcast stop could not withdraw a queued play'); });
  }

  /** A broadcast.stop was made for a target: its id on the target (memory now, the row in the same window). */
  private stopSent(broadcastId: string, deviceId: string, requestId: string): void {
    const h = this.held.get(broadcastId);
    const t = h?.targets.get(deviceId);
    if (h && t) h.targets.set(deviceId, { ...t, stop_request_id: requestId });
    this.o.window.post(this.requireSql().requestIds, { broadcastId, deviceId, stopRequestId: requestId });
  }

  /**
   * Asks the speakers among `deviceIds` able to (`media.prefetch` in their capabilities, device protocol §12.7)
   * to cache `media` now, ahead of a broadcast.play of it that may follow (an alert awaiting approval): that
   * play then costs no download. Resolves with how many were asked, after their commands' commit (prefetch.ts).
   */
  prefetch(deviceIds: readonly string[], media: MediaContent, until: number): Promise<number> {
    return prefetch(this.o, deviceIds, media, until);
  }

  /** Withdraws the prefetches of `mediaId` still held for offline speakers (an alert turned down); never rejects. */
  withdrawPrefetch(mediaId: string): Promise<number> {
    return withdrawPrefetch(this.o, mediaId);
  }

  /**
   * Records a schedule occurrence missed while Keng was not running (called
   * by the scheduler's onMissed). `targets` are device ids; unknown devices
   * are recorded with an empty area. Idempotent per (schedule, time, device).
   * Resolves with the rows added, after the commit.
   */
  recordMissed(scheduleId: string, plannedAt: number, targets: string[]): Promise<number> {
    const sqlRepo = this.requireSql();
    const rows = [...new Set(targets)].map((deviceId) => ({ deviceId, area: this.o.registry.getDevice(deviceId)?.area ?? '' }));
    const w = this.o.window;
    return w.durable(w.add(sqlRepo.missed, { scheduleId, plannedAt, at: this.clock.now(), targets: rows })).then((n) => {
      if (n > 0) this.o.logger.warn({ scheduleId, plannedAt, speakers: n }, 'schedule occurrence recorded as missed');
      return n;
    });
  }

  // ------------------------------------------------------------ queries (committed rows, through the Db)

  /** The broadcast as committed. */
  async getStored(id: string): Promise<Broadcast | undefined> { return this.requireSql().get(id); }
  /** The broadcast as decided (memory, possibly not committed yet); undefined when memory does not hold it. */
  current(id: string): Broadcast | undefined {
    const h = this.held.get(id);
    return h ? view(h) : undefined;
  }
  list(q: ListQuery = {}): Promise<Broadcast[]> { return this.queries().list(q); }
  log(q: LogQuery = {}): Promise<LogEntry[]> { return this.queries().log(q); }
  csv(q: LogQuery = {}): Promise<string> { return this.queries().csv(q); }
  totals(q: TotalsQuery = {}): Promise<TotalsResult> { return this.queries().totals(q, this.clock.now()); }

  // ------------------------------------------------------------ send-time params

  /**
   * Send-time params of broadcast.play and media.prefetch, the RPC service's params hook for them
   * (see playHooks()): a fresh signed URL for the media (device protocol §12.1, §12.7).
   */
  playParams(params: Record<string, unknown>): Record<string, unknown> {
    return withSignedUrl(params, this.o.mediaUrl);
  }

  // ------------------------------------------------------------ transitions

  /**
   * Validated transition: decided and applied in memory at once, its target CAS and log line into the open
   * state window; the bus event after that commit. false when ignored.
   */
  private move(broadcastId: string, deviceId: string, to: TargetState,
    o: { source: LogSource; detail?: string; deviceAt?: number }): boolean {
    const sqlRepo = this.sql;
    const h = this.held.get(broadcastId);
    const t = h?.targets.get(deviceId);
    if (!sqlRepo || !h || !t) return false;
    const check = checkTransition(t.state, to);
    if (check === 'same') return false;
    if (check !== 'ok') {
      this.ignored.labels({ reason: check }).inc();
      this.o.logger.info({ broadcastId, deviceId, from: t.state, to, source: o.source, reason: check }, 'broadcast target transition ignored');
      return false;
    }
    const now = this.clock.now();
    const scheduleId = h.row.schedule_id ?? undefined;
    let applied: Promise<Applied>;
    try {
      applied = sqlRepo.transition(this.o.window, { broadcastId, deviceId, area: t.area, state: t.state }, to, now, {
        source: o.source, ...(o.detail !== undefined ? { detail: o.detail } : {}), ...(o.deviceAt !== undefined ? { deviceAt: o.deviceAt } : {}),
        ...(scheduleId !== undefined ? { scheduleId } : {}),
      });
    } catch (err) { // the window is stopped (shutting down): nothing changes
      this.o.logger.warn({ err, broadcastId, deviceId, to }, 'broadcast target transition dropped: the state window is stopped');
      return false;
    }
    h.targets.set(deviceId, { ...t, state: to, updated_at: now, detail: o.detail ?? null });
    applied.then((a) => {
      if (a.applied) this.emit(broadcastId, deviceId, t.area, to, now);
      else this.held.delete(broadcastId); // moved by someone else: memory is stale
    }, () => { /* the window failed: its callers are told, this broadcast is evicted */ });
    if ((to === 'accepted' || to === 'playing') && !this.reports.has(broadcastId)) this.reports.arm(h.row);
    return true;
  }

  private emit(broadcastId: string, deviceId: string, area: string, state: TargetState, at: number): void {
    this.o.bus.emit('broadcast.state', { broadcastId, deviceId, area, state, at });
  }

  private requireSql(): BroadcastRepoSql {
    if (!this.sql) throw Errors.NOT_READY('broadcast executor is not started');
    return this.sql;
  }

  private queries(): BroadcastQueries {
    if (!this.q) throw Errors.NOT_READY('broadcast executor is not started');
    return this.q;
  }
}

/**
 * BroadcastExecutor: broadcast execution and proof of play; the component and the public API of the folder.
 *
 * start(input): the broadcast, its targets and one `broadcast.play` per speaker in ONE state window, the commands
 * published after its commit (start-broadcast.ts). stop(id): `broadcast.stop` to the speakers playing, the plays
 * not sent yet withdrawn (stop-broadcast.ts). Target states follow RPC events (sent / expired), the
 * `broadcast.play` response (accepted / rejected / error → failed) and playback events (device protocol §12.5:
 * started → playing, completed, failed, preempted, stopped); see state-machine.ts. Every transition is written
 * to the append-only `broadcast_log` and emitted as bus 'broadcast.state' (transitions.ts).
 *
 * Priorities (device protocol §12.4): the speaker enforces them (an emergency interrupts anything playing;
 * priority goes before normal; normal never interrupts); the executor records what the speaker reports,
 * e.g. a normal broadcast `preempted` by an emergency.
 *
 * Collaborators: target-events.ts (RPC events, answers and playback events → transitions, refusals),
 * stream-stops.ts (planned ends of streams), report-deadlines.ts (targets never reported finished →
 * `unconfirmed`), held.ts (memory), prefetch.ts (media.prefetch, the send-time media URL), queries.ts (lists, log,
 * CSV, totals); in cluster mode stop-queued.ts (a stop withdraws plays queued on any node) and target-sweep.ts (the
 * timers of a dead node's targets). This file owns the lifecycle, loading memory at start, and the wiring.
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
import { systemClock, type Clock } from '../../core/clock.js';
import { Errors } from '../../core/errors.js';
import type { EventBus } from '../../core/events.js';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import type { Metrics } from '../../core/metrics.js';
import type { DeviceRegistryApi } from '../../devices/registry-types.js';
import type { RpcService } from '../../rpc/rpc-service.js';
import type { Db } from '../../storage/sql/db.js';
import type { StateWindow } from '../../storage/state/window.js';
import { HeldBroadcasts, view, type HeldBroadcast } from './held.js';
import { BroadcastQueries } from './queries.js';
import { BroadcastRepoSql } from './repo-sql.js';
import { ReportDeadlines } from './report-deadlines.js';
import { RECOVERY_WINDOW_MS, StreamStops } from './stream-stops.js';
import { TargetEvents } from './target-events.js';
import type {
  Broadcast, BroadcastInput, ListQuery, LogEntry, LogNames, LogQuery, MediaContent, TotalsQuery, TotalsResult,
} from './types.js';
import { DEFAULT_TIME_ZONE } from '../../core/time.js';
import { prefetch, withdrawPrefetch, withSignedUrl } from './prefetch.js';
import { beginBroadcast, type StartDeps } from './start-broadcast.js';
import { BroadcastStops } from './stop-broadcast.js';
import { TargetSweep } from './target-sweep.js';
import { TargetTransitions } from './transitions.js';

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
  private readonly transitions: TargetTransitions;
  private readonly stops: BroadcastStops;
  /** What starting a broadcast uses (start-broadcast.ts). */
  private readonly starts: StartDeps;
  private readonly events: TargetEvents;
  private readonly streamStops: StreamStops;
  private readonly reports: ReportDeadlines;
  /** Cluster mode: the report deadlines and stream stops of targets whose node died (target-sweep.ts). */
  private sweep: TargetSweep | null = null;

  constructor(opts: BroadcastExecutorOptions) {
    this.o = opts;
    this.clock = opts.clock ?? systemClock;
    this.held = new HeldBroadcasts({ repo: () => this.sql, logger: opts.logger, settled: () => opts.window.settled() });
    const move: TargetTransitions['move'] = (b, d, to, o) => this.transitions.move(b, d, to, o);
    const emit: TargetTransitions['emit'] = (b, d, area, state, at) => { this.transitions.emit(b, d, area, state, at); };
    this.stops = new BroadcastStops({
      held: this.held, window: opts.window, rpc: opts.rpc, repo: () => this.requireSql(), clock: this.clock, logger: opts.logger,
      stopTtlMs: opts.stopTtlMs ?? 600_000, move, emit,
    });
    const withHeld = this.held.withHeld.bind(this.held);
    const running = (): boolean => this.sql !== null;
    this.streamStops = new StreamStops({
      withHeld, running, rpc: opts.rpc, clock: this.clock, logger: opts.logger, stopTtlMs: opts.stopTtlMs ?? 600_000,
      stopSent: (b, d, requestId) => { this.stops.stopSent(b, d, requestId); },
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
    this.transitions = new TargetTransitions({
      repo: () => this.sql, held: this.held, window: opts.window, bus: opts.bus, clock: this.clock, logger: opts.logger, metrics: opts.metrics,
      onActive: (h) => { if (!this.reports.has(h.row.id)) this.reports.arm(h.row); },
    });
    this.starts = {
      repo: () => this.requireSql(), held: this.held, window: opts.window, rpc: opts.rpc, registry: opts.registry, clock: this.clock, logger: opts.logger, emit,
    };
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
    this.stops.open(nodeId !== undefined);
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
    return beginBroadcast(this.starts, input);
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
    return this.stops.stop(broadcastId);
  }

  /**
   * Reads a broadcast into memory if it is not held (before a unit of the state window that stops it: stopBroadcast()
   * then decides at once, in the unit's window). Resolves false when it does not exist.
   */
  async preload(broadcastId: string): Promise<boolean> {
    return this.stops.preload(broadcastId);
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

  private requireSql(): BroadcastRepoSql {
    if (!this.sql) throw Errors.NOT_READY('broadcast executor is not started');
    return this.sql;
  }

  private queries(): BroadcastQueries {
    if (!this.q) throw Errors.NOT_READY('broadcast executor is not started');
    return this.q;
  }
}

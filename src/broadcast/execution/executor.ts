/**
 * BroadcastExecutor: broadcast execution and proof of play.
 *
 * start(): stores the broadcast, one target row per speaker with its log
 * lines and one `broadcast.play` command per speaker (RpcService.sendMany,
 * `expiresAt = notAfter`, device protocol §12.1) in ONE state window (one
 * transaction, src/storage/state/window.ts), then the commands are published. RpcService keeps
 * the command for an offline speaker and sends it when it reconnects, unless
 * `expiresAt` has passed: the target goes `offline` → `sent` …, or `expired`.
 * The media URL is made at each send by `mediaUrl(mediaId)` (a fresh
 * short-lived signed URL; the media library is not imported here).
 *
 * Target states follow RPC events (sent / expired), the `broadcast.play`
 * response (accepted / rejected / error → failed) and playback events (device
 * protocol §12.5: started → playing, completed, failed, preempted,
 * stopped); see state-machine.ts. Every transition is written to the
 * append-only `broadcast_log` and emitted as bus 'broadcast.state'.
 *
 * Priorities (device protocol §12.4): the speaker enforces them (an emergency interrupts
 * anything playing; priority goes before normal; normal never interrupts);
 * the executor records what the speaker reports, e.g. a normal broadcast
 * `preempted` by an emergency.
 *
 * Collaborators: target-events.ts (RPC events, answers and playback events →
 * transitions, refusals), stream-stops.ts (planned ends of streams),
 * report-deadlines.ts (targets never reported finished → `unconfirmed`),
 * queries.ts (lists, log, CSV, totals). This file owns the commands and the
 * transitions themselves.
 *
 * Memory and the state window (docs/design/state-window.md): the broadcasts with targets still open
 * (and the last few finished ones) are held in memory, loaded at start; every decision (a transition's
 * check, a stop) is made there at once and written as intents of the open state window through
 * repo-sql.ts, the window RpcService writes its commands and answers to. So a broadcast's commands and
 * its targets commit together, and an answer's RPC row and the target move it causes commit together
 * (RpcService emits its events synchronously at its decision). `broadcast.state` events go out after
 * that commit. A broadcast memory does not hold (an event for an old one) is read first (settled()
 * waits for those reads); a failed window evicts the broadcasts it touched (read again on next use).
 * Lists, the log, the CSV and get() read committed rows (queries.ts, BroadcastReader).
 */
import type { Counter } from 'prom-client';
import { systemClock, type Clock } from '../../core/clock.js';
import { Errors, withDetails } from '../../core/errors.js';
import type { EventBus } from '../../core/events.js';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import { counterOn, type Metrics } from '../../core/metrics.js';
import type { DeviceRegistryApi } from '../../devices/registry-types.js';
import { newId } from '../../rpc/ids.js';
import type { RpcService } from '../../rpc/rpc-service.js';
import type { SqliteDatabase } from '../../storage/state/db.js';
import type { Db } from '../../storage/sql/db.js';
import type { StateWindow, WindowKind } from '../../storage/state/window.js';
import { BroadcastQueries } from './queries.js';
import { BroadcastRepo, toBroadcast, type BroadcastRow, type NewBroadcast, type NewTarget, type TargetRow } from './repo.js';
import { BroadcastRepoSql, type Applied } from './repo-sql.js';
import { ReportDeadlines } from './report-deadlines.js';
import { checkTransition, isTerminal } from './state-machine.js';
import { RECOVERY_WINDOW_MS, StreamStops } from './stream-stops.js';
import { TargetEvents } from './target-events.js';
import type {
  Broadcast, BroadcastInput, ListQuery, LogEntry, LogNames, LogQuery, LogSource, MediaContent, TargetState, TotalsQuery, TotalsResult,
} from './types.js';
import { validateBroadcastInput } from './validate.js';
import { DEFAULT_TIME_ZONE } from '../../core/time.js';
import { PLAY_METHOD, PREFETCH_METHOD, STOP_METHOD } from '../../core/protocol.js';

export interface BroadcastExecutorOptions {
  /** The embedded state store: lists, the log and get() read committed rows through it (queries.ts). */
  stateDb: { readonly db: SqliteDatabase };
  /** The state store as a Db (the one the window writes to): memory at start and rare misses read it. */
  db: Db<unknown>;
  /** The node's state window, shared with `rpc`: every write of this executor goes through it. */
  window: StateWindow;
  rpc: RpcService;
  bus: EventBus;
  registry: Pick<DeviceRegistryApi, 'getDevice' | 'getArea' | 'subtree' | 'listDevices' | 'attributes'>;
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
}

/** A broadcast as memory holds it: its row and every target (rows replaced, never mutated). */
export interface HeldBroadcast { row: BroadcastRow; targets: Map<string, TargetRow> }

/** Finished broadcasts kept in memory for late answers and events (beyond these, read again when needed). */
const KEEP_FINISHED = 64;

export class BroadcastExecutor implements Component {
  readonly name = 'broadcast-executor';
  private readonly o: BroadcastExecutorOptions;
  private readonly clock: Clock;
  private repo: BroadcastRepo | null = null;
  private sql: BroadcastRepoSql | null = null;
  /** The broadcasts insert that fails its window when the id exists (a broadcast is never merged into another). */
  private newBroadcast: WindowKind<NewBroadcast, Applied> | null = null;
  private q: BroadcastQueries | null = null;
  private offs: Array<() => void> = [];
  private readonly held = new Map<string, HeldBroadcast>();
  /** Reads of broadcasts memory did not hold (settled() waits for them). */
  private readonly lookups = new Set<Promise<unknown>>();
  private readonly events: TargetEvents;
  private readonly streamStops: StreamStops;
  private readonly reports: ReportDeadlines;
  private readonly ignored: Counter<'reason'>;

  constructor(opts: BroadcastExecutorOptions) {
    this.o = opts;
    this.clock = opts.clock ?? systemClock;
    const move = this.move.bind(this);
    const withHeld = this.withHeld.bind(this);
    const running = (): boolean => this.sql !== null;
    this.streamStops = new StreamStops({
      withHeld, running, rpc: opts.rpc, clock: this.clock, logger: opts.logger, stopTtlMs: opts.stopTtlMs ?? 600_000,
      stopSent: (b, d, requestId) => this.stopSent(b, d, requestId),
    });
    this.events = new TargetEvents({
      withHeld, logger: opts.logger, metrics: opts.metrics, move, onPlaying: (b, d) => this.streamStops.onPlaying(b, d),
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
      if (row) this.held.set(id, { row, targets: new Map((await sqlRepo.targetRows(id)).map((t) => [t.device_id, t])) });
    }
    this.repo = new BroadcastRepo(this.o.stateDb.db);
    this.q = new BroadcastQueries(this.repo, this.o.registry, this.o.timeZone ?? DEFAULT_TIME_ZONE, this.o.names);
    this.sql = sqlRepo;
    const strict = sqlRepo.broadcast;
    this.newBroadcast = {
      ...strict, name: 'broadcasts insert (new)',
      flush: async (trx, items, ctx) => {
        const out = await strict.flush(trx, items, ctx);
        const i = out.findIndex((r) => !r.applied);
        // Fails the window: its targets, log lines and commands must not land under another broadcast's id.
        if (i >= 0) throw Errors.CONFLICT(`broadcast "${items[i]!.id}" already exists`);
        return out;
      },
    };
    this.offs = this.events.listen(this.o.rpc, this.o.bus);
    this.o.window.onEvict((keys) => this.evicted(keys));
    this.streamStops.rearm(this.held.values());
    this.reports.rearm(this.held.values());
  }

  private async close(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    this.streamStops.clear();
    this.reports.clear();
    await Promise.allSettled([...this.lookups]);
    await this.o.window.settled().catch(() => undefined); // what it decided is committed (or failed) when it has stopped
    this.sql = null;
    this.repo = null;
    this.q = null;
    this.held.clear();
  }

  /**
   * Resolves once the writes decided so far (also those waiting for a read of a broadcast memory did not hold)
   * are committed; rejects when their window failed. Device answers and events are acknowledged after it.
   */
  settled(): Promise<void> {
    if (this.lookups.size === 0) return this.o.window.settled();
    return Promise.allSettled([...this.lookups]).then(() => this.o.window.settled());
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
   * that records it in the same window (an audit record in a synchronous unit).
   */
  begin(input: BroadcastInput): { broadcast: Broadcast; stored: Promise<Broadcast> } {
    const sqlRepo = this.requireSql();
    const w = this.o.window;
    const now = this.clock.now();
    validateBroadcastInput(input, now);
    const id = input.id ?? newId('bc', now);
    if (this.held.has(id)) throw Errors.CONFLICT(`broadcast "${id}" already exists`);
    const targets: Array<{ deviceId: string; area: string }> = [];
    const seen = new Set<string>();
    for (const deviceId of input.targets) {
      if (seen.has(deviceId)) continue;
      seen.add(deviceId);
      const d = this.o.registry.getDevice(deviceId);
      if (!d) throw withDetails(Errors.NOT_FOUND(`Device "${String(deviceId)}"`), { field: 'targets' });
      if (d.kind !== 'speaker') throw withDetails(Errors.VALIDATION(`device "${deviceId}" is not a speaker`), { field: 'targets' });
      targets.push({ deviceId, area: d.area });
    }
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
          if (!rpc.isConnected(t.deviceId)) return { ...base, state: 'offline', source: 'controller', detail: 'speaker offline: command held until it reconnects' };
          return base;
        });
        this.hold(row, created);
      });
    } else {
      this.hold(row, created);
    }
    const stored = created!;
    const stored$ = sqlRepo.create(w, row, stored, this.newBroadcast!);
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
    return this.load(broadcastId).then((l) => {
      if (!l) throw Errors.NOT_FOUND(`Broadcast "${broadcastId}"`);
      return this.stopHeld(l);
    });
  }

  /**
   * Reads a broadcast into memory if it is not held (before a synchronous unit that stops it: stopBroadcast()
   * then decides at once, in the unit's window). Resolves false when it does not exist.
   */
  async preload(broadcastId: string): Promise<boolean> {
    if (this.held.has(broadcastId)) return true;
    return (await this.load(broadcastId)) !== undefined;
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
    for (const t of [...h.targets.values()].sort(byDevice)) {
      if (isTerminal(t.state)) continue;
      if ((t.state === 'pending' || t.state === 'offline') && (t.play_request_id === null || this.o.rpc.isQueued(t.play_request_id))) {
        if (t.play_request_id !== null) waits.push(this.o.rpc.cancel(t.play_request_id));
        this.move(broadcastId, t.device_id, 'stopped', { source: 'controller', detail: 'stopped before it was sent' });
        continue;
      }
      try {
        waits.push(this.o.rpc.sendMany([t.device_id], STOP_METHOD, { broadcastId }, { expiresAt: now + (this.o.stopTtlMs ?? 600_000) },
          ([r]) => { this.stopSent(broadcastId, t.device_id, r!.requestId); }).catch((err: unknown) => {
          this.o.logger.error({ err, broadcastId, deviceId: t.device_id }, 'broadcast.stop could not be stored');
        }));
      } catch (err) {
        this.o.logger.error({ err, broadcastId, deviceId: t.device_id }, 'broadcast.stop could not be queued');
      }
    }
    this.o.logger.info({ broadcastId }, 'broadcast stop requested');
    const view = this.view(h);
    return w.durable(Promise.all(waits)).then(() => view);
  }

  /** A broadcast.stop was made for a target: its id on the target (memory now, the row in the same window). */
  private stopSent(broadcastId: string, deviceId: string, requestId: string): void {
    const h = this.held.get(broadcastId);
    const t = h?.targets.get(deviceId);
    if (h && t) h.targets.set(deviceId, { ...t, stop_request_id: requestId });
    this.o.window.post(this.requireSql().requestIds, { broadcastId, deviceId, stopRequestId: requestId });
  }

  /**
   * Asks the speakers among `deviceIds` that list `media.prefetch` in their capabilities (device
   * protocol §12.7) to download and cache `media` now, ahead of a broadcast.play of it that may
   * follow (an alert awaiting approval): that play then costs them no download, and Keng serves
   * no download at the moment every speaker should start. Held for an offline speaker until
   * `until` like any command. Speakers without the capability get nothing (their firmware would
   * answer `rejected` "unknown method"). Not part of any broadcast: no target rows, no log lines.
   * Resolves with how many speakers were asked, after the commit of their commands.
   */
  prefetch(deviceIds: readonly string[], media: MediaContent, until: number): Promise<number> {
    const reg = this.o.registry;
    const able = deviceIds.filter((id) => {
      if (reg.getDevice(id)?.kind !== 'speaker') return false;
      const caps = reg.attributes(id).capabilities;
      return Array.isArray(caps) && caps.includes(PREFETCH_METHOD);
    });
    if (able.length === 0) return Promise.resolve(0);
    // Stored with mediaId, like broadcast.play: the send-time hook (playParams) puts a fresh signed URL in.
    const p = this.o.rpc.sendMany(able, PREFETCH_METHOD, { media: pickMedia(media) }, { expiresAt: until });
    this.o.logger.info({ mediaId: media.mediaId, speakers: able.length, of: deviceIds.length }, 'media prefetch sent');
    return p.then(() => able.length);
  }

  /**
   * Withdraws the prefetches of `mediaId` still held for offline speakers (an alert turned down
   * before approval: its announcement must not be fetched when they reconnect). Decided at once;
   * resolves with how many once committed (0, logged, when the commit failed: never rejects).
   */
  withdrawPrefetch(mediaId: string): Promise<number> {
    return this.o.rpc.cancelQueuedByParam(PREFETCH_METHOD, '$.media.mediaId', mediaId).then((n) => {
      if (n > 0) this.o.logger.info({ mediaId, withdrawn: n }, 'media prefetch withdrawn');
      return n;
    }, (err: unknown) => {
      this.o.logger.error({ err, mediaId }, 'media prefetch withdrawal could not be stored');
      return 0;
    });
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

  // ------------------------------------------------------------ queries

  /** The broadcast as committed. */
  get(id: string): Broadcast | undefined { return this.requireRepo().get(id); }
  /** The broadcast as committed, read through the database port (works on both dialects). */
  async getStored(id: string): Promise<Broadcast | undefined> { return this.requireRepo().get(id); }
  /** The broadcast as decided (memory, possibly not committed yet); undefined when memory does not hold it. */
  current(id: string): Broadcast | undefined {
    const h = this.held.get(id);
    return h ? this.view(h) : undefined;
  }
  list(q: ListQuery = {}): Broadcast[] { return this.queries().list(q); }
  log(q: LogQuery = {}): LogEntry[] { return this.queries().log(q); }
  csv(q: LogQuery = {}): string { return this.queries().csv(q); }
  totals(q: TotalsQuery = {}): TotalsResult { return this.queries().totals(q, this.clock.now()); }

  // ------------------------------------------------------------ send-time params

  /**
   * Send-time params of broadcast.play and media.prefetch, the RPC service's params hook for them
   * (see playHooks()): a fresh signed URL for the media (device protocol §12.1, §12.7).
   */
  playParams(params: Record<string, unknown>): Record<string, unknown> {
    const media = params.media as MediaContent | undefined;
    if (!media) return params;
    const { mediaId, ...rest } = media;
    return { ...params, media: { url: this.o.mediaUrl(mediaId), ...rest } };
  }

  // ------------------------------------------------------------ memory

  /** A new broadcast in memory (its rows go into the window with it). */
  private hold(b: NewBroadcast, targets: readonly NewTarget[]): void {
    const row = rowOf(b);
    this.held.set(b.id, { row, targets: new Map(targetRowsOf(b, targets).map((t) => [t.device_id, t])) });
    this.trim();
  }

  /**
   * Runs `fn` with the broadcast from memory: at once when held, else after one read (tracked: settled() waits
   * for it). `fn` gets undefined when the broadcast does not exist.
   */
  private withHeld(broadcastId: string, fn: (h: HeldBroadcast | undefined) => void): void {
    const h = this.held.get(broadcastId);
    if (h || !this.sql) { fn(h); return; }
    const p = this.load(broadcastId).then(fn).catch((err: unknown) => {
      this.o.logger.error({ err, broadcastId: broadcastId.slice(0, 128) }, 'broadcast could not be read');
    });
    this.lookups.add(p);
    void p.finally(() => this.lookups.delete(p));
  }

  /** Reads a broadcast and its targets into memory (memory wins if it got it meanwhile). */
  private async load(broadcastId: string): Promise<HeldBroadcast | undefined> {
    const sqlRepo = this.requireSql();
    const row = await sqlRepo.getBroadcastRow(broadcastId);
    const targets = row ? await sqlRepo.targetRows(broadcastId) : [];
    const now = this.held.get(broadcastId);
    if (now || !row || this.sql !== sqlRepo) return now;
    const h: HeldBroadcast = { row, targets: new Map(targets.map((t) => [t.device_id, t])) };
    this.held.set(broadcastId, h);
    this.trim();
    return h;
  }

  /** Keeps at most KEEP_FINISHED finished broadcasts (oldest in memory go first); open ones always stay. */
  private trim(): void {
    let finished = 0;
    for (const h of this.held.values()) if (isFinished(h)) finished++;
    for (const [id, h] of this.held) {
      if (finished <= KEEP_FINISHED) break;
      if (!isFinished(h)) continue;
      this.held.delete(id);
      finished--;
    }
  }

  /** A failed window: forget the broadcasts it touched (read again from the database when next needed). */
  private evicted(keys: readonly string[]): void {
    for (const k of keys) {
      if (k.startsWith('broadcast:')) this.held.delete(k.slice('broadcast:'.length));
      else if (k.startsWith('target:')) this.held.delete(k.slice('target:'.length).split('\u0000')[0]!);
    }
  }

  private view(h: HeldBroadcast): Broadcast {
    return toBroadcast(h.row, [...h.targets.values()].sort(byDevice));
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

  private requireRepo(): BroadcastRepo {
    if (!this.repo) throw Errors.NOT_READY('broadcast executor is not started');
    return this.repo;
  }

  private queries(): BroadcastQueries {
    this.requireRepo();
    return this.q!;
  }
}

function isFinished(h: HeldBroadcast): boolean {
  for (const t of h.targets.values()) if (!isTerminal(t.state)) return false;
  return true;
}

const byDevice = (x: TargetRow, y: TargetRow): number => (x.device_id < y.device_id ? -1 : x.device_id > y.device_id ? 1 : 0);

function rowOf(b: NewBroadcast): BroadcastRow {
  return {
    id: b.id, schedule_id: b.scheduleId ?? null, planned_at: b.plannedAt, priority: b.priority, volume: b.volume,
    content_json: JSON.stringify(b.content), duration_sec: b.durationSec ?? null, not_after: b.notAfter, created_at: b.createdAt,
    stop_requested_at: null,
  };
}

function targetRowsOf(b: NewBroadcast, targets: readonly NewTarget[]): TargetRow[] {
  return targets.map((t): TargetRow => ({
    broadcast_id: b.id, device_id: t.deviceId, area: t.area, state: t.state ?? 'pending', updated_at: b.createdAt,
    detail: t.detail ?? null, play_request_id: t.playRequestId ?? null, stop_request_id: null,
  }));
}

/**
 * The broadcast as create() stored it, built from what was written rather than read back (2,000
 * target rows at a time); targets in device id order as the reader returns them (ids are ASCII,
 * so JS string order is SQLite's BINARY order).
 */
function asStored(b: NewBroadcast, targets: readonly NewTarget[]): Broadcast {
  return toBroadcast(rowOf(b), targetRowsOf(b, targets).sort(byDevice));
}

function pickMedia(m: MediaContent): MediaContent {
  return { mediaId: m.mediaId, sha256: m.sha256, durationSec: m.durationSec, mime: m.mime };
}

/**
 * BroadcastExecutor: broadcast execution and proof of play.
 *
 * start(): persists the broadcast, one target row per speaker with its log
 * lines and one `broadcast.play` command per speaker (RpcService.sendMany,
 * `expiresAt = notAfter`, device protocol §12.1) in one transaction, then
 * the commands are published. RpcService keeps
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
import { BroadcastQueries } from './queries.js';
import { BroadcastRepo, toBroadcast, type BroadcastRow, type NewBroadcast, type NewTarget, type TargetRow } from './repo.js';
import { ReportDeadlines } from './report-deadlines.js';
import { checkTransition, isTerminal } from './state-machine.js';
import { StreamStops } from './stream-stops.js';
import { TargetEvents } from './target-events.js';
import type {
  Broadcast, BroadcastInput, ListQuery, LogEntry, LogNames, LogQuery, LogSource, MediaContent, TargetState, TotalsQuery, TotalsResult,
} from './types.js';
import { validateBroadcastInput } from './validate.js';
import { DEFAULT_TIME_ZONE } from '../../core/time.js';
import { PLAY_METHOD, PREFETCH_METHOD, STOP_METHOD } from '../../core/protocol.js';

export interface BroadcastExecutorOptions {
  stateDb: { readonly db: SqliteDatabase };
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
  /** Runs the writes of one playback event inside the state store's group commit (see RpcServiceOptions.batch). */
  batch?: <T>(fn: () => T) => T;
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

export class BroadcastExecutor implements Component {
  readonly name = 'broadcast-executor';
  private readonly o: BroadcastExecutorOptions;
  private readonly clock: Clock;
  private repo: BroadcastRepo | null = null;
  private q: BroadcastQueries | null = null;
  private offs: Array<() => void> = [];
  private readonly events: TargetEvents;
  private readonly streamStops: StreamStops;
  private readonly reports: ReportDeadlines;
  private readonly scheduleIds = new Map<string, string | null>();
  private readonly ignored: Counter<'reason'>;

  constructor(opts: BroadcastExecutorOptions) {
    this.o = opts;
    this.clock = opts.clock ?? systemClock;
    const requireRepo = (): BroadcastRepo => this.requireRepo();
    const repo = (): BroadcastRepo | null => this.repo;
    const move = this.move.bind(this);
    this.streamStops = new StreamStops({ requireRepo, repo, rpc: opts.rpc, clock: this.clock, logger: opts.logger, stopTtlMs: opts.stopTtlMs ?? 600_000 });
    this.events = new TargetEvents({
      requireRepo, logger: opts.logger, metrics: opts.metrics, batch: opts.batch, move, onPlaying: (b, d) => this.streamStops.onPlaying(b, d),
    });
    this.reports = new ReportDeadlines({
      requireRepo, repo, stateDb: opts.stateDb, batch: opts.batch, clock: this.clock, logger: opts.logger, graceMs: opts.reportGraceMs ?? 60_000, move,
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
  start(input: BroadcastInput): Broadcast;
  start(input?: BroadcastInput): Promise<void> | Broadcast {
    return input === undefined ? this.open() : this.startBroadcast(input);
  }

  stop(): Promise<void>;
  stop(broadcastId: string): Broadcast;
  stop(broadcastId?: string): Promise<void> | Broadcast {
    return broadcastId === undefined ? this.close() : this.stopBroadcast(broadcastId);
  }

  private async open(): Promise<void> {
    if (this.repo) return;
    this.repo = new BroadcastRepo(this.o.stateDb.db);
    this.q = new BroadcastQueries(this.repo, this.o.registry, this.o.timeZone ?? DEFAULT_TIME_ZONE, this.o.names);
    this.offs = this.events.listen(this.o.rpc, this.o.bus);
    this.streamStops.rearm();
    this.reports.rearm();
  }

  private async close(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    this.streamStops.clear();
    this.reports.clear();
    this.repo = null;
    this.q = null;
  }

  // ------------------------------------------------------------ commands

  /**
   * Starts a broadcast. Targets must be registered speakers (404 / 400
   * otherwise); duplicates are ignored. Returns the broadcast as stored
   * (targets `sent`, `offline`, or `pending` while a speaker is still
   * connecting; all `expired` if the command cannot be made).
   */
  startBroadcast(input: BroadcastInput): Broadcast {
    const repo = this.requireRepo();
    const now = this.clock.now();
    validateBroadcastInput(input, now);
    const id = input.id ?? newId('bc', now);
    if (repo.getBroadcastRow(id)) throw Errors.CONFLICT(`broadcast "${id}" already exists`);
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
    try {
      rpc.check(PLAY_METHOD, params, opts, now);
    } catch (err) {
      this.o.logger.error({ err, broadcastId: id }, 'broadcast.play could not be queued');
      const detail = `not sent: ${(err as Error).message}`;
      created = targets.map((t) => ({ ...t, state: 'expired', source: 'controller', detail }));
      repo.create(row, created);
    }
    if (!created) {
      // One batch: the commands and the targets are stored in one transaction, each target directly in the
      // state its send gave it (sent; offline while its speaker is away; pending while it is connecting, until
      // RpcService sends the command and reports 'sent'), then the commands are published.
      this.committed(rpc.sendMany(targets.map((t) => t.deviceId), PLAY_METHOD, params, opts, (results) => {
        created = targets.map((t, i): NewTarget => {
          const r = results[i]!;
          const base = { ...t, playRequestId: r.requestId };
          if (r.state === 'sent') return { ...base, state: 'sent', source: 'rpc' };
          // Queued for a device that is not connected: offline until it comes back (or notAfter passes).
          if (!rpc.isConnected(t.deviceId)) return { ...base, state: 'offline', source: 'controller', detail: 'speaker offline: command held until it reconnects' };
          return base;
        });
        repo.create(row, created);
      }), 'broadcast.play', id);
    }
    const stored = created!;
    for (const t of stored) this.emit(id, t.deviceId, t.area, 'pending', now);
    for (const t of stored) if (t.state !== undefined && t.state !== 'pending') this.emit(id, t.deviceId, t.area, t.state, now);
    this.o.logger.info({ broadcastId: id, scheduleId: input.scheduleId, priority: input.priority, targets: targets.length }, 'broadcast started');
    return asStored(row, stored);
  }

  /**
   * Stops a broadcast: `broadcast.stop {broadcastId}` to every speaker still
   * sent/accepted/playing (marked `stopped` when the speaker confirms, by a
   * `stopped` event or an `ok` answer); targets never sent (pending, offline)
   * are withdrawn and marked `stopped` at once. Unknown id → 404.
   */
  stopBroadcast(broadcastId: string): Broadcast {
    const repo = this.requireRepo();
    const b = repo.getBroadcastRow(broadcastId);
    if (!b) throw Errors.NOT_FOUND(`Broadcast "${broadcastId}"`);
    const now = this.clock.now();
    repo.markStopRequested(broadcastId, now);
    for (const t of repo.targetRows(broadcastId)) {
      if (isTerminal(t.state)) continue;
      if ((t.state === 'pending' || t.state === 'offline') && (t.play_request_id === null || this.o.rpc.isQueued(t.play_request_id))) {
        if (t.play_request_id !== null) this.committed(this.o.rpc.cancel(t.play_request_id), 'broadcast.play withdrawal', broadcastId);
        this.move(broadcastId, t.device_id, 'stopped', { source: 'controller', detail: 'stopped before it was sent' });
        continue;
      }
      try {
        this.committed(this.o.rpc.sendMany([t.device_id], STOP_METHOD, { broadcastId }, { expiresAt: now + (this.o.stopTtlMs ?? 600_000) },
          ([r]) => { repo.setStopRequest(broadcastId, t.device_id, r!.requestId); }), 'broadcast.stop', broadcastId);
      } catch (err) {
        this.o.logger.error({ err, broadcastId, deviceId: t.device_id }, 'broadcast.stop could not be queued');
      }
    }
    this.o.logger.info({ broadcastId }, 'broadcast stop requested');
    return repo.get(broadcastId)!;
  }

  /**
   * Asks the speakers among `deviceIds` that list `media.prefetch` in their capabilities (device
   * protocol §12.7) to download and cache `media` now, ahead of a broadcast.play of it that may
   * follow (an alert awaiting approval): that play then costs them no download, and Keng serves
   * no download at the moment every speaker should start. Held for an offline speaker until
   * `until` like any command. Speakers without the capability get nothing (their firmware would
   * answer `rejected` "unknown method"). Not part of any broadcast: no target rows, no log lines.
   * Returns how many speakers were asked.
   */
  prefetch(deviceIds: readonly string[], media: MediaContent, until: number): number {
    const reg = this.o.registry;
    const able = deviceIds.filter((id) => {
      if (reg.getDevice(id)?.kind !== 'speaker') return false;
      const caps = reg.attributes(id).capabilities;
      return Array.isArray(caps) && caps.includes(PREFETCH_METHOD);
    });
    if (able.length === 0) return 0;
    // Stored with mediaId, like broadcast.play: the send-time hook (playParams) puts a fresh signed URL in.
    this.committed(this.o.rpc.sendMany(able, PREFETCH_METHOD, { media: pickMedia(media) }, { expiresAt: until }), 'media.prefetch');
    this.o.logger.info({ mediaId: media.mediaId, speakers: able.length, of: deviceIds.length }, 'media prefetch sent');
    return able.length;
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
   */
  recordMissed(scheduleId: string, plannedAt: number, targets: string[]): number {
    const repo = this.requireRepo();
    const rows = [...new Set(targets)].map((deviceId) => ({ deviceId, area: this.o.registry.getDevice(deviceId)?.area ?? '' }));
    const n = repo.recordMissed(scheduleId, plannedAt, rows, this.clock.now());
    if (n > 0) this.o.logger.warn({ scheduleId, plannedAt, speakers: n }, 'schedule occurrence recorded as missed');
    return n;
  }

  // ------------------------------------------------------------ queries

  get(id: string): Broadcast | undefined { return this.requireRepo().get(id); }
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

  // ------------------------------------------------------------ transitions

  /** Validated transition: DB (target + log line) then bus event. false when ignored. */
  private move(broadcastId: string, deviceId: string, to: TargetState,
    o: { source: LogSource; detail?: string; deviceAt?: number }): boolean {
    const repo = this.requireRepo();
    const t: TargetRow | undefined = repo.target(broadcastId, deviceId);
    if (!t) return false;
    const check = checkTransition(t.state, to);
    if (check === 'same') return false;
    if (check !== 'ok') {
      this.ignored.labels({ reason: check }).inc();
      this.o.logger.info({ broadcastId, deviceId, from: t.state, to, source: o.source, reason: check }, 'broadcast target transition ignored');
      return false;
    }
    const now = this.clock.now();
    const scheduleId = this.scheduleIdOf(broadcastId);
    repo.transition(t, to, now, {
      source: o.source, ...(o.detail !== undefined ? { detail: o.detail } : {}), ...(o.deviceAt !== undefined ? { deviceAt: o.deviceAt } : {}),
      ...(scheduleId ? { scheduleId } : {}),
    });
    this.emit(broadcastId, deviceId, t.area, to, now);
    if ((to === 'accepted' || to === 'playing') && !this.reports.has(broadcastId)) {
      const b = repo.getBroadcastRow(broadcastId);
      if (b) this.reports.arm(b);
    }
    return true;
  }

  /**
   * The schedule of a broadcast (for its log lines), remembered for the last few broadcasts: a
   * broadcast's schedule never changes, and every transition of every speaker needs it.
   */
  private scheduleIdOf(broadcastId: string): string | null {
    const known = this.scheduleIds.get(broadcastId);
    if (known !== undefined) return known;
    const id = this.requireRepo().getBroadcastRow(broadcastId)?.schedule_id ?? null;
    this.scheduleIds.set(broadcastId, id);
    if (this.scheduleIds.size > 256) this.scheduleIds.delete(this.scheduleIds.keys().next().value!);
    return id;
  }

  /**
   * Bridge (docs/design/state-window.md §5 step 4, until this executor moves onto the state window): the RPC
   * service stores commands through the state window and its promises settle at that window's commit, while
   * this executor still writes its rows synchronously in the group commit. Nothing here waits for them; a
   * failed window (its commands not stored, nothing published) is logged.
   */
  private committed(p: Promise<unknown>, what: string, broadcastId?: string): void {
    p.catch((err: unknown) => { this.o.logger.error({ err, broadcastId }, `${what}: the command could not be stored`); });
  }

  private emit(broadcastId: string, deviceId: string, area: string, state: TargetState, at: number): void {
    this.o.bus.emit('broadcast.state', { broadcastId, deviceId, area, state, at });
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

/**
 * The broadcast as create() stored it, built from what was written rather than read back (2,000
 * target rows at a time); targets in device id order as repo.get() returns them (ids are ASCII,
 * so JS string order is SQLite's BINARY order).
 */
function asStored(b: NewBroadcast, targets: readonly NewTarget[]): Broadcast {
  const row: BroadcastRow = {
    id: b.id, schedule_id: b.scheduleId ?? null, planned_at: b.plannedAt, priority: b.priority, volume: b.volume,
    content_json: JSON.stringify(b.content), duration_sec: b.durationSec ?? null, not_after: b.notAfter, created_at: b.createdAt,
    stop_requested_at: null,
  };
  const rows = targets.map((t): TargetRow => ({
    broadcast_id: b.id, device_id: t.deviceId, area: t.area, state: t.state ?? 'pending', updated_at: b.createdAt,
    detail: t.detail ?? null, play_request_id: t.playRequestId ?? null, stop_request_id: null,
  }));
  rows.sort((x, y) => (x.device_id < y.device_id ? -1 : x.device_id > y.device_id ? 1 : 0));
  return toBroadcast(row, rows);
}

function pickMedia(m: MediaContent): MediaContent {
  return { mediaId: m.mediaId, sha256: m.sha256, durationSec: m.durationSec, mime: m.mime };
}

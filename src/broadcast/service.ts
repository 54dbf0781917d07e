/**
 * BroadcastService: schedules ↔ scheduler ↔ executor ↔ media ↔ registry
 * (OpenAPI at /docs, tags schedules and broadcasts).
 *
 * Schedule writes: validate (400) → targets (403 outside the caller's areas,
 * 422 unknown areas/devices) → content (422 unknown media, or media the
 * caller may not see; `ttsText` rendered once, belonging to the target's
 * areas, 503 without espeak-ng) → overlap check over each schedule's speakers
 * and play length (409 naming the clash unless the new one has higher
 * priority) → persist → scheduler.upsert → audit. The overlap check and the
 * write run in one transaction holding the schedules' write lock
 * (ScheduleRepo.locked: on PostgreSQL writers on every node take turns), so
 * two concurrent requests cannot both pass it.
 *
 * Occurrences: the scheduler's onOccurrence starts a broadcast on the
 * schedule's speakers as they are at that moment, valid until
 * start + max(play length, broadcast.offlineValiditySec) (`notAfter`: an
 * offline speaker that returns later gets `expired`); the occurrence's record
 * (`fired`, the broadcast's id) commits with the broadcast, in its unit.
 * onMissed records the occurrence as missed for each speaker (proof of play).
 *
 * Broadcast writes (play now, stop, occurrences) are units of the state window
 * (src/storage/state/window.ts): the broadcast the unit starts or stops (its
 * rows, commands and log lines join the unit's window) and its audit record
 * (`audit.record(e, trx)`) commit in one transaction, or nothing does and
 * nothing is published. Each unit runs with a savepoint, so its failure fails
 * only its own request, not the other writes of the window. In cluster mode the
 * window and the audit log are both on PostgreSQL: the same one transaction.
 */
import type { Transaction } from 'kysely';
import type { Histogram } from 'prom-client';
import { histogramOn } from '../core/metrics.js';
import type { Config } from '../config/index.js';
import type { Clock, Component, Logger, Metrics } from '../core/index.js';
import { Errors } from '../core/errors.js';
import { formatTime } from '../core/time.js';
import type { AuditInput, AuditRecorder } from '../audit/log.js';
import type { MediaLibrary, MediaViewer } from '../media/index.js';
import type { Principal } from '../auth/types.js';
import type { StateWindow } from '../storage/state/index.js';
import type { Db } from '../storage/sql/index.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import { broadcastExists, type Broadcast, type BroadcastExecutor, type BroadcastInput } from './execution/index.js';
import {
  Scheduler, SqlScheduleRepo, applySpec, findClashes, newSchedule, nextRuns as nextRunsOf, toClashError, toValidationError,
  validatePlayNow, validateSchedule, validateSchedulePatch, type OccurrenceInfo, type Schedule, type ScheduleRepo, type ScheduleSpec,
  type ScheduleReader, type OccurrenceRecord,
} from './schedule/index.js';
import { contentDuration, playContent, storeContent } from './content.js';
import { redactStreamUrls, StreamUrlPolicy, type ResolveHost } from './stream-url.js';
import { HostAllowList } from '../core/host-allow-list.js';
import { checkTarget, resolveSpeakers, targetVisible, type Caller } from './targets.js';

export interface BroadcastServiceDeps {
  config: Readonly<Config>;
  /** Where schedules and their occurrence claims live: the state store as a Db (embedded), or PostgreSQL (cluster mode). */
  stateSql: Db<unknown>;
  /** This node's name in occurrence claims. */
  nodeId?: string;
  /** Cluster mode: how often the scheduler re-reads schedules changed through other nodes (0: never). */
  resyncMs?: number;
  registry: DeviceRegistryApi;
  media: MediaLibrary;
  executor: BroadcastExecutor;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  /** Where schedule and broadcast changes are recorded. */
  audit: AuditRecorder;
  /** Which media a principal sees (its areas; media/access.ts): schedules play only those. */
  mediaViewer: (p: Principal) => MediaViewer;
  /** The executor's state window: broadcast writes and their audit records run as its units (one commit each). */
  window: Pick<StateWindow, 'unit' | 'durable' | 'capture'>;
  /** How stream URLs' host names are resolved for the check (stream-url.ts); default the system resolver. */
  resolveHost?: ResolveHost;
}

export class BroadcastService implements Component {
  readonly name = 'broadcast-service';
  private repo: ScheduleRepo | null = null;
  private sched: Scheduler | null = null;
  /** Schedule names for the broadcast log, which asks synchronously (refreshed at each scheduler re-read). */
  private readonly names = new Map<string, string>();
  private readonly jitter: Histogram;
  private readonly log: Logger;
  /** Where stream URLs may point (config broadcast.streamHosts). */
  private readonly streams: StreamUrlPolicy;

  constructor(private readonly d: BroadcastServiceDeps) {
    this.log = d.logger;
    const hosts = HostAllowList.parse(d.config.broadcast.streamHosts);
    if (!hosts.ok) throw new Error(`broadcast.streamHosts: ${JSON.stringify(hosts.bad)} is not a host, address or range`); // config/load.ts checked it
    this.streams = new StreamUrlPolicy(hosts.list, d.resolveHost);
    const reg = d.metrics.registry;
    this.jitter = histogramOn(reg, 'keng_scheduler_jitter_seconds', 'Schedule start jitter: actual start minus planned time of on-time occurrences',
      [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]);
  }

  /** The scheduler (jitterStats(), nextDue()); undefined before start. */
  get scheduler(): Scheduler | undefined { return this.sched ?? undefined; }

  async start(): Promise<void> {
    const repo = new SqlScheduleRepo(this.d.stateSql);
    this.repo = repo;
    this.rememberNames(await repo.list());
    this.sched = new Scheduler({
      repo, clock: this.d.clock, logger: this.log.child({ part: 'scheduler' }),
      graceMs: this.d.config.broadcast.missedGraceSec * 1000,
      ...(this.d.nodeId !== undefined ? { nodeId: this.d.nodeId } : {}),
      ...(this.d.resyncMs !== undefined ? { resyncMs: this.d.resyncMs } : {}),
      onSchedules: (list) => this.rememberNames(list),
      onOccurrence: (s, plannedAt, info) => this.onOccurrence(s, plannedAt, info),
      onMissed: async (s, plannedAt) => { await this.d.executor.recordMissed(s.id, plannedAt, [...resolveSpeakers(this.d.registry, s.target)]); },
    });
  }

  /**
   * The schedule that plays `mediaId`, for the 409 KENG_ERR_MEDIA_IN_USE of a delete
   * (the media library is given this check), or false. Named only when `viewer`
   * may see it (its whole target within the viewer's areas): another commune's
   * schedule is just "a schedule". With `trx` (the media delete's transaction, on
   * the same Db) the schedules are read in it under their write lock: a schedule
   * saved on another node at that moment either comes first (seen here) or after
   * the delete (and then finds the media gone: createSchedule, updateSchedule).
   */
  async mediaInUse(mediaId: string, viewer?: MediaViewer, trx?: Transaction<unknown>): Promise<string | false> {
    const repo = this.repo;
    const list = repo && (trx && repo.listLocked ? await repo.listLocked(trx) : await repo.list());
    const s = list?.find((x) => 'mediaId' in x.content && x.content.mediaId === mediaId);
    if (!s) return false;
    const named = !viewer || viewer.all || targetVisible(this.d.registry, s.target, { inScope: (a) => viewer.owns.has(a) });
    return named ? `schedule "${s.name}" (${s.id})` : 'a schedule';
  }

  async stop(): Promise<void> {
    await this.stopScheduler();
    this.sched = null;
    this.repo = null;
    this.names.clear();
  }

  /**
   * Run the schedules. A separate step from start(): occurrences (also the
   * catch-up of missed ones) need media links, which need the HTTP listener,
   * so the wiring runs the scheduler only once the API is up (schedulerPart).
   */
  async startScheduler(): Promise<void> {
    if (!this.sched) throw new Error('BroadcastService.startScheduler() before start()');
    await this.sched.start();
  }

  async stopScheduler(): Promise<void> {
    await this.sched?.stop();
  }

  // ------------------------------------------------------------ schedules

  /** A schedule's name (for the broadcast log), whoever asks; undefined when unknown. */
  scheduleName(id: string): string | undefined {
    return this.names.get(id);
  }

  /** Schedules whose whole target lies within the caller's areas, oldest first. */
  async listSchedules(c: Caller): Promise<Schedule[]> {
    return (await this.requireRepo().list()).filter((s) => targetVisible(this.d.registry, s.target, c));
  }

  /** 404 when unknown or outside the caller's areas. */
  async getSchedule(c: Caller, id: string): Promise<Schedule> {
    const s = await this.requireRepo().get(id);
    if (!s || !targetVisible(this.d.registry, s.target, c)) throw Errors.NOT_FOUND(`Schedule "${id}"`);
    return s;
  }

  /** What happened to a schedule's recent occurrences (latest first): fired, missed, failed, or being started. */
  async scheduleOccurrences(c: Caller, id: string, limit: number): Promise<OccurrenceRecord[]> {
    await this.getSchedule(c, id);
    return this.requireRepo().occurrences(id, limit);
  }

  async createSchedule(c: Caller, body: unknown): Promise<Schedule> {
    const v = validateSchedule(body, this.validateOpts());
    if (!v.ok) throw toValidationError(v.errors);
    checkTarget(this.d.registry, v.value.target, c);
    const { spec, created } = await this.withStoredContent(v.value, c);
    try {
      const repo = this.requireRepo();
      const sched = this.requireScheduler();
      const s = await repo.locked(async (tx, trx) => {
        await this.assertNoClash(spec, tx);
        await this.assertMediaStored(spec, trx);
        const made = newSchedule(spec, { now: this.d.clock.now(), createdBy: c.principal.id });
        await tx.insert(made);
        await this.auditIn(trx, c, 'schedule.create', made.id, undefined, made); // stored and audited together, or neither
        return made;
      });
      this.names.set(s.id, s.name);
      await sched.upsert(s);
      this.log.info({ scheduleId: s.id, name: s.name, by: c.principal.id }, 'schedule created');
      return (await repo.get(s.id)) ?? s;
    } catch (e) {
      await this.dropRendered(created);
      throw e;
    }
  }

  async updateSchedule(c: Caller, id: string, patch: unknown): Promise<Schedule> {
    const prev = await this.getSchedule(c, id);
    const v = validateSchedulePatch(prev, patch, this.validateOpts());
    if (!v.ok) throw toValidationError(v.errors);
    checkTarget(this.d.registry, v.value.target, c);
    // The stream host is judged when the content changes, so a schedule saved before a stricter streamHosts stays editable.
    const contentChanged = JSON.stringify(v.value.content) !== JSON.stringify(prev.content);
    const { spec, created } = await this.withStoredContent(v.value, c, {
      current: 'mediaId' in prev.content ? prev.content.mediaId : undefined, checkStream: contentChanged,
    });
    try {
      const repo = this.requireRepo();
      const sched = this.requireScheduler();
      // What the current version owes (an occurrence due right now) is settled before the version changes:
      // afterwards no claim for it is accepted.
      await sched.processDue();
      const next = await repo.locked(async (tx, trx) => {
        const current = await tx.get(id);
        if (!current) throw Errors.NOT_FOUND(`Schedule "${id}"`);
        await this.assertMediaStored(spec, trx);
        const n = applySpec(current, spec, this.d.clock.now());
        await this.assertNoClash(n, tx);
        await tx.update(n);
        await this.auditIn(trx, c, 'schedule.update', id, current, n);
        return n;
      });
      this.names.set(id, next.name);
      const stored = (await repo.get(id)) ?? next;
      await sched.upsert(stored);
      return stored;
    } catch (e) {
      await this.dropRendered(created);
      throw e;
    }
  }

  async deleteSchedule(c: Caller, id: string): Promise<void> {
    const prev = await this.getSchedule(c, id);
    if (!targetVisible(this.d.registry, prev.target, c)) throw Errors.NOT_FOUND(`Schedule "${id}"`);
    const sched = this.requireScheduler();
    await this.requireRepo().locked(async (tx, trx) => {
      if (await tx.delete(id)) await this.auditIn(trx, c, 'schedule.delete', id, prev, undefined);
    });
    this.names.delete(id);
    await sched.remove(id);
  }

  /** Next planned occurrences (epoch ms). */
  nextRuns(s: Schedule, n = 5): number[] {
    const first = this.sched?.nextFor(s.id);
    const from = this.d.clock.now();
    const runs = nextRunsOf(s, from, n);
    return first !== undefined && !runs.includes(first) && first > from ? [first, ...runs].slice(0, n) : runs;
  }

  // ------------------------------------------------------------ broadcasts

  /** "Play now" (`POST /api/v1/broadcasts`). */
  async playNow(c: Caller, body: unknown): Promise<Broadcast> {
    const v = validatePlayNow(body, this.validateOpts());
    if (!v.ok) throw toValidationError(v.errors);
    const targets = checkTarget(this.d.registry, v.value.target, c);
    if (targets.length === 0) throw Errors.UNPROCESSABLE('the target has no speakers');
    const { spec } = await this.withStoredContent(v.value, c);
    // The broadcast, its commands and its audit record in one commit, on disk before the reply.
    let stored: Promise<Broadcast> | undefined;
    await this.unit(async (trx) => {
      const p = this.d.window.capture(() => this.startFor(spec, targets, {}));
      stored = quiet(p.stored);
      const b = p.decided;
      await this.d.audit.record(this.auditEntry(c, 'broadcast.start', b.id, undefined, { ...summary(b), target: spec.target, content: spec.content }), trx);
    });
    return stored!;
  }

  async stopBroadcast(c: Caller, id: string): Promise<Broadcast> {
    const ex = this.d.executor;
    // In memory first, so the stop below is decided inside the unit (with its audit record, in one commit).
    await ex.preload(id);
    const b = ex.current(id) ?? await ex.getStored(id);
    if (!b || !b.targets.some((t) => c.inScope(t.area))) throw Errors.NOT_FOUND(`Broadcast "${id}"`);
    const outside = b.targets.find((t) => !c.inScope(t.area));
    if (outside) throw Errors.FORBIDDEN(`broadcast "${id}" also plays outside your areas (area "${outside.area}")`);
    let stopped: Promise<Broadcast> | undefined;
    await this.unit(async (trx) => {
      // Not held any more (a failed window evicted it): reading it here would wait for this very transaction.
      if (!ex.current(id)) throw Errors.NOT_READY(`broadcast "${id}" is being reloaded, try again`);
      stopped = quiet(this.d.window.capture(() => ex.stopBroadcast(id))); // decided at once (held): its writes join this unit
      await this.d.audit.record(this.auditEntry(c, 'broadcast.stop', id, summary(b), summary(ex.current(id) ?? b)), trx);
    });
    return stopped!;
  }

  // ------------------------------------------------------------ internals

  /**
   * Starts the occurrence's broadcast; returns its id. The claim is committed before (scheduler.ts), in its own
   * transaction, never nested in this unit. Its outcome (`fired`, this id) is written IN this unit: the
   * schedules' database is the window's one too (state.db, or PostgreSQL in cluster mode), so the broadcast and
   * its record commit together and a node killed after the commit cannot leave it to be recorded missed. When
   * the claim has expired meanwhile (recorded missed), recordFired throws and the unit stores nothing.
   */
  private async onOccurrence(s: Schedule, plannedAt: number, info: OccurrenceInfo): Promise<string | undefined> {
    if (!info.catchUp) this.jitter.observe(Math.max(0, info.lateMs) / 1000);
    const targets = [...resolveSpeakers(this.d.registry, s.target)].sort();
    if (targets.length === 0) {
      this.log.warn({ scheduleId: s.id, plannedAt }, 'schedule occurrence has no speakers to play on');
      return undefined;
    }
    // A deterministic id: an occurrence can never start two broadcasts.
    const id = `s-${s.id}-${plannedAt}`.slice(0, 128);
    let stored: Promise<Broadcast> | undefined;
    await this.unit(async (trx) => {
      await info.recordFired?.(trx, id);
      // Started before (its row is there): nothing to do. Decided here rather than by the insert's conflict, which fails the window.
      if (await broadcastExists(trx, id)) return;
      stored = quiet(this.d.window.capture(() => this.startFor(s, targets, { id, scheduleId: s.id, plannedAt })).stored);
    });
    if (!stored) {
      this.log.warn({ scheduleId: s.id, broadcastId: id }, 'schedule occurrence already started');
      return id;
    }
    const b = await stored;
    this.log.info({ scheduleId: s.id, broadcastId: b.id, lateMs: info.lateMs, targets: targets.length }, 'schedule occurrence started');
    return b.id;
  }

  /**
   * `fn` as a unit of the state window, made due at once (the caller waits for it): resolves after the commit.
   * Await only `trx` inside; with a savepoint, so a failure undoes only this unit (and what it added).
   */
  private unit(fn: (trx: Transaction<unknown>) => Promise<void>): Promise<void> {
    const w = this.d.window;
    return w.durable(w.unit(fn, { savepoint: true }));
  }

  private rememberNames(list: Schedule[]): void {
    this.names.clear();
    for (const s of list) this.names.set(s.id, s.name);
  }

  /** Starts the broadcast: `decided` as memory holds it now, `stored` after its commit. */
  private startFor(s: ScheduleSpec, targets: string[], extra: Pick<BroadcastInput, 'id' | 'scheduleId' | 'plannedAt'>): { decided: Broadcast; stored: Promise<Broadcast> } {
    const now = this.d.clock.now();
    const pc = playContent(this.d.media, s.content, s.durationSec);
    const validSec = Math.max(pc.durationSec ?? 0, this.d.config.broadcast.offlineValiditySec, 1);
    const input: BroadcastInput = {
      ...extra, priority: s.priority, volume: s.volume, targets, notAfter: now + validSec * 1000,
      ...(pc.media ? { media: pc.media } : {}),
      ...(pc.stream ? { stream: pc.stream, ...(pc.durationSec !== undefined ? { durationSec: pc.durationSec } : {}) } : {}),
    };
    const { broadcast, stored } = this.d.executor.begin(input);
    return { decided: broadcast, stored };
  }

  private async withStoredContent(spec: ScheduleSpec, c: Caller, o: { current?: string; checkStream?: boolean } = {}): Promise<{ spec: ScheduleSpec; created?: string }> {
    // Where speakers would be sent: checked before anything is stored (stream-url.ts; 422 when refused).
    if ((o.checkStream ?? true) && 'streamUrl' in spec.content) await this.streams.check(spec.content.streamUrl);
    const viewer = this.d.mediaViewer(c.principal);
    const r = await storeContent(this.d.media, spec.content, {
      by: c.principal.id, viewer, current: o.current, areas: this.targetAreas(spec.target) ?? viewer.home,
    });
    return { spec: { ...spec, content: r.content }, ...(r.created ? { created: r.created } : {}) };
  }

  /** The areas a target plays in (its areas and its speakers' areas): a TTS rendering for it belongs there. */
  private targetAreas(t: ScheduleSpec['target']): string[] | undefined {
    const areas = new Set(t.areas ?? []);
    for (const id of t.devices ?? []) {
      const d = this.d.registry.getDevice(id);
      if (d) areas.add(d.area);
    }
    return areas.size > 0 ? [...areas] : undefined;
  }

  private async dropRendered(mediaId: string | undefined): Promise<void> {
    if (!mediaId) return;
    try { await this.d.media.delete(mediaId); } catch (err) { this.log.warn({ err, mediaId }, 'could not remove an unused TTS rendering'); }
  }

  /**
   * 422 when the schedule's media was deleted since storeContent() checked it (a
   * delete on another node): read in the schedule write's transaction, which
   * holds the lock a media delete takes (mediaInUse), so one of the two sees the other.
   */
  private async assertMediaStored(spec: ScheduleSpec, trx: Transaction<unknown> | undefined): Promise<void> {
    if (!trx || !('mediaId' in spec.content) || await this.d.media.exists(spec.content.mediaId, trx)) return;
    throw Errors.UNPROCESSABLE(`media "${spec.content.mediaId}" does not exist`);
  }

  /** 409 naming the clash (findClashes skips schedules the candidate outranks). */
  private async assertNoClash(candidate: ScheduleSpec & { id?: string }, tx: ScheduleReader): Promise<void> {
    const reg = this.d.registry;
    const clashes = findClashes(candidate, await tx.list(), {
      now: this.d.clock.now(),
      resolve: (t) => resolveSpeakers(reg, t),
      durationSec: (s) => contentDuration(this.d.media, s.content, s.durationSec),
    });
    if (clashes.length > 0) throw toClashError(clashes, (ms) => formatTime(ms, this.d.config.tz));
  }

  /** A schedule change's audit record in the change's own transaction `trx` (the schedules' Db): both commit, or neither. */
  private async auditIn(trx: Transaction<unknown> | undefined, c: Caller, action: string, id: string, before: unknown, after: unknown): Promise<void> {
    await this.d.audit.record(this.auditEntry(c, action, id, before, after), trx);
  }

  private auditEntry(c: Caller, action: string, id: string, before: unknown, after: unknown): AuditInput {
    // A stream URL saved by an earlier version may carry credentials: never into the audit log (stream-url.ts).
    return {
      actor: c.principal, ...(c.ip !== undefined ? { ip: c.ip } : {}), action, target: `${action.split('.')[0]}:${id}`,
      ...(before !== undefined ? { before: redactStreamUrls(before) } : {}), ...(after !== undefined ? { after: redactStreamUrls(after) } : {}),
    };
  }

  private validateOpts() { return { now: this.d.clock.now(), defaultTz: this.d.config.tz }; }

  private requireRepo(): ScheduleRepo {
    if (!this.repo) throw Errors.NOT_READY('broadcast service is not started');
    return this.repo;
  }

  private requireScheduler(): Scheduler {
    if (!this.sched) throw Errors.NOT_READY('scheduler is not started');
    return this.sched;
  }
}

/**
 * `p`, marked handled: a unit keeps its broadcast's promise to return it after the commit; when the unit fails,
 * that promise rejects too and nobody awaits it (the unit's own rejection is what the caller gets).
 */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** A short form of a broadcast for the audit log (no per-speaker list). */
function summary(b: Broadcast): Record<string, unknown> {
  const states: Record<string, number> = {};
  for (const t of b.targets) states[t.state] = (states[t.state] ?? 0) + 1;
  return { id: b.id, priority: b.priority, volume: b.volume, targets: b.targets.length, states };
}

/**
 * The scheduler: turns schedules into occurrences at the right time, once
 * across every node that runs it (docs/cluster.md "Schedules").
 *
 * - One timer for the whole process, armed for the earliest next occurrence
 *   across all enabled schedules (not one timer per schedule). The delay is
 *   capped at `maxTimerMs` (default 60 s): that covers setTimeout's ~24.8-day
 *   limit, and a wall-clock jump (NTP step, VM resume) is noticed within a
 *   minute because each wake-up re-reads the injected Clock. A wake-up with
 *   nothing due re-arms at once, without touching the database.
 * - Claims: an occurrence is handled by the node whose claim row
 *   (`schedule_occurrences`, INSERT ... ON CONFLICT DO NOTHING) is inserted;
 *   the others do nothing with it. A claim names the schedule version the node
 *   planned with, so a node that has not seen an edit yet cannot claim for the
 *   old version (it re-reads the schedule instead).
 * - Per schedule it keeps a cursor: the planned time of the last occurrence
 *   handled (by any node: the latest claim, `lastFiredAt`). Occurrences are
 *   always searched strictly after the cursor, so a clock jumping backwards
 *   never replays one.
 * - Catch-up (at start, and after a stall or a forward jump): occurrences
 *   between the cursor and now are claimed as missed (`onMissed` on the node
 *   whose claim wins), not played late, except the latest one if it is at
 *   most `graceMs` old: that one fires now, once. For a schedule never fired
 *   the cursor starts at its last update (creation, edit or enable), so
 *   occurrences from before it existed, or while it was disabled, are not
 *   "missed".
 * - Delivery is at most once: the claim is committed before `onOccurrence`
 *   runs, so a crash mid-call never plays a bulletin twice. The outcome `fired`
 *   is written in the very transaction that creates the broadcast
 *   (`info.recordFired`, given when the repo has `settleIn`): a node killed
 *   right after that commit leaves a claim that already says `fired` with the
 *   broadcast's id. Written after the call instead, it could be lost between
 *   the two commits and the claim later recorded missed although its broadcast
 *   exists. Other outcomes (failed, or fired without a broadcast) are written
 *   after the call. A claim still without an outcome `claimLeaseMs` after it
 *   was made belongs to a node that died or hung before its broadcast
 *   committed: the first node to notice (at start, or every `resyncMs` in
 *   cluster mode) records it missed, once. A node that was only slow finds its
 *   claim taken back when it records the broadcast (`ClaimLostError`): its
 *   transaction is undone, so an occurrence recorded missed is never played.
 * - A claim that cannot be written (database unreachable) fires nothing: the
 *   schedule is retried every `retryMs`, and when the database answers again
 *   the usual rule applies (played if still inside the grace window, else missed).
 * - Callbacks are not awaited (one slow broadcast must not delay the next
 *   schedule's start); their promises are tracked, errors logged, and stop()
 *   waits for them.
 * - Start jitter (actual call time − planned time) of on-time occurrences is
 *   kept for the last `jitterSamples` fires (catch-up fires excluded).
 */
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import type { Schedule } from './model.js';
import { firstAfter, lastRunAtOrBefore, runsBetween } from './occurrences.js';
import type { OccurrenceOutcome } from './repo.js';
import { ClaimLostError, type JitterStats, type OccurrenceInfo, type OccurrenceResult, type SchedulerOptions } from './scheduler-options.js';

export * from './scheduler-options.js';

interface Entry {
  schedule: Schedule;
  /** Planned time of the last occurrence handled, or the schedule's last update. */
  cursor: number;
  /** The next occurrence, or the time of a retry after a failed claim. */
  next: number | undefined;
}

/** setTimeout's largest delay (2^31 − 1 ms, ~24.8 days). */
export const MAX_SET_TIMEOUT_MS = 2_147_483_647;
const PRUNE_EVERY_MS = 3_600_000;

export class Scheduler implements Component {
  readonly name = 'scheduler';
  readonly graceMs: number;
  readonly nodeId: string;
  private readonly opts: SchedulerOptions;
  private readonly log: Logger;
  private readonly maxTimerMs: number;
  private readonly maxMissed: number;
  private readonly leaseMs: number;
  private readonly entries = new Map<string, Entry>();
  private readonly jitterBuf: number[] = [];
  private readonly jitterCap: number;
  private jitterPos = 0;
  private readonly inflight = new Set<Promise<void>>();
  /** Schedules whose claim was refused: re-read after the current pass (another node may have changed them). */
  private readonly stale = new Set<string>();
  /** Serialises passes over the entries (they await the database). */
  private queue: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  /** When to look for expired claims (undefined: none known). */
  private sweepAt: number | undefined;
  private pruneAt = 0;
  private running = false;
  private startedAt = 0;

  constructor(opts: SchedulerOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.nodeId = opts.nodeId ?? 'local';
    this.graceMs = opts.graceMs ?? 60_000;
    this.leaseMs = Math.max(1, opts.claimLeaseMs ?? 60_000);
    this.maxTimerMs = Math.min(Math.max(opts.maxTimerMs ?? 60_000, 1), MAX_SET_TIMEOUT_MS);
    this.jitterCap = Math.max(1, opts.jitterSamples ?? 10_000);
    this.maxMissed = Math.max(1, opts.maxMissedPerCatchUp ?? 1_000);
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.startedAt = this.opts.clock.now();
    await this.exclusive(async () => {
      const list = await this.opts.repo.list();
      for (const s of list) this.put(s);
      this.opts.onSchedules?.(list);
      // Claims left without an outcome by a node that died (this one before a restart, in embedded mode).
      await this.expire();
    });
    this.log.info({ schedules: this.entries.size, graceMs: this.graceMs, nodeId: this.nodeId }, 'scheduler started');
    await this.processDue();
    const every = this.opts.resyncMs ?? 0;
    if (every > 0) {
      this.resyncTimer = setInterval(() => { void this.resync(); }, every);
      this.resyncTimer.unref?.();
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.timer = this.resyncTimer = undefined;
    await this.queue;
    await Promise.allSettled([...this.inflight]);
  }

  /** Handles what is due now (a caller about to change a schedule settles what its current version owes first). */
  async processDue(): Promise<void> {
    await this.exclusive(() => this.pass());
    this.arm();
  }

  /** A schedule was created or changed (after the repo write): re-plan it and re-arm. */
  async upsert(schedule: Schedule): Promise<void> {
    await this.exclusive(async () => {
      await this.pass(); // settle what the old version owed first
      this.put(schedule);
      await this.pass();
    });
    this.arm();
  }

  /** A schedule was deleted. */
  async remove(id: string): Promise<void> {
    await this.exclusive(async () => {
      await this.pass();
      this.entries.delete(id);
    });
    this.arm();
  }

  /** Re-read one schedule from the repo (upsert or remove). */
  async refresh(id: string): Promise<void> {
    const s = await this.opts.repo.get(id);
    if (s) await this.upsert(s);
    else await this.remove(id);
  }

  /** Re-read every schedule (changes made on other nodes), expire dead nodes' claims, handle what is due. */
  async resync(): Promise<void> {
    if (!this.running) return;
    await this.exclusive(async () => {
      let list: Schedule[];
      try {
        list = await this.opts.repo.list();
      } catch (err) {
        this.log.warn({ err }, 'could not re-read the schedules');
        return;
      }
      const ids = new Set(list.map((s) => s.id));
      for (const id of [...this.entries.keys()]) if (!ids.has(id)) this.entries.delete(id);
      for (const s of list) {
        const e = this.entries.get(s.id);
        if (!e || e.schedule.updatedAt !== s.updatedAt || (s.lastFiredAt ?? -Infinity) > e.cursor || !s.enabled) this.put(s);
      }
      this.opts.onSchedules?.(list);
      await this.expire();
      await this.pass();
    });
    this.arm();
  }

  /** The earliest planned occurrence, if any. */
  nextDue(): { scheduleId: string; at: number } | undefined {
    let best: { scheduleId: string; at: number } | undefined;
    for (const [id, e] of this.entries) {
      if (e.next !== undefined && (!best || e.next < best.at)) best = { scheduleId: id, at: e.next };
    }
    return best;
  }

  /** Next planned occurrence of one schedule (undefined if disabled, finished or unknown). */
  nextFor(id: string): number | undefined {
    return this.entries.get(id)?.next;
  }

  /** The kept start-jitter values (ms), oldest first. */
  jitter(): number[] {
    return this.jitterBuf.length < this.jitterCap
      ? [...this.jitterBuf]
      : [...this.jitterBuf.slice(this.jitterPos), ...this.jitterBuf.slice(0, this.jitterPos)];
  }

  jitterStats(): JitterStats {
    const v = this.jitter().sort((a, b) => a - b);
    if (v.length === 0) return { count: 0, p50: 0, p99: 0, max: 0, mean: 0 };
    const q = (p: number) => v[Math.min(v.length - 1, Math.ceil(p * v.length) - 1)]!;
    return { count: v.length, p50: q(0.5), p99: q(0.99), max: v[v.length - 1]!, mean: v.reduce((a, b) => a + b, 0) / v.length };
  }

  // -------------------------------------------------------------------------

  private exclusive(fn: () => Promise<void>): Promise<void> {
    const run = this.queue.then(fn);
    this.queue = run.catch((err: unknown) => { this.log.error({ err }, 'scheduler pass failed'); });
    return this.queue;
  }

  private put(s: Schedule): void {
    const prev = this.entries.get(s.id);
    if (!s.enabled) {
      this.entries.delete(s.id);
      return;
    }
    const cursor = Math.max(prev?.cursor ?? -Infinity, s.lastFiredAt ?? -Infinity, s.createdAt, s.updatedAt);
    this.entries.set(s.id, { schedule: s, cursor, next: firstAfter(s, cursor) });
  }

  private onTimer = (): void => {
    this.timer = undefined;
    if (!this.running) return;
    const now = this.opts.clock.now();
    // Nothing due (a chunk of a long wait): re-arm at once, no pass.
    if (!(this.sweepAt !== undefined && this.sweepAt <= now) && ![...this.entries.values()].some((e) => e.next !== undefined && e.next <= now)) {
      this.arm();
      return;
    }
    void this.processDue();
  };

  /** One pass: expired claims when one is known, every due entry, old claims now and then. */
  private async pass(): Promise<void> {
    if (!this.running) return;
    const now = this.opts.clock.now();
    if (this.sweepAt !== undefined && this.sweepAt <= now) await this.expire();
    for (const e of [...this.entries.values()]) {
      if (e.next !== undefined && e.next <= now) await this.handleDue(e, now);
    }
    await this.reread();
    if (now >= this.pruneAt) {
      this.pruneAt = now + PRUNE_EVERY_MS;
      try {
        const n = await this.opts.repo.prune(now - (this.opts.keepOccurrencesMs ?? 90 * 86_400_000));
        if (n > 0) this.log.info({ deleted: n }, 'old schedule occurrence records deleted');
      } catch (err) {
        this.log.warn({ err }, 'could not delete old schedule occurrence records');
      }
    }
  }

  private async handleDue(e: Entry, now: number): Promise<void> {
    const s = e.schedule;
    const due = runsBetween(s, e.cursor + 1, now + 1, this.maxMissed);
    const latest = due.truncated ? (lastRunAtOrBefore(s, e.cursor, now) ?? due[due.length - 1]) : due[due.length - 1];
    if (latest === undefined) {
      e.next = firstAfter(s, Math.max(e.cursor, now));
      return;
    }
    const fire = now - latest <= this.graceMs;
    const missed = due.filter((t) => t !== latest);
    if (!fire) missed.push(latest);
    if (due.truncated) {
      this.log.warn({ scheduleId: s.id, recorded: missed.length, from: e.cursor, to: latest },
        'more missed occurrences than maxMissedPerCatchUp: only the first ones and the latest are recorded');
    }
    // at most once: the claims are committed before anything is played
    const claim = { scheduleId: s.id, version: s.updatedAt, nodeId: this.nodeId, now };
    let wonMissed: number[];
    let wonFire = false;
    try {
      wonMissed = await this.opts.repo.claim({ ...claim, times: missed, outcome: 'missed' });
      if (fire) wonFire = (await this.opts.repo.claim({ ...claim, times: [latest], outcome: null })).length > 0;
    } catch (err) {
      const retryMs = this.opts.retryMs ?? 1_000;
      this.log.error({ err, scheduleId: s.id, retryMs }, 'could not claim schedule occurrences; nothing played, retrying');
      e.next = now + retryMs;
      return;
    }
    if (wonMissed.length < missed.length || wonFire !== fire) this.stale.add(s.id);
    e.cursor = latest;
    e.next = firstAfter(s, latest);
    if (wonMissed.length > 0) this.log.warn({ scheduleId: s.id, missed: wonMissed.length }, 'schedule occurrences missed');
    for (const t of wonMissed) this.call(() => this.opts.onMissed(s, t), s.id, 'onMissed');
    if (wonFire) {
      const firedAt = this.opts.clock.now();
      const catchUp = latest < this.startedAt;
      if (!catchUp) this.recordJitter(firedAt - latest);
      this.fire(s, latest, { firedAt, lateMs: firedAt - latest, catchUp });
    }
  }

  /** Schedules whose claims were refused: another node handled them, or changed or deleted the schedule. */
  private async reread(): Promise<void> {
    for (const id of [...this.stale]) {
      this.stale.delete(id);
      try {
        const s = await this.opts.repo.get(id);
        const e = this.entries.get(id);
        if (!s) this.entries.delete(id);
        else if (!e || e.schedule.updatedAt !== s.updatedAt || !s.enabled) this.put(s);
      } catch (err) {
        this.log.warn({ err, scheduleId: id }, 'could not re-read a schedule');
      }
    }
  }

  /**
   * Claims without an outcome past the lease: recorded missed (here, once across nodes) and reported. A claim whose
   * broadcast was stored is not among them: its outcome committed with the broadcast (recordFired).
   */
  private async expire(): Promise<void> {
    const now = this.opts.clock.now();
    try {
      for (const c of await this.opts.repo.expireClaims(now - this.leaseMs)) {
        const s = this.entries.get(c.scheduleId)?.schedule ?? await this.opts.repo.get(c.scheduleId);
        this.log.warn({ scheduleId: c.scheduleId, plannedAt: c.occurrenceAt, claimedBy: c.nodeId },
          'schedule occurrence claimed but its broadcast never stored (its node stopped): recorded as missed');
        if (s) this.call(() => this.opts.onMissed(s, c.occurrenceAt), s.id, 'onMissed');
      }
      const oldest = await this.opts.repo.oldestPending();
      this.sweepAt = oldest === undefined ? undefined : oldest + this.leaseMs + 1;
    } catch (err) {
      this.log.warn({ err }, 'could not look for expired schedule claims');
      this.sweepAt = now + this.leaseMs;
    }
  }

  /** Calls onOccurrence for a won claim and records its outcome on the claim (unless recordFired did, with the broadcast). */
  private fire(s: Schedule, plannedAt: number, base: Omit<OccurrenceInfo, 'recordFired'>): void {
    const { repo } = this.opts;
    /** Set once recordFired wrote the outcome in the caller's transaction (committed if onOccurrence resolves). */
    let recorded = false;
    const info: OccurrenceInfo = repo.settleIn
      ? {
        ...base,
        recordFired: async (trx, broadcastId) => {
          if (!await repo.settleIn!(trx, s.id, plannedAt, this.nodeId, 'fired', broadcastId)) throw new ClaimLostError(s.id, plannedAt);
          recorded = true;
        },
      }
      : base;
    const settle = (outcome: OccurrenceOutcome, result?: OccurrenceResult) =>
      this.settle(s.id, plannedAt, outcome, typeof result === 'string' ? result : undefined, recorded);
    const failed = (err: unknown): Promise<void> => {
      if (err instanceof ClaimLostError) {
        this.log.warn({ scheduleId: s.id, plannedAt }, 'claim expired before the occurrence\'s broadcast was stored: not played (recorded as missed)');
        return Promise.resolve();
      }
      this.log.error({ err, scheduleId: s.id }, 'onOccurrence failed');
      return settle('failed');
    };
    let r: OccurrenceResult | Promise<OccurrenceResult>;
    try {
      r = this.opts.onOccurrence(s, plannedAt, info);
    } catch (err) {
      this.track(failed(err));
      return;
    }
    this.track(r instanceof Promise
      ? r.then((v) => (recorded ? undefined : settle('fired', v)), failed)
      : recorded ? Promise.resolve() : settle('fired', r));
  }

  /** `recorded`: the outcome may already be written with the broadcast (a failure after its commit): no warning then. */
  private async settle(scheduleId: string, plannedAt: number, outcome: OccurrenceOutcome, broadcastId?: string, recorded = false): Promise<void> {
    try {
      if (!await this.opts.repo.settle(scheduleId, plannedAt, this.nodeId, outcome, broadcastId) && !recorded) {
        this.log.warn({ scheduleId, plannedAt, outcome }, 'claim expired before its outcome was written (recorded as missed)');
      }
    } catch (err) {
      this.log.error({ err, scheduleId, plannedAt, outcome }, 'could not record the outcome of a schedule occurrence');
      // Left without an outcome, the claim is recorded missed once its lease ends.
      const at = this.opts.clock.now() + this.leaseMs + 1;
      this.sweepAt = this.sweepAt === undefined ? at : Math.min(this.sweepAt, at);
      this.arm();
    }
  }

  private call(fn: () => void | Promise<void>, scheduleId: string, what: string): void {
    try {
      const r = fn();
      if (r instanceof Promise) this.track(r.catch((err: unknown) => { this.log.error({ err, scheduleId }, `${what} failed`); }));
    } catch (err) {
      this.log.error({ err, scheduleId }, `${what} failed`);
    }
  }

  private track(p: Promise<void>): void {
    const q: Promise<void> = p.finally(() => { this.inflight.delete(q); });
    this.inflight.add(q);
  }

  private recordJitter(ms: number): void {
    if (this.jitterBuf.length < this.jitterCap) this.jitterBuf.push(ms);
    else {
      this.jitterBuf[this.jitterPos] = ms;
      this.jitterPos = (this.jitterPos + 1) % this.jitterCap;
    }
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.running) return;
    const due = this.nextDue()?.at;
    const at = due === undefined ? this.sweepAt : this.sweepAt === undefined ? due : Math.min(due, this.sweepAt);
    if (at === undefined) return;
    const delay = Math.min(Math.max(at - this.opts.clock.now(), 0), this.maxTimerMs);
    this.timer = setTimeout(this.onTimer, delay);
    this.timer.unref?.();
  }
}

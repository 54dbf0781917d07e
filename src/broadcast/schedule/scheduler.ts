/**
 * The scheduler: turns schedules into occurrences at the right time.
 *
 * - One timer for the whole process, armed for the earliest next occurrence
 *   across all enabled schedules (not one timer per schedule). The delay is
 *   capped at `maxTimerMs` (default 60 s): that covers setTimeout's ~24.8-day
 *   limit, and a wall-clock jump (NTP step, VM resume) is noticed within a
 *   minute because each wake-up re-reads the injected Clock.
 * - Per schedule it keeps a cursor: the planned time of the last occurrence
 *   handled, persisted as `last_fired_at`. Occurrences are always searched
 *   strictly after the cursor, so a clock jumping backwards never replays one.
 * - Catch-up (at start, and after a stall or a forward jump): occurrences
 *   between the cursor and now are recorded as missed (`onMissed`), not played
 *   late, except the latest one if it is at most `graceMs` old: that one
 *   fires now, once. For a schedule never fired the cursor starts at its
 *   last update (creation, edit or enable), so occurrences from before it
 *   existed, or while it was disabled, are not "missed".
 * - Delivery is at most once: the cursor is persisted before `onOccurrence`
 *   runs, so a crash mid-call never plays a bulletin twice.
 * - Callbacks are not awaited (one slow broadcast must not delay the next
 *   schedule's start); their promises are tracked, errors logged, and stop()
 *   waits for them.
 * - Start jitter (actual call time − planned time) of on-time occurrences is
 *   kept for the last `jitterSamples` fires (catch-up fires excluded).
 */
import type { Clock } from '../../core/clock.js';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import type { Schedule } from './model.js';
import { firstAfter, lastRunAtOrBefore, runsBetween } from './occurrences.js';
import type { ScheduleRepo } from './repo.js';

export interface OccurrenceInfo {
  /** Clock time when onOccurrence was called. */
  firedAt: number;
  /** firedAt − plannedAt, ms. */
  lateMs: number;
  /** True when fired inside the grace window for an occurrence due before the scheduler (re)started. */
  catchUp: boolean;
}

export interface SchedulerOptions {
  repo: ScheduleRepo;
  clock: Clock;
  logger: Logger;
  /** Occurrences at most this late are still played (once); older ones are missed. Default 60,000. */
  graceMs?: number;
  onOccurrence: (schedule: Schedule, plannedAt: number, info: OccurrenceInfo) => void | Promise<void>;
  onMissed: (schedule: Schedule, plannedAt: number) => void | Promise<void>;
  /** Longest single timer delay (re-armed in chunks). Default 60,000. */
  maxTimerMs?: number;
  /** How many start-jitter values to keep. Default 10,000. */
  jitterSamples?: number;
  /** At most this many missed occurrences are reported per schedule per catch-up (the rest are logged as a count). Default 1,000. */
  maxMissedPerCatchUp?: number;
}

export interface JitterStats { count: number; p50: number; p99: number; max: number; mean: number }

interface Entry {
  schedule: Schedule;
  /** Planned time of the last occurrence handled, or the schedule's last update. */
  cursor: number;
  next: number | undefined;
}

/** setTimeout's largest delay (2^31 − 1 ms, ~24.8 days). */
export const MAX_SET_TIMEOUT_MS = 2_147_483_647;

export class Scheduler implements Component {
  readonly name = 'scheduler';
  readonly graceMs: number;
  private readonly opts: SchedulerOptions;
  private readonly log: Logger;
  private readonly maxTimerMs: number;
  private readonly maxMissed: number;
  private readonly entries = new Map<string, Entry>();
  private readonly jitterBuf: number[] = [];
  private readonly jitterCap: number;
  private jitterPos = 0;
  private readonly inflight = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private processing = false;
  private startedAt = 0;

  constructor(opts: SchedulerOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.graceMs = opts.graceMs ?? 60_000;
    this.maxTimerMs = Math.min(Math.max(opts.maxTimerMs ?? 60_000, 1), MAX_SET_TIMEOUT_MS);
    this.jitterCap = Math.max(1, opts.jitterSamples ?? 10_000);
    this.maxMissed = Math.max(1, opts.maxMissedPerCatchUp ?? 1_000);
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.startedAt = this.opts.clock.now();
    for (const s of this.opts.repo.list()) this.put(s);
    this.log.info({ schedules: this.entries.size, graceMs: this.graceMs }, 'scheduler started');
    this.processDue();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await Promise.allSettled([...this.inflight]);
  }

  /** A schedule was created or changed (after the repo write): re-plan it and re-arm. */
  upsert(schedule: Schedule): void {
    this.processDue(); // settle what the old version owed first
    this.put(schedule);
    if (!this.processing) this.processDue();
  }

  /** A schedule was deleted. */
  remove(id: string): void {
    this.processDue();
    this.entries.delete(id);
    if (!this.processing) this.arm();
  }

  /** Re-read one schedule from the repo (upsert or remove). */
  refresh(id: string): void {
    const s = this.opts.repo.get(id);
    if (s) this.upsert(s);
    else this.remove(id);
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
    this.processDue();
  };

  /** Handle every entry whose next occurrence is due, then re-arm. */
  private processDue(): void {
    if (!this.running || this.processing) return;
    this.processing = true;
    try {
      const now = this.opts.clock.now();
      for (const e of [...this.entries.values()]) {
        if (e.next !== undefined && e.next <= now) this.handleDue(e, now);
      }
    } finally {
      this.processing = false;
    }
    this.arm();
  }

  private handleDue(e: Entry, now: number): void {
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
    // at most once: persist the cursor before anything is played
    e.cursor = latest;
    e.next = firstAfter(s, latest);
    try {
      this.opts.repo.setLastFired(s.id, latest);
    } catch (err) {
      this.log.error({ err, scheduleId: s.id }, 'could not persist last_fired_at');
    }
    if (missed.length > 0) this.log.warn({ scheduleId: s.id, missed: missed.length }, 'schedule occurrences missed');
    for (const t of missed) this.call(() => this.opts.onMissed(s, t), s.id, 'onMissed');
    if (fire) {
      const firedAt = this.opts.clock.now();
      const catchUp = latest < this.startedAt;
      if (!catchUp) this.recordJitter(firedAt - latest);
      this.call(() => this.opts.onOccurrence(s, latest, { firedAt, lateMs: firedAt - latest, catchUp }), s.id, 'onOccurrence');
    }
  }

  private call(fn: () => void | Promise<void>, scheduleId: string, what: string): void {
    try {
      const r = fn();
      if (r && typeof (r as Promise<void>).then === 'function') {
        const p: Promise<void> = (r as Promise<void>).catch((err: unknown) => {
          this.log.error({ err, scheduleId }, `${what} failed`);
        }).finally(() => { this.inflight.delete(p); });
        this.inflight.add(p);
      }
    } catch (err) {
      this.log.error({ err, scheduleId }, `${what} failed`);
    }
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
    const due = this.nextDue();
    if (!due) return;
    const delay = Math.min(Math.max(due.at - this.opts.clock.now(), 0), this.maxTimerMs);
    this.timer = setTimeout(this.onTimer, delay);
    this.timer.unref?.();
  }
}

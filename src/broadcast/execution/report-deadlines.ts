/**
 * Proof of play without playback events: firmware that answers `broadcast.play` but sends no
 * playback events (ThingsBoard SDKs) would leave its target `accepted` for ever. Once the content
 * must have ended (it may start no later than notAfter and lasts its length) and a grace for late
 * reports has passed, a target still `accepted`, or `playing` media, becomes `unconfirmed`: final,
 * counted apart from `completed`, and replaced if the speaker's report of the end comes after all.
 * One in-memory timer per broadcast, armed when a target is accepted; rearm() (at the executor's
 * start) re-arms them from the broadcasts the executor loaded into memory.
 *
 * Separate from the executor because these deadlines are timers with their own lifecycle; the
 * executor only tells when a target was accepted or started, and does the transitions.
 */
import type { Clock } from '../../core/clock.js';
import type { Logger } from '../../core/logger.js';
import type { HeldBroadcast } from './held.js';
import type { BroadcastRow } from './repo.js';
import type { LogSource, MediaContent, TargetState } from './types.js';

/** setTimeout's longest delay; a later deadline is waited for in steps. */
const MAX_TIMER_MS = 2_147_483_647;

export interface ReportDeadlinesDeps {
  /** Runs `fn` with the broadcast as memory holds it (after one read when it does not). */
  withHeld: (broadcastId: string, fn: (h: HeldBroadcast | undefined) => void) => void;
  /** Whether the executor still runs (a timer may fire after stop). */
  running: () => boolean;
  clock: Clock;
  logger: Logger;
  /** How long after the content must have ended its end is still waited for. */
  graceMs: number;
  /** The executor's validated transition; false when ignored. */
  move: (broadcastId: string, deviceId: string, to: TargetState, o: { source: LogSource; detail: string }) => boolean;
}

export class ReportDeadlines {
  /** Per broadcast with a target accepted or playing: fires when its unreported targets become `unconfirmed`. */
  private readonly timers = new Map<string, NodeJS.Timeout>();

  constructor(private readonly d: ReportDeadlinesDeps) {}

  has(broadcastId: string): boolean {
    return this.timers.has(broadcastId);
  }

  /** After a restart: the deadlines of the loaded broadcasts with targets still accepted or playing. */
  rearm(held: Iterable<HeldBroadcast>): void {
    for (const h of held) {
      for (const t of h.targets.values()) {
        if (t.state === 'accepted' || t.state === 'playing') { this.arm(h.row); break; }
      }
    }
  }

  /** Arms the broadcast's report timer once (on its first accepted target, or at rearm()). */
  arm(b: BroadcastRow): void {
    if (this.timers.has(b.id)) return;
    const deadline = this.deadline(b);
    const timer = setTimeout(() => {
      this.timers.delete(b.id);
      if (!this.d.running()) return;
      if (this.d.clock.now() < deadline) { this.arm(b); return; } // a deadline beyond one timer's reach
      // The moves go into one state window (they are decided in one go); a failed window is logged by it.
      this.d.withHeld(b.id, (h) => {
        try { if (h) this.finishUnreported(h); } catch (err) { this.d.logger.error({ err, broadcastId: b.id }, 'unreported broadcast targets could not be finished'); }
      });
    }, Math.min(MAX_TIMER_MS, Math.max(0, deadline - this.d.clock.now())));
    timer.unref();
    this.timers.set(b.id, timer);
  }

  /**
   * Cluster mode (the target sweep): the broadcast's unreported targets become `unconfirmed` now if its deadline has
   * passed (by this node's clock), whatever node armed its timer.
   */
  finishDue(h: HeldBroadcast): void {
    if (this.d.clock.now() < this.deadline(h.row)) return;
    this.finishUnreported(h);
  }

  clear(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  /** When the unreported targets of `b` become `unconfirmed`: the latest end of its content plus the grace. */
  private deadline(b: BroadcastRow): number {
    return b.not_after + (contentSec(b) ?? 0) * 1000 + this.d.graceMs;
  }

  /** Targets still accepted, or playing media, after the report deadline → unconfirmed (a live stream plays until stopped). */
  private finishUnreported(h: HeldBroadcast): void {
    const b = h.row;
    const media = contentSec(b) !== undefined && !isStream(b);
    let n = 0;
    for (const t of [...h.targets.values()]) {
      if (t.state !== 'accepted' && t.state !== 'playing') continue;
      if (t.state === 'playing' && !media) continue;
      const detail = t.state === 'accepted'
        ? 'accepted, but no playback events: the end of playback was never reported'
        : 'started, but the end of playback was never reported';
      if (this.d.move(b.id, t.device_id, 'unconfirmed', { source: 'controller', detail })) n++;
    }
    if (n > 0) this.d.logger.info({ broadcastId: b.id, targets: n }, 'broadcast targets unconfirmed: accepted, end of playback never reported');
  }
}

/** The content's length in seconds: the media's, or a stream's planned duration (undefined: a stream without one). */
function contentSec(b: BroadcastRow): number | undefined {
  const c = JSON.parse(b.content_json) as { media?: MediaContent };
  return c.media ? c.media.durationSec : b.duration_sec ?? undefined;
}

function isStream(b: BroadcastRow): boolean {
  return (JSON.parse(b.content_json) as { stream?: unknown }).stream !== undefined;
}

/**
 * The play-out logic of a simulated loudspeaker: what plays now, what waits,
 * and the playback events (firmware-protocols/device-protocol.md §12.4
 * priorities, §12.5 playback events):
 * - emergency (khẩn cấp) interrupts anything playing, another emergency too
 *   (the newest wins); the interrupted item ends `preempted`;
 * - priority (ưu tiên) goes before normal items that are waiting, but does not
 *   interrupt what plays;
 * - normal (thông thường) never interrupts: it waits.
 * Every accepted item ends with exactly one of completed, failed, preempted,
 * stopped. An item that cannot start before its notAfter ends `failed`
 * ("notAfter passed"). Media is fetched at once on accept (the signed URL is
 * short-lived), so "ready" order and accept order can differ.
 */
import type { Rng } from '../random.js';

export type SpeakerPriority = 'normal' | 'priority' | 'emergency';
import type { PlaybackState } from '../../core/protocol.js';

export type { PlaybackState };

export interface PlayItem {
  broadcastId: string;
  priority: SpeakerPriority;
  volume: number;
  media?: { url: string; sha256: string; durationSec: number; mime: string };
  stream?: { url: string };
  notAfter: number;
}

export interface PlayoutHooks {
  /** Download and verify (media) or probe (stream). Resolves with the play time in ms of audio, or a failure detail. */
  prepare(item: PlayItem): Promise<{ ok: true; durationMs: number } | { ok: false; detail: string }>;
  event(broadcastId: string, state: PlaybackState, detail?: string): void;
  /** Playing started or ended (telemetry `playing`), with the volume in force. */
  playing(on: boolean, volume: number | null): void;
}

export interface PlayoutOptions {
  /** Play-time factor: 10 = ten times faster than real time. */
  speed: number;
  /** Probability that an item fails while playing (simulated amplifier fault). */
  failRate: number;
  rng: Rng;
  now?: () => number;
}

interface Entry {
  item: PlayItem;
  seq: number;
  ready: boolean;
  durationMs: number;
  cancelled: boolean;
}

const RANK: Record<SpeakerPriority, number> = { emergency: 2, priority: 1, normal: 0 };

export class Playout {
  private seq = 0;
  private readonly waiting: Entry[] = [];
  private current: (Entry & { timer: NodeJS.Timeout }) | null = null;
  private readonly now: () => number;
  private closed = false;

  constructor(private readonly hooks: PlayoutHooks, private readonly o: PlayoutOptions) {
    this.now = o.now ?? Date.now;
  }

  get playingId(): string | null { return this.current?.item.broadcastId ?? null; }
  get busy(): boolean { return this.current !== null; }
  get queued(): string[] { return this.waiting.map((e) => e.item.broadcastId); }
  knows(broadcastId: string): boolean {
    return this.current?.item.broadcastId === broadcastId || this.waiting.some((e) => e.item.broadcastId === broadcastId);
  }

  /** An accepted item: fetch its media now, then play by priority. */
  enqueue(item: PlayItem): void {
    const e: Entry = { item, seq: this.seq++, ready: false, durationMs: 0, cancelled: false };
    this.waiting.push(e);
    this.hooks.prepare(item).then((r) => {
      if (e.cancelled || this.closed) return;
      if (!r.ok) { this.drop(e); this.hooks.event(item.broadcastId, 'failed', r.detail); this.next(); return; }
      e.ready = true;
      e.durationMs = r.durationMs;
      // Spec: an emergency interrupts anything playing (the newest emergency wins).
      if (item.priority === 'emergency' && this.current) this.interrupt(`preempted by ${item.broadcastId}`);
      this.next();
    }, (err: unknown) => {
      if (e.cancelled || this.closed) return;
      this.drop(e);
      this.hooks.event(item.broadcastId, 'failed', `prepare failed: ${(err as Error).message}`);
      this.next();
    });
  }

  /** broadcast.stop: that broadcast (playing or queued), or without id whatever plays. Returns the ids stopped. */
  stop(broadcastId?: string): string[] {
    const stopped: string[] = [];
    const cur = this.current;
    if (cur && (broadcastId === undefined || cur.item.broadcastId === broadcastId)) {
      clearTimeout(cur.timer);
      this.current = null;
      this.hooks.playing(false, null);
      this.hooks.event(cur.item.broadcastId, 'stopped', 'broadcast.stop');
      stopped.push(cur.item.broadcastId);
    }
    if (broadcastId !== undefined) {
      for (const e of [...this.waiting]) {
        if (e.item.broadcastId !== broadcastId) continue;
        e.cancelled = true;
        this.drop(e);
        this.hooks.event(e.item.broadcastId, 'stopped', 'broadcast.stop (queued)');
        stopped.push(broadcastId);
      }
    }
    this.next();
    return stopped;
  }

  /** Power off: nothing more is reported. */
  close(): void {
    this.closed = true;
    if (this.current) clearTimeout(this.current.timer);
    this.current = null;
    for (const e of this.waiting) e.cancelled = true;
    this.waiting.length = 0;
  }

  private interrupt(detail: string): void {
    const cur = this.current;
    if (!cur) return;
    clearTimeout(cur.timer);
    this.current = null;
    this.hooks.playing(false, null);
    this.hooks.event(cur.item.broadcastId, 'preempted', detail);
  }

  /** Starts the best ready item when nothing plays: highest priority, then accept order. */
  private next(): void {
    while (!this.current && !this.closed) {
      const ready = this.waiting.filter((e) => e.ready);
      if (ready.length === 0) return;
      ready.sort((a, b) => RANK[b.item.priority] - RANK[a.item.priority] || a.seq - b.seq);
      const e = ready[0]!;
      this.drop(e);
      if (this.now() > e.item.notAfter) { this.hooks.event(e.item.broadcastId, 'failed', 'notAfter passed'); continue; }
      this.play(e);
    }
  }

  private play(e: Entry): void {
    const playMs = Math.max(1, e.durationMs / this.o.speed);
    const fails = this.o.rng() < this.o.failRate;
    const endMs = fails ? Math.max(1, Math.floor(playMs * (0.2 + 0.6 * this.o.rng()))) : playMs;
    const timer = setTimeout(() => {
      if (this.current?.item.broadcastId !== e.item.broadcastId) return;
      this.current = null;
      this.hooks.playing(false, null);
      if (fails) this.hooks.event(e.item.broadcastId, 'failed', 'simulated amplifier fault');
      else this.hooks.event(e.item.broadcastId, 'completed');
      this.next();
    }, endMs);
    this.current = { ...e, timer };
    this.hooks.event(e.item.broadcastId, 'started');
    this.hooks.playing(true, e.item.volume);
  }

  private drop(e: Entry): void {
    const i = this.waiting.indexOf(e);
    if (i >= 0) this.waiting.splice(i, 1);
  }
}

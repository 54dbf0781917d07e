/**
 * The executor's memory (docs/design/state-window.md §2): the broadcasts with targets still open, and the
 * last few finished ones, each with every target row. Decisions are made here at once; the rows they change
 * go into the state window. A broadcast memory does not hold is read once (tracked: `idle()` waits for those
 * reads); a failed window evicts what it touched (read again on next use).
 */
import type { Logger } from '../../core/logger.js';
import { toBroadcast, type BroadcastRow, type NewBroadcast, type NewTarget, type TargetRow } from './repo.js';
import type { BroadcastRepoSql } from './repo-sql.js';
import { isTerminal } from './state-machine.js';
import type { Broadcast } from './types.js';

/** A broadcast as memory holds it: its row and every target (rows replaced, never mutated). */
export interface HeldBroadcast { row: BroadcastRow; targets: Map<string, TargetRow> }

/** Finished broadcasts kept in memory for late answers and events (beyond these, read again when needed). */
const KEEP_FINISHED = 64;

export class HeldBroadcasts {
  private readonly map = new Map<string, HeldBroadcast>();
  /** Reads of broadcasts memory did not hold. */
  private readonly lookups = new Set<Promise<unknown>>();
  /** Per broadcast: the end of the chain of callers waiting for its read (they run in arrival order). */
  private readonly reads = new Map<string, Promise<HeldBroadcast | undefined>>();

  /**
   * `repo`: where misses are read (null while the executor is stopped: nothing is read). `settled`: resolves once
   * the state window holds nothing uncommitted (StateWindow.settled).
   */
  constructor(private readonly o: { repo: () => BroadcastRepoSql | null; logger: Logger; settled?: () => Promise<void> }) {}

  get(id: string): HeldBroadcast | undefined { return this.map.get(id); }
  has(id: string): boolean { return this.map.has(id); }
  delete(id: string): void { this.map.delete(id); }
  clear(): void { this.map.clear(); this.reads.clear(); }
  values(): IterableIterator<HeldBroadcast> { return this.map.values(); }

  /** Memory at start: a broadcast read from the database. */
  put(h: HeldBroadcast): void { this.map.set(h.row.id, h); }

  /** A new broadcast in memory (its rows go into the window with it). */
  hold(b: NewBroadcast, targets: readonly NewTarget[]): void {
    this.map.set(b.id, { row: rowOf(b), targets: new Map(targetRowsOf(b, targets).map((t) => [t.device_id, t])) });
    this.trim();
  }

  /**
   * Runs `fn` with the broadcast from memory: at once when held, else after one read (tracked: idle() waits
   * for it). `fn` gets undefined when the broadcast does not exist.
   */
  withHeld(broadcastId: string, fn: (h: HeldBroadcast | undefined) => void): void {
    const h = this.map.get(broadcastId);
    const queued = this.reads.get(broadcastId);
    if (!queued && (h || !this.o.repo())) { fn(h); return; }
    // One read per broadcast, and the callers waiting for it run in the order they came: on PostgreSQL two reads
    // may end in either order, and a device's answer must not be judged before the 'sent' that preceded it.
    // After the queued callers: memory as they left it, or a read of its own when one of them dropped it (reread).
    const read = queued ? queued.then((): HeldBroadcast | undefined | Promise<HeldBroadcast | undefined> => this.map.get(broadcastId) ?? this.load(broadcastId)) : this.load(broadcastId);
    const chained: Promise<HeldBroadcast | undefined> = read.then((got) => {
      try { fn(this.map.get(broadcastId) ?? got); } catch (err) {
        this.o.logger.error({ err, broadcastId: broadcastId.slice(0, 128) }, 'broadcast event could not be handled');
      }
      return this.map.get(broadcastId) ?? got;
    }, (err: unknown) => {
      this.o.logger.error({ err, broadcastId: broadcastId.slice(0, 128) }, 'broadcast could not be read');
      return undefined;
    });
    this.reads.set(broadcastId, chained);
    void chained.finally(() => { if (this.reads.get(broadcastId) === chained) this.reads.delete(broadcastId); });
    this.lookups.add(chained);
    void chained.finally(() => this.lookups.delete(chained));
  }

  /**
   * Forgets what memory holds of the broadcast and runs `fn` with it as the database has it now (after the reads
   * and callers already queued for it): for an event memory refused while other nodes move the same targets.
   */
  reread(broadcastId: string, fn: (h: HeldBroadcast | undefined) => void): void {
    if (!this.reads.has(broadcastId)) {
      this.map.delete(broadcastId);
      this.withHeld(broadcastId, fn);
      return;
    }
    this.withHeld(broadcastId, () => { // after what is queued: then a read of its own
      this.map.delete(broadcastId);
      this.withHeld(broadcastId, fn);
    });
  }

  /** Reads a broadcast and its targets into memory (memory wins if it got it meanwhile). */
  async load(broadcastId: string): Promise<HeldBroadcast | undefined> {
    const repo = this.o.repo();
    if (!repo) return this.map.get(broadcastId);
    // Moves memory made before it dropped the broadcast may still sit in the state window: read after they are
    // committed, or memory would hold a target's older state and its next move would fail its compare-and-set
    // (seen in cluster mode: a speaker's `completed` lost, its target left `playing`). A failed window is no
    // reason not to read: it evicted what it touched.
    if (this.o.settled) await this.o.settled().catch(() => undefined);
    const row = await repo.getBroadcastRow(broadcastId);
    const targets = row ? await repo.targetRows(broadcastId) : [];
    const now = this.map.get(broadcastId);
    if (now || !row || this.o.repo() !== repo) return now;
    const h: HeldBroadcast = { row, targets: new Map(targets.map((t) => [t.device_id, t])) };
    this.map.set(broadcastId, h);
    this.trim();
    return h;
  }

  /** Counts `p` as a read: idle() (an answer's PUBACK) waits for it too. */
  track(p: Promise<unknown>): void {
    this.lookups.add(p);
    void p.finally(() => this.lookups.delete(p));
  }

  /** Resolves when the reads started so far have ended (each one's `fn` ran). */
  async idle(): Promise<void> {
    if (this.lookups.size > 0) await Promise.allSettled([...this.lookups]);
  }

  get reading(): boolean { return this.lookups.size > 0; }

  /** A failed window: forget the broadcasts it touched (read again from the database when next needed). */
  evicted(keys: readonly string[]): void {
    for (const k of keys) {
      if (k.startsWith('broadcast:')) this.map.delete(k.slice('broadcast:'.length));
      else if (k.startsWith('target:')) this.map.delete(k.slice('target:'.length).split('\u0000')[0]!);
    }
  }

  /** Keeps at most KEEP_FINISHED finished broadcasts (oldest in memory go first); open ones always stay. */
  private trim(): void {
    let finished = 0;
    for (const h of this.map.values()) if (isFinished(h)) finished++;
    for (const [id, h] of this.map) {
      if (finished <= KEEP_FINISHED) break;
      if (!isFinished(h)) continue;
      this.map.delete(id);
      finished--;
    }
  }
}

/** The broadcast as memory holds it, targets in device id order. */
export function view(h: HeldBroadcast): Broadcast {
  return toBroadcast(h.row, [...h.targets.values()].sort(byDevice));
}

function isFinished(h: HeldBroadcast): boolean {
  for (const t of h.targets.values()) if (!isTerminal(t.state)) return false;
  return true;
}

/** Device id order (ids are ASCII: JS string order is the readers' bytewise order, repo-sql.ts byText). */
export const byDevice = (x: TargetRow, y: TargetRow): number => (x.device_id < y.device_id ? -1 : x.device_id > y.device_id ? 1 : 0);

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
 * target rows at a time); targets in device id order as the reader returns them.
 */
export function asStored(b: NewBroadcast, targets: readonly NewTarget[]): Broadcast {
  return toBroadcast(rowOf(b), targetRowsOf(b, targets).sort(byDevice));
}

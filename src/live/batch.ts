/**
 * Batched delivery: an extension of the live feed (docs/live-feed.md) for clients that
 * watch many busy devices (an IOC wall, a commune dashboard over a whole
 * province). A client that connects with `auth: {token, batch: true}` gets
 * telemetry as `telemetry.batch` events, each an array of the ordinary
 * `telemetry` objects. Batches go out at most every `batchIntervalMs`: a
 * reading that arrives when none went out for that long is sent at once (on
 * the next turn of the event loop, with whatever arrived in the same turn);
 * otherwise it waits for the end of the interval. So a quiet feed has no
 * added delay and a busy one at most one interval. A batch holds the latest value per (device, field) of its
 * interval (a device that reported twice within it shows its newer reading):
 * a dashboard shows current values, and this bounds what a client must parse
 * to (devices × fields) per interval whatever the devices' rate. Every reading
 * stays in the store and on the history API; machines that want each one
 * take the MQTT feed for service accounts (firmware-protocols/ioc-mqtt.md). `status` and `broadcast` stay single events (they
 * are rare); a group's pending batch is flushed before them, so a client
 * never sees "offline" before the last readings that preceded it.
 *
 * Why: one socket.io event per reading and client costs a websocket frame
 * each; at 10,000 readings/s to 200 clients that is 2 million frames/s, more
 * than two cores can write (or the clients parse). Batches cost one frame per
 * client and interval, whatever the rate, and coalescing bounds their size.
 *
 * Fan-out: clients with the same subscriptions (same device and area rooms,
 * same right to see broadcasts) form one group with a socket.io room "g:N".
 * A reading is appended to the buffer of every group whose rooms it targets
 * (found through a room → groups index; each group once per reading even if
 * several of its rooms match), and a flush emits each group's buffer once to
 * its room, so socket.io encodes it once for all members.
 */
import type { KengEvents } from '../core/events.js';
import type { TimeFormatter } from '../core/time.js';
import type { TelemetryMsg } from './format.js';
import { Pending } from './pending.js';

/** What a group member must provide (LiveClient). */
export interface BatchMember {
  readonly id: string;
  batchGroup: BatchGroup | null;
  canBroadcast: boolean;
  rooms(): string[];
  subscriptionRooms(): string[];
}

export class BatchGroup {
  readonly room: string;
  readonly members = new Set<BatchMember>();
  /** Latest value per (device, field) since the last flush. */
  buffer = new Pending();
  /** Last event stamp that reached this group (dedupes a reading matching several of its rooms). */
  stamp = 0;
  /** Date.now() when the buffer got its first entry since the last flush. */
  since = 0;
  /** Readings pushed (before coalescing) since the feed last reset it: the group's rate. */
  pushed = 0;
  constructor(readonly id: number, readonly key: string, readonly rooms: readonly string[], readonly canBroadcast: boolean, prefix = 'g') {
    this.room = `${prefix}:${id}`;
  }
}

export interface BatchSink {
  /** Emit one group's batch to its room. */
  emitBatch(room: string, batch: TelemetryMsg[]): void;
  /** How long the batch's oldest reading waited in the buffer (metrics). */
  batchWaited?(ms: number): void;
}

export class BatchGroups {
  private readonly byKey = new Map<string, BatchGroup>();
  private readonly byRoom = new Map<string, Set<BatchGroup>>();
  private readonly dirty = new Set<BatchGroup>();
  private timer: NodeJS.Timeout | null = null;
  private lastFlush = 0;
  private nextId = 1;
  private stampSeq = 0;
  /** Batches and readings emitted since the last take (metrics). */
  batches = 0;

  /** Readings merged into a newer one of the same interval (metrics). */
  coalesced = 0;

  constructor(
    private readonly sink: BatchSink, private readonly fmt: TimeFormatter,
    private readonly intervalMs: number, private readonly maxBatch: number,
    /** Room name prefix ("g:N"); give each BatchGroups of one feed its own. */
    private readonly prefix = 'g',
  ) {}

  /** Every group (for rate checks). */
  groups(): IterableIterator<BatchGroup> { return this.byKey.values(); }

  /** Groups that exist (each with at least one member). */
  get size(): number { return this.byKey.size; }

  /**
   * Put the member into the group for its current subscriptions (creating it),
   * out of its previous one. Returns [old, new] so the caller can move the
   * socket between rooms; new is null when the member watches nothing.
   */
  assign(m: BatchMember): [BatchGroup | null, BatchGroup | null] {
    const old = m.batchGroup;
    const rooms = m.subscriptionRooms().sort();
    let next: BatchGroup | null = null;
    if (rooms.length) {
      const key = `${m.canBroadcast ? 'b' : 'n'}\u0000${rooms.join('\u0000')}`;
      next = this.byKey.get(key) ?? this.create(key, rooms, m.canBroadcast);
    }
    if (old === next) return [old, next];
    if (old) this.leave(old, m);
    if (next) next.members.add(m);
    m.batchGroup = next;
    return [old, next];
  }

  /** The member is gone (disconnected). */
  release(m: BatchMember): void {
    if (m.batchGroup) this.leave(m.batchGroup, m);
    m.batchGroup = null;
  }

  /**
   * Calls fn once for every group that an event of a device targets: groups
   * holding the device's room or one of the area rooms (the device's area and
   * its ancestors).
   */
  forEvent(deviceRoom: string, areaRooms: readonly string[], fn: (g: BatchGroup) => void): void {
    const stamp = ++this.stampSeq;
    const visit = (room: string): void => {
      const gs = this.byRoom.get(room);
      if (!gs) return;
      for (const g of gs) {
        if (g.stamp === stamp) continue;
        g.stamp = stamp;
        fn(g);
      }
    };
    visit(deviceRoom);
    for (const r of areaRooms) visit(r);
  }

  /** Merge a reading into a group's batch; the flush timer starts with the first pending reading (see the top of the file). */
  push(g: BatchGroup, e: KengEvents['telemetry']): void {
    const before = g.buffer.entries;
    if (before === 0) g.since = Date.now();
    g.pushed++;
    g.buffer.addTelemetry(e);
    if (g.buffer.entries === before) this.coalesced++;
    if (g.buffer.entries >= this.maxBatch) { this.flushGroup(g); return; }
    this.dirty.add(g);
    if (!this.timer) {
      const wait = Math.max(0, this.lastFlush + this.intervalMs - Date.now());
      this.timer = setTimeout(() => { this.timer = null; this.flush(); }, wait);
      this.timer.unref();
    }
  }

  /** Emit a group's pending batch now (before a status or broadcast event to it). */
  flushGroup(g: BatchGroup): void {
    this.dirty.delete(g);
    if (!g.buffer.entries) return;
    const batch = g.buffer.messages(this.fmt).telemetry;
    g.buffer = new Pending();
    this.batches++;
    this.sink.emitBatch(g.room, batch);
    this.sink.batchWaited?.(Date.now() - g.since);
  }

  /** Emit every pending batch. */
  flush(): void {
    this.lastFlush = Date.now();
    for (const g of [...this.dirty]) this.flushGroup(g);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.dirty.clear();
  }

  private create(key: string, rooms: readonly string[], canBroadcast: boolean): BatchGroup {
    const g = new BatchGroup(this.nextId++, key, rooms, canBroadcast, this.prefix);
    this.byKey.set(key, g);
    for (const r of rooms) {
      let s = this.byRoom.get(r);
      if (!s) { s = new Set(); this.byRoom.set(r, s); }
      s.add(g);
    }
    return g;
  }

  private leave(g: BatchGroup, m: BatchMember): void {
    g.members.delete(m);
    if (g.members.size) return;
    this.byKey.delete(g.key);
    this.dirty.delete(g);
    g.buffer = new Pending();
    for (const r of g.rooms) {
      const s = this.byRoom.get(r);
      if (!s) continue;
      s.delete(g);
      if (!s.size) this.byRoom.delete(r);
    }
  }
}

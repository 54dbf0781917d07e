/**
 * Throttling of single-event live clients (docs/live-feed.md "Busy
 * subscriptions"): a client without `auth.batch` whose subscriptions produced
 * more than `maxEventRate` telemetry events within a second leaves its
 * device/area rooms for a throttled group (the machinery of batch.ts, rooms
 * "t:N", interval `throttleIntervalMs`): it then gets the latest value per
 * (device, field) once per interval, still as `telemetry` events. It returns
 * to its rooms after a whole second in which its group saw fewer than half
 * that many readings.
 *
 * Why: one websocket frame per event and client is the expensive part of the
 * feed; at 10,000 readings/s a province-wide client needs 10,000 frames/s, and
 * 200 such clients put the server behind reading the devices themselves. This
 * bounds what one client costs, and what a cheap phone must parse.
 *
 * Rates are counted per room as events are emitted (a client's rate is the sum
 * over its rooms: an upper bound when a device and its area overlap). A room
 * whose own count crosses the budget throttles its members at once, in the
 * event path: under overload the periodic check runs late, and waiting for it
 * let the server queue seconds of frames.
 */
import type { Logger } from '../core/logger.js';
import { BatchGroups } from './batch.js';
import type { LiveClient } from './client.js';
import type { TimeFormatter } from '../core/time.js';
import type { TelemetryMsg } from './format.js';
import { areaRoom, deviceRoom } from './rooms.js';

/** Span over which a client's rate is counted. */
export const RATE_WINDOW_MS = 1000;

/** What the throttle needs of the feed. */
export interface ThrottleHost {
  clients(): Iterable<LiveClient>;
  client(socketId: string): LiveClient | undefined;
  /** Socket ids in a socket.io room. */
  roomMembers(room: string): Iterable<string> | undefined;
  /** Emit one `telemetry` event to a room. */
  emitTelemetry(room: string, msg: TelemetryMsg): void;
  /** The number of throttled clients changed (gauge). */
  throttledChanged(count: number): void;
  logger: Logger;
}

export class Throttle {
  /** Groups of throttled clients with the same subscriptions. */
  readonly groups: BatchGroups;
  /** telemetry events emitted per device/area room since windowStart. */
  private readonly roomCounts = new Map<string, number>();
  private windowStart = Date.now();
  private throttled = 0;
  /** Events one room may see per window before its members are throttled. */
  private readonly budget: number;
  /** Events sent to throttled clients since the last take (metrics). */
  emitted = 0;

  constructor(private readonly host: ThrottleHost, fmt: TimeFormatter, private readonly maxEventRate: number, intervalMs: number) {
    this.budget = Math.ceil((maxEventRate * RATE_WINDOW_MS) / 1000);
    this.groups = new BatchGroups(
      {
        emitBatch: (room, batch) => {
          for (const m of batch) this.host.emitTelemetry(room, m);
          this.emitted += batch.length;
        },
      },
      fmt, intervalMs, Number.MAX_SAFE_INTEGER, 't',
    );
  }

  /** Clients currently throttled. */
  get count(): number { return this.throttled; }

  /** A telemetry event went to these rooms (of single-event clients). */
  counted(rooms: readonly string[]): void {
    const counts = this.roomCounts;
    for (const r of rooms) {
      const n = (counts.get(r) ?? 0) + 1;
      counts.set(r, n);
      if (n === this.budget + 1) this.roomOverBudget(r);
    }
  }

  /**
   * Periodic (the feed's check): throttle clients whose rooms together went
   * over the budget; at the end of each window, release the clients throttled
   * for all of it whose group saw under half the rate, and count anew.
   */
  check(now: number): void {
    if (this.roomCounts.size) {
      for (const c of this.host.clients()) {
        if (c.grouped) continue;
        let n = 0;
        for (const d of c.devices) n += this.roomCounts.get(deviceRoom(d)) ?? 0;
        for (const a of c.areas) n += this.roomCounts.get(areaRoom(a)) ?? 0;
        if (n > this.budget) this.throttle(c, n);
      }
    }
    const elapsed = now - this.windowStart;
    if (elapsed < RATE_WINDOW_MS) return;
    if (this.throttled) {
      const low = ((this.maxEventRate / 2) * elapsed) / 1000;
      for (const c of [...this.host.clients()]) {
        if (c.throttled && c.throttledSince <= this.windowStart && (c.batchGroup?.pushed ?? 0) < low) this.release(c);
      }
    }
    for (const g of this.groups.groups()) g.pushed = 0;
    this.roomCounts.clear();
    this.windowStart = now;
  }

  /** The client is gone. */
  forget(c: LiveClient): void {
    if (!c.throttled) return;
    this.groups.release(c);
    this.set(c, false);
  }

  stop(): void {
    this.groups.flush();
    this.groups.stop();
  }

  private roomOverBudget(room: string): void {
    const members = this.host.roomMembers(room);
    if (!members) return;
    for (const id of [...members]) {
      const c = this.host.client(id);
      if (c && !c.grouped) this.throttle(c, this.roomCounts.get(room) ?? 0);
    }
  }

  private throttle(c: LiveClient, seen: number): void {
    if (!c.slow) for (const r of c.subscriptionRooms()) void c.socket.leave(r); // a backed-up client is in no room
    this.set(c, true);
    c.throttledSince = Date.now();
    const [, next] = this.groups.assign(c);
    if (!c.slow && next) void c.socket.join(next.room);
    this.host.logger.debug({ client: c.id, principal: c.principal.id, events: seen }, 'live client over maxEventRate: throttled');
  }

  private release(c: LiveClient): void {
    const g = c.batchGroup;
    if (g) this.groups.flushGroup(g); // what it holds goes out before the client's rooms send anything newer
    this.groups.release(c);
    this.set(c, false);
    if (c.slow) return; // SlowClients.recover() (slow.ts) joins c.rooms()
    if (g) void c.socket.leave(g.room);
    const rooms = c.subscriptionRooms();
    if (rooms.length) void c.socket.join(rooms);
    this.host.logger.debug({ client: c.id, principal: c.principal.id }, 'live client back under maxEventRate: single events again');
  }

  private set(c: LiveClient, on: boolean): void {
    if (c.throttled === on) return;
    c.throttled = on;
    this.throttled += on ? 1 : -1;
    this.host.throttledChanged(this.throttled);
  }
}

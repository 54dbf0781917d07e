/**
 * Slow clients: every `checkIntervalMs` each client's buffers are inspected.
 * One that is backed up (too many packets in engine.io's buffer or bytes in
 * its socket's buffer) leaves its rooms and from then on only the latest value
 * per (device, field) is kept for it; when its buffers drain, the coalesced
 * updates are sent and it rejoins its rooms. One that holds more than
 * `maxPendingEntries` entries or stays backed up longer than `maxLagMs` is
 * dropped. Its memory is thus bounded by the high-water marks plus the cap.
 */
import type { Logger } from '../core/logger.js';
import type { LiveClient } from './client.js';
import type { TimeFormatter } from '../core/time.js';
import type { EventCounts, LiveMetrics } from './metrics.js';
import type { LiveFeedSettings } from './options.js';
import { Pending } from './pending.js';
import type { AncestorCache } from './rooms.js';

export class SlowClients {
  /** Backed-up clients: out of their rooms, their updates coalesced into `pending`. */
  readonly clients = new Set<LiveClient>();
  /** Over the entry cap, to be dropped on the next turn of the event loop. */
  private readonly dropping = new Set<LiveClient>();
  /** Clients the server disconnected (stats). */
  dropped = 0;

  constructor(
    /** Every connected client, by socket id (the feed's). */
    private readonly all: ReadonlyMap<string, LiveClient>,
    private readonly settings: LiveFeedSettings,
    private readonly fmt: TimeFormatter,
    private readonly ancestors: AncestorCache,
    private readonly counts: EventCounts,
    private readonly metrics: LiveMetrics | null,
    private readonly logger: Logger,
  ) {}

  /** Periodic: mark backed-up clients slow, send drained ones what they missed, drop those that lag too long. */
  inspect(now: number): void {
    const s = this.settings;
    const drop: Array<[LiveClient, string]> = [];
    for (const c of this.all.values()) {
      const b = c.backlog();
      if (!c.slow) {
        if (b.packets > s.highWaterPackets || b.bytes > s.highWaterBytes) this.markSlow(c, now);
      } else if (b.packets === 0 && b.writable && b.bytes <= s.lowWaterBytes) {
        this.recover(c);
      } else if (now - c.slowSince > s.maxLagMs) {
        drop.push([c, 'lagging']);
      }
    }
    for (const [c, reason] of drop) this.drop(c, reason);
  }

  /** Backed-up clients that see this device get the event coalesced into their pending latest values (callers check clients.size first: no closure on the hot path). */
  coalesce(e: { deviceId: string; area: string }, add: (p: Pending) => void, broadcastsOnly = false): void {
    const codes = this.ancestors.codes(e.area);
    for (const c of this.clients) {
      if ((broadcastsOnly && !c.canBroadcast) || !c.matches(e.deviceId, codes)) continue;
      if (this.overCap(c)) continue;
      add(c.pending!);
      this.counts.coalesced++;
    }
  }

  /** The client disconnected. */
  forget(c: LiveClient): void {
    if (this.clients.delete(c)) this.metrics?.slowClients.set(this.clients.size);
    c.pending = null;
  }

  drop(c: LiveClient, reason: string): void {
    if (!this.all.has(c.id)) return;
    this.dropped++;
    this.metrics?.dropped.inc({ reason });
    this.logger.warn({ client: c.id, principal: c.principal.id, reason, pending: c.pending?.entries ?? 0, backlog: c.backlog() }, 'live client dropped');
    this.clients.delete(c);
    c.pending = null;
    this.metrics?.slowClients.set(this.clients.size);
    c.socket.disconnect(true);
    c.terminate();
  }

  /** A backed-up client over its entry cap takes nothing more and is dropped right after this event. */
  private overCap(c: LiveClient): boolean {
    if (c.pending!.entries < this.settings.maxPendingEntries) return false;
    if (!this.dropping.has(c)) {
      this.dropping.add(c);
      setImmediate(() => { this.dropping.delete(c); this.drop(c, 'pending_cap'); });
    }
    return true;
  }

  private markSlow(c: LiveClient, now: number): void {
    c.pending = new Pending();
    c.slowSince = now;
    this.clients.add(c);
    for (const r of c.rooms()) void c.socket.leave(r);
    this.metrics?.slowClients.set(this.clients.size);
    this.logger.debug({ client: c.id, principal: c.principal.id, backlog: c.backlog() }, 'live client backed up: coalescing');
  }

  /** Drained: send what was coalesced, then rejoin the rooms (so nothing newer can overtake it). */
  private recover(c: LiveClient): void {
    const msgs = c.pending!.messages(this.fmt);
    c.pending = null;
    this.clients.delete(c);
    this.metrics?.slowClients.set(this.clients.size);
    if (c.batch) { if (msgs.telemetry.length) c.socket.emit('telemetry.batch', msgs.telemetry); }
    else for (const m of msgs.telemetry) c.socket.emit('telemetry', m);
    for (const m of msgs.status) c.socket.emit('status', m);
    if (c.canBroadcast) for (const m of msgs.broadcast) c.socket.emit('broadcast', m);
    const rooms = c.rooms();
    if (rooms.length) void c.socket.join(rooms);
  }
}

/**
 * The live feed (spec http-api.md "Live feed (socket.io)"): socket.io on the
 * HTTP server, token at the handshake, `subscribe`/`unsubscribe` by devices
 * or areas, `telemetry`, `status` and `broadcast` events for what the caller
 * may see.
 *
 * Fan-out: every client is in one room per subscribed device ("d:ID") and
 * area ("a:CODE"); an event is serialized once and emitted once to the rooms
 * of its device and of its area's ancestor chain (cached), so the hot path has
 * no per-client code of ours.
 *
 * Batched clients (`auth: {token, batch: true}`, see batch.ts) are not in
 * device or area rooms but in one group room per distinct subscription set;
 * their telemetry is buffered per group and emitted as `telemetry.batch`.
 *
 * Throttling (throttle.ts): a single-event client sent more than
 * `maxEventRate` telemetry events per second gets the latest values once per
 * `throttleIntervalMs` through a throttled group instead.
 *
 * Slow clients: every `checkIntervalMs` each client's buffers are inspected.
 * One that is backed up (too many packets in engine.io's buffer or bytes in
 * its socket's buffer) leaves its rooms and from then on only the latest value
 * per (device, field) is kept for it; when its buffers drain, the coalesced
 * updates are sent and it rejoins its rooms. One that holds more than
 * `maxPendingEntries` entries or stays backed up longer than `maxLagMs` is
 * dropped. Its memory is thus bounded by the high-water marks plus the cap.
 */
import type { Server as HttpServer } from 'node:http';
import { Server, type Namespace, type Socket } from 'socket.io';
import type { Policy } from '../auth/policy.js';
import type { Authenticator, Principal } from '../auth/types.js';
import type { EventBus, KengEvents } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import { BatchGroups, type BatchGroup } from './batch.js';
import { LiveClient } from './client.js';
import { broadcastMsg, statusMsg, telemetryMsg, timeFormatter, type TimeFormatter } from './format.js';
import { authenticateHandshake, refusal } from './handshake.js';
import { liveMetrics, type LiveMetrics } from './metrics.js';
import { resolveSettings, type LiveFeedSettings } from './options.js';
import { Pending } from './pending.js';
import { Throttle } from './throttle.js';
import { AncestorCache, NO_BROADCAST_ROOM, areaRoom, deviceRoom } from './rooms.js';
import { checkScope, parseSubscribe, validation, type LiveError, type SubscribeRequest } from './subscriptions.js';

/** What the feed needs of the device registry. */
export interface LiveRegistry {
  getDevice(id: string): { id: string; area: string } | undefined;
  getArea(code: string): { parent: string | null } | undefined;
  listDevices(filter?: { area?: string }): Array<{ id: string }>;
}

export interface LiveFeedOptions {
  bus: EventBus;
  authenticator: Authenticator;
  policy: Policy;
  registry: LiveRegistry;
  logger: Logger;
  metrics?: Metrics;
  options?: Partial<LiveFeedSettings>;
  /** The HTTP server to attach to in start(), when attach() was not called (e.g. `() => api.fastify.server`). */
  httpServer?: () => HttpServer;
}

export type SubscribeAck = { ok: true; devices: number } | { error: LiveError };

export interface LiveStats {
  clients: number;
  slowClients: number;
  /** Single-event clients currently throttled (over maxEventRate). */
  throttledClients: number;
  /** Coalesced entries held for each backed-up client, by socket id. */
  pending: Record<string, number>;
  maxPending: number;
  /** Largest engine.io packet backlog and socket byte backlog over all clients. */
  maxBufferedPackets: number;
  maxBufferedBytes: number;
  dropped: number;
}

export class LiveFeed implements Component {
  readonly name = 'live';
  readonly settings: LiveFeedSettings;
  private io: Server | null = null;
  private nsp: Namespace | null = null;
  private readonly clients = new Map<string, LiveClient>();
  private readonly slow = new Set<LiveClient>();
  private readonly dropping = new Set<LiveClient>();
  private readonly ancestors: AncestorCache;
  private readonly fmt: TimeFormatter;
  private readonly metrics: LiveMetrics | null;
  private readonly unsubscribe: Array<() => void> = [];
  private timer: NodeJS.Timeout | null = null;
  private lastReauth = 0;
  private started = false;
  private stopped = false;
  private droppedCount = 0;
  // Counted on the hot path, added to prom-client instruments on each check.
  private readonly counts = { telemetry: 0, status: 0, broadcast: 0, coalesced: 0 };
  private readonly batches: BatchGroups;
  /** Single-event clients over maxEventRate (throttle.ts). */
  private readonly throttle: Throttle;

  constructor(private readonly o: LiveFeedOptions) {
    this.settings = resolveSettings(o.options);
    this.ancestors = new AncestorCache(o.registry);
    this.fmt = timeFormatter(this.settings.tz);
    this.metrics = o.metrics ? liveMetrics(o.metrics.registry) : null;
    this.batches = new BatchGroups(
      {
        emitBatch: (room, batch) => { this.nsp?.to(room).emit('telemetry.batch', batch); },
        batchWaited: (ms) => { this.metrics?.batchWait.observe(ms / 1000); },
      },
      this.fmt, this.settings.batchIntervalMs, this.settings.maxBatch,
    );
    this.throttle = new Throttle({
      clients: () => this.clients.values(),
      client: (id) => this.clients.get(id),
      roomMembers: (room) => this.nsp?.adapter.rooms.get(room),
      emitTelemetry: (room, m) => { this.nsp?.to(room).emit('telemetry', m); },
      throttledChanged: (n) => { this.metrics?.throttledClients.set(n); },
      logger: o.logger,
    }, this.fmt, this.settings.maxEventRate, this.settings.throttleIntervalMs);
  }

  /**
   * Attach socket.io to the HTTP server (fastify's `app.server`). Works before
   * or after the server listens; call it once, before or after start().
   */
  attach(server: HttpServer): void {
    if (this.io) throw new Error('LiveFeed already attached');
    if (this.stopped) throw new Error('LiveFeed stopped');
    const s = this.settings;
    const origins = s.corsOrigins;
    const io = new Server(server, {
      path: s.path,
      serveClient: false,
      maxHttpBufferSize: 64 * 1024,
      perMessageDeflate: false,
      httpCompression: false,
      ...(origins.length ? { cors: { origin: origins.includes('*') ? '*' : [...origins], methods: ['GET', 'POST'] } } : {}),
    });
    this.io = io;
    this.nsp = io.of('/');
    this.nsp.use((socket, next) => this.handshake(socket, next));
    this.nsp.on('connection', (socket) => this.onConnection(socket));
  }

  async start(): Promise<void> {
    if (this.started) return;
    if (this.stopped) throw new Error('LiveFeed cannot be restarted');
    this.started = true;
    if (!this.io && this.o.httpServer) this.attach(this.o.httpServer());
    const { bus } = this.o;
    this.unsubscribe.push(
      bus.on('telemetry.accepted', this.onTelemetry),
      bus.on('status', this.onStatus),
      bus.on('broadcast.state', this.onBroadcast),
      bus.on('device.changed', this.onDeviceChanged),
    );
    this.lastReauth = Date.now();
    this.timer = setInterval(() => this.check(), this.settings.checkIntervalMs);
    this.timer.unref();
  }

  /** Unsubscribes from the bus and disconnects every client (the HTTP server itself is left to its owner). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const off of this.unsubscribe.splice(0)) off();
    this.batches.flush();
    this.batches.stop();
    this.throttle.stop();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const io = this.io;
    if (!io) return;
    const all = [...this.clients.values()];
    for (const c of all) c.socket.disconnect(true);
    const until = Date.now() + this.settings.stopGraceMs;
    while (io.engine.clientsCount > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    for (const c of all) c.terminate();
    // Not io.close(): that would close the HTTP server, which belongs to the API.
    io.engine.close();
    this.flushCounts();
    this.metrics?.clients.set(0);
    this.metrics?.slowClients.set(0);
    this.metrics?.throttledClients.set(0);
  }

  /** Current clients and backlog (tests, diagnostics). */
  stats(): LiveStats {
    const pending: Record<string, number> = {};
    let maxPending = 0;
    for (const c of this.slow) {
      const n = c.pending?.entries ?? 0;
      pending[c.id] = n;
      maxPending = Math.max(maxPending, n);
    }
    let maxBufferedPackets = 0;
    let maxBufferedBytes = 0;
    for (const c of this.clients.values()) {
      const b = c.backlog();
      maxBufferedPackets = Math.max(maxBufferedPackets, b.packets);
      maxBufferedBytes = Math.max(maxBufferedBytes, b.bytes);
    }
    return { clients: this.clients.size, slowClients: this.slow.size, throttledClients: this.throttle.count, pending, maxPending, maxBufferedPackets, maxBufferedBytes, dropped: this.droppedCount };
  }

  // ---- handshake and client requests -------------------------------------

  private handshake(socket: Socket, next: (err?: Error) => void): void {
    const r = authenticateHandshake(socket, this.o.authenticator);
    if (!r.ok) {
      this.metrics?.refused.inc({ reason: r.reason });
      next(r.error);
      return;
    }
    if (this.stopped || this.clients.size >= this.settings.maxClients) {
      this.metrics?.refused.inc({ reason: 'too_many_clients' });
      next(refusal('KENG_ERR_RATE_LIMITED', 'Too many requests: live-feed connection limit reached'));
      return;
    }
    (socket.data as { principal?: Principal; token?: string }).principal = r.principal;
    (socket.data as { token?: string }).token = r.token;
    (socket.data as { batch?: boolean }).batch = (socket.handshake.auth as { batch?: unknown } | undefined)?.batch === true;
    next();
  }

  private onConnection(socket: Socket): void {
    const data = socket.data as { principal: Principal; token: string; batch: boolean };
    const c = new LiveClient(socket, data.principal, data.token, this.o.policy.can(data.principal, 'broadcasts.read'), data.batch);
    this.clients.set(socket.id, c);
    if (!c.canBroadcast) void socket.join(NO_BROADCAST_ROOM);
    this.metrics?.connects.inc();
    this.metrics?.clients.set(this.clients.size);
    socket.on('subscribe', (raw: unknown, ack?: unknown) => this.reply(ack, this.subscribe(c, raw)));
    socket.on('unsubscribe', (raw: unknown, ack?: unknown) => this.reply(ack, this.unsubscribeReq(c, raw)));
    socket.once('disconnect', () => {
      this.clients.delete(socket.id);
      if (c.throttled) this.throttle.forget(c);
      else this.batches.release(c);
      if (this.slow.delete(c)) this.metrics?.slowClients.set(this.slow.size);
      c.pending = null;
      this.metrics?.clients.set(this.clients.size);
    });
  }

  private reply(ack: unknown, answer: SubscribeAck): void {
    if (typeof ack === 'function') (ack as (a: SubscribeAck) => void)(answer);
  }

  private subscribe(c: LiveClient, raw: unknown): SubscribeAck {
    const parsed = parseSubscribe(raw);
    if (!parsed.ok) return { error: parsed.error };
    const checked = checkScope(c.principal, parsed.value, { policy: this.o.policy, registry: this.o.registry });
    if (!checked.ok) return { error: checked.error };
    const req = checked.value;
    const added = req.devices.filter((d) => !c.devices.has(d)).length + req.areas.filter((a) => !c.areas.has(a)).length;
    if (c.subscriptionCount + added > this.settings.maxSubscriptions) {
      return { error: validation(`at most ${this.settings.maxSubscriptions} devices and areas per client`).error };
    }
    const rooms: string[] = [];
    for (const d of req.devices) if (!c.devices.has(d)) { c.devices.add(d); rooms.push(deviceRoom(d)); }
    for (const a of req.areas) if (!c.areas.has(a)) { c.areas.add(a); rooms.push(areaRoom(a)); }
    if (c.grouped) this.regroup(c);
    else if (!c.slow && rooms.length) void c.socket.join(rooms);
    return { ok: true, devices: this.deviceCount(c) };
  }

  private unsubscribeReq(c: LiveClient, raw: unknown): SubscribeAck {
    const parsed = parseSubscribe(raw);
    if (!parsed.ok) return { error: parsed.error };
    this.remove(c, parsed.value);
    return { ok: true, devices: this.deviceCount(c) };
  }

  private remove(c: LiveClient, req: SubscribeRequest): void {
    if (c.grouped) {
      for (const d of req.devices) c.devices.delete(d);
      for (const a of req.areas) c.areas.delete(a);
      this.regroup(c);
      return;
    }
    for (const d of req.devices) if (c.devices.delete(d)) void c.socket.leave(deviceRoom(d));
    for (const a of req.areas) if (c.areas.delete(a)) void c.socket.leave(areaRoom(a));
  }

  /** The group set a client is delivered through: batched, throttled, or none (device and area rooms). */
  private groupsOf(c: LiveClient): BatchGroups | null {
    return c.batch ? this.batches : c.throttled ? this.throttle.groups : null;
  }

  /** A batched or throttled client's subscriptions (or right to see broadcasts) changed: move it to the matching group's room. */
  private regroup(c: LiveClient): void {
    const [old, next] = this.groupsOf(c)!.assign(c);
    if (old === next || c.slow) return; // a backed-up client joins c.rooms() when it recovers
    if (old) void c.socket.leave(old.room);
    if (next) void c.socket.join(next.room);
  }

  /** Distinct devices the client's subscriptions currently cover. */
  private deviceCount(c: LiveClient): number {
    const ids = new Set(c.devices);
    for (const a of c.areas) for (const d of this.o.registry.listDevices({ area: a })) ids.add(d.id);
    return ids.size;
  }

  // ---- bus events (the hot path) -----------------------------------------

  /** Rooms of a device event that have members, or null. */
  private targets(deviceId: string, areaRooms: readonly string[]): string[] | null {
    const rooms = this.nsp!.adapter.rooms;
    let out: string[] | null = null;
    const d = deviceRoom(deviceId);
    if (rooms.has(d)) out = [d];
    for (const r of areaRooms) if (rooms.has(r)) (out ??= []).push(r);
    return out;
  }

  private readonly onTelemetry = (e: KengEvents['telemetry']): void => {
    if (!this.nsp) return;
    const areaRooms = this.ancestors.rooms(e.area);
    const targets = this.targets(e.deviceId, areaRooms);
    if (targets) {
      this.nsp.to(targets).emit('telemetry', telemetryMsg(e, this.fmt));
      this.counts.telemetry++;
      this.throttle.counted(targets);
    }
    if (this.batches.size) this.batches.forEvent(deviceRoom(e.deviceId), areaRooms, (g) => this.batches.push(g, e));
    const tg = this.throttle.groups;
    if (tg.size) tg.forEvent(deviceRoom(e.deviceId), areaRooms, (g) => tg.push(g, e));
    if (this.slow.size) this.coalesce(e, (p) => p.addTelemetry(e));
  };

  private readonly onStatus = (e: KengEvents['status']): void => {
    if (!this.nsp) return;
    const areaRooms = this.ancestors.rooms(e.area);
    // Plain clients' device/area rooms and batched clients' group rooms hold different sockets: one emit, one encode.
    const rooms = joinRooms(this.targets(e.deviceId, areaRooms), this.groupRooms(e.deviceId, areaRooms, false));
    if (rooms) {
      this.nsp.to(rooms).emit('status', statusMsg(e, this.fmt));
      this.counts.status++;
    }
    if (this.slow.size) this.coalesce(e, (p) => p.addStatus(e));
  };

  private readonly onBroadcast = (e: KengEvents['broadcast.state']): void => {
    if (!this.nsp) return;
    const areaRooms = this.ancestors.rooms(e.area);
    const rooms = joinRooms(this.targets(e.deviceId, areaRooms), this.groupRooms(e.deviceId, areaRooms, true));
    if (rooms) {
      this.nsp.to(rooms).except(NO_BROADCAST_ROOM).emit('broadcast', broadcastMsg(e, this.fmt));
      this.counts.broadcast++;
    }
    if (this.slow.size) this.coalesce(e, (p) => p.addBroadcast(e), true);
  };

  /**
   * Rooms of the batch groups an event of this device targets (only those that
   * may see broadcasts, for broadcast events), each group's pending batch
   * flushed first so the single event does not overtake earlier readings.
   */
  private groupRooms(deviceId: string, areaRooms: readonly string[], broadcastsOnly: boolean): string[] | null {
    let out: string[] | null = null;
    for (const groups of [this.batches, this.throttle.groups]) {
      if (!groups.size) continue;
      groups.forEvent(deviceRoom(deviceId), areaRooms, (g: BatchGroup) => {
        if (broadcastsOnly && !g.canBroadcast) return;
        groups.flushGroup(g);
        (out ??= []).push(g.room);
      });
    }
    return out;
  }

  /** Backed-up clients that see this device get the event coalesced into their pending latest values (callers check slow.size first: no closure on the hot path). */
  private coalesce(e: { deviceId: string; area: string }, add: (p: NonNullable<LiveClient['pending']>) => void, broadcastsOnly = false): void {
    const codes = this.ancestors.codes(e.area);
    for (const c of this.slow) {
      if ((broadcastsOnly && !c.canBroadcast) || !c.matches(e.deviceId, codes)) continue;
      if (this.overCap(c)) continue;
      add(c.pending!);
      this.counts.coalesced++;
    }
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

  /** A deleted device, or one moved out of a client's scope, is no longer watched by id. */
  private readonly onDeviceChanged = (e: KengEvents['device.changed']): void => {
    this.ancestors.clear();
    if (e.change === 'created') return;
    const device = this.o.registry.getDevice(e.deviceId);
    for (const c of this.clients.values()) {
      if (!c.devices.has(e.deviceId)) continue;
      if (!device || !this.o.policy.can(c.principal, 'telemetry.read', device.area)) this.remove(c, { devices: [e.deviceId], areas: [] });
    }
  };

  // ---- periodic check: slow clients, drops, token re-check ---------------

  private check(): void {
    const s = this.settings;
    const now = Date.now();
    const drop: Array<[LiveClient, string]> = [];
    for (const c of this.clients.values()) {
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
    this.throttle.check(now);
    if (now - this.lastReauth >= s.reauthIntervalMs) {
      this.lastReauth = now;
      this.reauthenticate();
    }
    this.flushCounts();
  }

  private markSlow(c: LiveClient, now: number): void {
    c.pending = new Pending();
    c.slowSince = now;
    this.slow.add(c);
    for (const r of c.rooms()) void c.socket.leave(r);
    this.metrics?.slowClients.set(this.slow.size);
    this.o.logger.debug({ client: c.id, principal: c.principal.id, backlog: c.backlog() }, 'live client backed up: coalescing');
  }

  /** Drained: send what was coalesced, then rejoin the rooms (so nothing newer can overtake it). */
  private recover(c: LiveClient): void {
    const msgs = c.pending!.messages(this.fmt);
    c.pending = null;
    this.slow.delete(c);
    this.metrics?.slowClients.set(this.slow.size);
    if (c.batch) { if (msgs.telemetry.length) c.socket.emit('telemetry.batch', msgs.telemetry); }
    else for (const m of msgs.telemetry) c.socket.emit('telemetry', m);
    for (const m of msgs.status) c.socket.emit('status', m);
    if (c.canBroadcast) for (const m of msgs.broadcast) c.socket.emit('broadcast', m);
    const rooms = c.rooms();
    if (rooms.length) void c.socket.join(rooms);
  }

  private drop(c: LiveClient, reason: string): void {
    if (!this.clients.has(c.id)) return;
    this.droppedCount++;
    this.metrics?.dropped.inc({ reason });
    this.o.logger.warn({ client: c.id, principal: c.principal.id, reason, pending: c.pending?.entries ?? 0, backlog: c.backlog() }, 'live client dropped');
    this.slow.delete(c);
    c.pending = null;
    this.metrics?.slowClients.set(this.slow.size);
    c.socket.disconnect(true);
    c.terminate();
  }

  /** Tokens revoked or expired since the handshake disconnect their clients; changed scopes prune subscriptions. */
  private reauthenticate(): void {
    this.ancestors.clear();
    for (const c of [...this.clients.values()]) {
      let p: Principal | null = null;
      try { p = this.o.authenticator.authenticate(c.token); } catch { p = null; }
      if (!p) { this.drop(c, 'unauthenticated'); continue; }
      if (p.role === c.principal.role && p.areas.join('\u0000') === c.principal.areas.join('\u0000')) continue;
      c.principal = p;
      const canBroadcast = this.o.policy.can(p, 'broadcasts.read');
      if (canBroadcast !== c.canBroadcast) {
        c.canBroadcast = canBroadcast;
        void (canBroadcast ? c.socket.leave(NO_BROADCAST_ROOM) : c.socket.join(NO_BROADCAST_ROOM));
        if (c.grouped) this.regroup(c);
      }
      const deps = { policy: this.o.policy, registry: this.o.registry };
      const gone: SubscribeRequest = {
        devices: [...c.devices].filter((d) => !checkScope(p!, { devices: [d], areas: [] }, deps).ok),
        areas: [...c.areas].filter((a) => !checkScope(p!, { devices: [], areas: [a] }, deps).ok),
      };
      this.remove(c, gone);
    }
  }

  private flushCounts(): void {
    const m = this.metrics;
    const k = this.counts;
    if (m) {
      if (k.telemetry) m.emitted.inc({ type: 'telemetry' }, k.telemetry);
      if (this.batches.batches) m.emitted.inc({ type: 'telemetry.batch' }, this.batches.batches);
      if (k.status) m.emitted.inc({ type: 'status' }, k.status);
      if (k.broadcast) m.emitted.inc({ type: 'broadcast' }, k.broadcast);
      if (k.coalesced) m.coalesced.inc(k.coalesced);
      if (this.batches.coalesced) m.coalesced.inc(this.batches.coalesced);
      if (this.throttle.emitted) m.emitted.inc({ type: 'telemetry' }, this.throttle.emitted);
      if (this.throttle.groups.coalesced) m.coalesced.inc(this.throttle.groups.coalesced);
    }
    k.telemetry = k.status = k.broadcast = k.coalesced = 0;
    this.batches.batches = this.batches.coalesced = 0;
    this.throttle.emitted = this.throttle.groups.batches = this.throttle.groups.coalesced = 0;
  }
}

function joinRooms(a: string[] | null, b: string[] | null): string[] | null {
  return a && b ? a.concat(b) : (a ?? b);
}

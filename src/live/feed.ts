/**
 * The live feed (docs/live-feed.md): socket.io on the
 * HTTP server, token at the handshake, `subscribe`/`unsubscribe` by devices
 * or areas, `telemetry`, `status`, `broadcast`, `alert` and `alert.rule` events for what the caller
 * may see.
 *
 * This file wires the parts and owns their lifecycle:
 * - connections.ts: handshake, connect and disconnect, token re-check;
 * - membership.ts: subscriptions, and which rooms each client is in;
 * - fanout.ts: bus events to rooms (the hot path);
 * - slow.ts: backed-up clients (coalescing, recovery, drops).
 *
 * Batched clients (`auth: {token, batch: true}`, see batch.ts) are not in
 * device or area rooms but in one group room per distinct subscription set;
 * their telemetry is buffered per group and emitted as `telemetry.batch`.
 *
 * Throttling (throttle.ts): a single-event client sent more than
 * `maxEventRate` telemetry events per second gets the latest values once per
 * `throttleIntervalMs` through a throttled group instead.
 */
import type { Server as HttpServer } from 'node:http';
import { Server, type Namespace } from 'socket.io';
import type { Policy } from '../auth/policy.js';
import type { Authenticator } from '../auth/types.js';
import type { EventBus, KengEvents, TelemetryEvent } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import { BatchGroups } from './batch.js';
import type { LiveClient } from './client.js';
import { Connections } from './connections.js';
import { FanOut } from './fanout.js';
import { timeFormatter, type TimeFormatter } from '../core/time.js';
import { Membership } from './membership.js';
import { liveMetrics, type EventCounts, type LiveMetrics } from './metrics.js';
import { resolveSettings, type LiveFeedSettings } from './options.js';
import { AncestorCache } from './rooms.js';
import { SlowClients } from './slow.js';
import type { LiveRegistry } from './subscriptions.js';
import { Throttle } from './throttle.js';

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
  private readonly ancestors: AncestorCache;
  private readonly fmt: TimeFormatter;
  private readonly metrics: LiveMetrics | null;
  private readonly unsubscribe: Array<() => void> = [];
  private timer: NodeJS.Timeout | null = null;
  private lastReauth = 0;
  private started = false;
  private stopped = false;
  private readonly counts: EventCounts = { telemetry: 0, status: 0, broadcast: 0, alert: 0, alertRule: 0, coalesced: 0 };
  private readonly batches: BatchGroups;
  /** Single-event clients over maxEventRate (throttle.ts). */
  private readonly throttle: Throttle;
  private readonly slow: SlowClients;
  private readonly membership: Membership;
  private readonly connections: Connections;
  private readonly fanout: FanOut;

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
    this.slow = new SlowClients(this.clients, this.settings, this.fmt, this.ancestors, this.counts, this.metrics, o.logger);
    this.membership = new Membership(this.settings, o.policy, o.registry, this.clients, this.ancestors, this.batches, this.throttle);
    this.connections = new Connections(this.clients, this.settings, o.authenticator, o.policy, this.ancestors, this.membership, this.slow, this.metrics);
    this.fanout = new FanOut(this.ancestors, this.fmt, this.counts, this.batches, this.throttle, this.slow);
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
    this.fanout.attach(this.nsp);
    this.nsp.use((socket, next) => { void this.connections.handshake(socket, next); });
    this.nsp.on('connection', (socket) => this.connections.connect(socket));
  }

  async start(): Promise<void> {
    if (this.started) return;
    if (this.stopped) throw new Error('LiveFeed cannot be restarted');
    this.started = true;
    if (!this.io && this.o.httpServer) this.attach(this.o.httpServer());
    const { bus } = this.o;
    this.unsubscribe.push(
      bus.on('telemetry.accepted', this.fanout.onTelemetry),
      bus.on('status', this.fanout.onStatus),
      bus.on('broadcast.state', this.fanout.onBroadcast),
      bus.on('alert.changed', this.fanout.onAlert),
      bus.on('alert.rule', this.fanout.onAlertRule),
      bus.on('device.changed', this.membership.onDeviceChanged),
    );
    this.lastReauth = Date.now();
    this.timer = setInterval(() => this.check(), this.settings.checkIntervalMs);
    this.timer.unref();
  }

  /**
   * Readings another cluster node committed (src/cluster): shown to this
   * node's clients exactly like local ones. They reach the live view only,
   * never this node's bus, so nothing here acts on them a second time.
   */
  remoteTelemetry(events: readonly TelemetryEvent[]): void {
    if (!this.started || this.stopped) return;
    for (const e of events) this.fanout.onTelemetry(e);
  }

  /**
   * A device connected to another cluster node went online or offline (src/devices/status.ts): shown to
   * this node's clients like a local change, never put on this node's bus.
   */
  remoteStatus(e: KengEvents['status']): void {
    if (!this.started || this.stopped) return;
    this.fanout.onStatus(e);
  }

  /** Unsubscribes from the bus and disconnects every client (the HTTP server itself is left to its owner). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.connections.close();
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
    for (const c of this.slow.clients) {
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
    return { clients: this.clients.size, slowClients: this.slow.clients.size, throttledClients: this.throttle.count, pending, maxPending, maxBufferedPackets, maxBufferedBytes, dropped: this.slow.dropped };
  }

  /** Periodic: slow clients, throttling, token re-check, metrics. */
  private check(): void {
    const now = Date.now();
    this.slow.inspect(now);
    this.throttle.check(now);
    if (now - this.lastReauth >= this.settings.reauthIntervalMs) {
      this.lastReauth = now;
      void this.connections.reauthenticate();
    }
    this.flushCounts();
  }

  private flushCounts(): void {
    const m = this.metrics;
    const k = this.counts;
    if (m) {
      if (k.telemetry) m.emitted.inc({ type: 'telemetry' }, k.telemetry);
      if (this.batches.batches) m.emitted.inc({ type: 'telemetry.batch' }, this.batches.batches);
      if (k.status) m.emitted.inc({ type: 'status' }, k.status);
      if (k.broadcast) m.emitted.inc({ type: 'broadcast' }, k.broadcast);
      if (k.alert) m.emitted.inc({ type: 'alert' }, k.alert);
      if (k.alertRule) m.emitted.inc({ type: 'alert.rule' }, k.alertRule);
      if (k.coalesced) m.coalesced.inc(k.coalesced);
      if (this.batches.coalesced) m.coalesced.inc(this.batches.coalesced);
      if (this.throttle.emitted) m.emitted.inc({ type: 'telemetry' }, this.throttle.emitted);
      if (this.throttle.groups.coalesced) m.coalesced.inc(this.throttle.groups.coalesced);
    }
    k.telemetry = k.status = k.broadcast = k.alert = k.alertRule = k.coalesced = 0;
    this.batches.batches = this.batches.coalesced = 0;
    this.throttle.emitted = this.throttle.groups.batches = this.throttle.groups.coalesced = 0;
  }
}

/**
 * Node leases: presence that expires with its node (docs/cluster.md "Node
 * leases"). Cluster mode only; embedded mode has one node and no lease.
 *
 * - Each node holds a lease in `cluster_nodes` (nodes-schema.ts), renewed every
 *   `renewMs`, valid for `leaseMs`, on PostgreSQL's clock.
 * - Every live node sweeps every `sweepMs`: the device sessions of nodes whose
 *   lease ran out are deleted and those devices written offline in
 *   device_state, in one transaction (lease-sql.ts expireSessions). A row that
 *   another connection claimed meanwhile belongs to that node and is not
 *   touched. The dead nodes' rows are locked `FOR UPDATE SKIP LOCKED`, so
 *   sweepers running at once each take different nodes (or none), and a
 *   second sweep of a swept node finds no rows: cheap, idempotent, done once.
 * - A node whose lease ran out but that was only paused (or cut from
 *   PostgreSQL) finds `swept_at` at its next renewal: the devices it still
 *   holds are offline in the database and have no session row. It CLOSES
 *   those connections (`lost`: PgSessionClaims.dropUnclaimed) rather than
 *   writing them back: the device reconnects (through the balancer, to any
 *   node) and its claim and presence are made again by the one path that
 *   decides who holds a device (the claim at CONNECT). Writing rows back from
 *   this node's memory could undo what happened while it was away (the device
 *   may have connected to another node and left it again), and a node paused
 *   that long likely holds half-dead TCP connections anyway.
 * - A process that starts with a node id whose previous process died (or
 *   stopped) removes that process's session rows, by the same statement,
 *   limited to epochs handed out before it started (sessions-schema.ts). When
 *   the previous row's lease still runs, it cannot tell a quick restart from
 *   a second process misconfigured with the same node id: it waits for that
 *   lease to run out without being renewed by anyone else.
 * - Two processes with one node id overwrite each other's `instance`: each
 *   notices at its next renewal, logs an error and counts it; neither clears
 *   the other's sessions.
 * - A clean stop ends the lease at once (after the broker released the sessions).
 * - Renewal failures (PostgreSQL away) are counted and shown in /readyz's
 *   `nodeLease` detail, which does not fail readiness for that (the `telemetry`
 *   check already does when PostgreSQL is away). Nothing here throws out of a timer.
 * - The self-fence (lease-fence.ts, `fence`): each successful renewal moves the
 *   deadline until which this node's lease is surely valid, on the monotonic
 *   clock from the renewal's send. Past it, the node is fenced until a renewal
 *   succeeds: the wiring stops its RPC publishes and orphan adoption, closes and
 *   refuses its device connections, and `nodeLease` fails readiness.
 */
import { randomUUID } from 'node:crypto';
import type { Counter, Gauge } from 'prom-client';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import { counterOn, gaugeOn, type Metrics } from '../core/metrics.js';
import { withTimeout } from '../core/async.js';
import { migrate, type Db } from '../storage/sql/index.js';
import * as q from './lease-sql.js';
import type { ExpiredDevice } from './lease-sql.js';
import { SESSION_MIGRATIONS } from './sessions-schema.js';
import { defaultFenceMargin, LeaseFence } from './lease-fence.js';
import type { ClusterNodeInfo, ClusterNodes } from './nodes-view.js';

export interface NodeLeaseTuning {
  /** How long a lease lasts after a renewal (PostgreSQL's clock). */
  leaseMs: number;
  /** Period of renewals: several fit in one lease, so one or two failed renewals lose nothing. */
  renewMs: number;
  /** Period of the sweep of dead nodes' sessions. */
  sweepMs: number;
  /** Bound of one renewal, sweep or list query (the pool's own timeouts are 30 s). */
  queryTimeoutMs: number;
  /** A dead node's row is deleted this long after its lease ran out (renamed or removed nodes). */
  forgetMs: number;
  /** Consecutive failed renewals after which /readyz's `nodeLease` detail says degraded. */
  degradedAfter: number;
  /** Taken off the fence's deadline (lease-fence.ts); default a fifth of leaseMs. */
  fenceMarginMs?: number;
}

/**
 * The defaults (docs/cluster.md "Node leases"): a SIGKILLed node's devices show offline about
 * leaseMs + sweepMs (+ each node's 2 s presence flush for what its views show) after its last renewal.
 */
export const NODE_LEASE_DEFAULTS: NodeLeaseTuning = {
  leaseMs: 10_000, renewMs: 2_000, sweepMs: 2_000, queryTimeoutMs: 5_000, forgetMs: 24 * 3_600_000, degradedAfter: 2,
};

export interface NodeLeasesOptions {
  db: Db<unknown>;
  nodeId: string;
  logger: Logger;
  metrics?: Pick<Metrics, 'registry'>;
  tuning?: Partial<NodeLeaseTuning>;
  /** Devices this node's sweep wrote offline (the registry's views and the live feed). */
  expired?: (devices: readonly ExpiredDevice[]) => void;
  /** This node's lease ran out and its sessions were swept: close the connections without a session row. */
  lost?: () => Promise<number>;
  /** Tests: this process's instance id (default: random). */
  instance?: string;
  /** Tests: the fence's monotonic clock (default performance.now). */
  monotonic?: () => number;
}

interface LeaseMetrics {
  renewals: Counter<'result'>;
  lost: Counter;
  conflicts: Counter;
  sweepErrors: Counter;
  expiredDevices: Counter;
  expiredNodes: Counter;
  alive: Gauge;
}

export class NodeLeases implements Component, ClusterNodes {
  readonly name = 'node-leases';
  readonly mode = 'cluster' as const;
  readonly instance: string;
  /** Until when this node's lease is surely valid (monotonic clock): the wiring asks it and listens to it. */
  readonly fence: LeaseFence;
  private readonly t: NodeLeaseTuning;
  private readonly m: LeaseMetrics;
  private running = false;
  private renewTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private renewing: Promise<void> | null = null;
  private sweeping: Promise<ExpiredDevice[]> | null = null;
  private consecutiveFailures = 0;
  private failures = 0;
  private lastError: string | null = null;
  /** Local clock of the last successful renewal (readiness detail only: the lease itself is on PostgreSQL's clock). */
  private lastRenewAt = 0;
  private leaseUntil: number | null = null;
  private conflict = false;
  /** Devices to mend after a lost lease (retried until `lost` succeeds). */
  private mending = false;
  /** The previous process of this node id, whose sessions are cleared once it is known dead. */
  private predecessor: { maxEpoch: number; leaseUntil: number | null } | null = null;

  constructor(private readonly o: NodeLeasesOptions) {
    this.t = { ...NODE_LEASE_DEFAULTS, ...o.tuning };
    this.instance = o.instance ?? randomUUID();
    this.fence = new LeaseFence({
      leaseMs: this.t.leaseMs, marginMs: this.t.fenceMarginMs ?? defaultFenceMargin(this.t.leaseMs), logger: o.logger,
      ...(o.metrics ? { metrics: o.metrics } : {}), ...(o.monotonic ? { now: o.monotonic } : {}),
    });
    const r = o.metrics?.registry;
    this.m = {
      renewals: counterOn(r, 'keng_cluster_lease_renewals_total', 'Renewals of this node\'s lease in the cluster database, by result (ok, failed)', ['result'] as const),
      lost: counterOn(r, 'keng_cluster_lease_lost_total', 'Times this node found its lease had run out and its device sessions had been swept by another node'),
      conflicts: counterOn(r, 'keng_cluster_lease_conflicts_total', 'Renewals that found another process holding this node id (two nodes configured with one KENG_NODE_ID)'),
      sweepErrors: counterOn(r, 'keng_cluster_lease_sweep_errors_total', 'Sweeps of dead nodes\' sessions that failed (the cluster database did not answer)'),
      expiredDevices: counterOn(r, 'keng_cluster_devices_expired_total', 'Device sessions of dead nodes this node\'s sweeps removed (those devices written offline)'),
      expiredNodes: counterOn(r, 'keng_cluster_nodes_expired_total', 'Dead nodes whose device sessions this node\'s sweeps removed'),
      alive: gaugeOn(r, 'keng_cluster_nodes_alive', 'Nodes with a lease that has not run out, as this node\'s last sweep counted them'),
    };
  }

  get nodeId(): string { return this.o.nodeId; }

  async start(): Promise<void> {
    if (this.running) return;
    // The sweep deletes from device_sessions (created by the session claims' own migration, idempotent).
    await migrate(this.o.db, 'sessions', SESSION_MIGRATIONS);
    await this.renew(true); // at start a failure is fatal (as the other parts' first query is)
    this.running = true;
    this.renewTimer = setInterval(() => { void this.renewSafely(); }, this.t.renewMs);
    this.renewTimer.unref();
    this.sweepTimer = setInterval(() => { this.sweepNow().catch(() => undefined); }, this.t.sweepMs);
    this.sweepTimer.unref();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.renewTimer) clearInterval(this.renewTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.renewTimer = this.sweepTimer = null;
    this.fence.stop();
    await Promise.allSettled([this.renewing, this.sweeping]);
    try {
      await withTimeout(this.o.db.write(async (trx) => q.endLease(trx, this.o.nodeId, this.instance, await q.dbNow(trx))), this.t.queryTimeoutMs);
      this.o.logger.info({ nodeId: this.o.nodeId }, 'node lease ended');
    } catch (err) {
      // The lease then runs out by itself within leaseMs: the same outcome, later.
      this.o.logger.warn({ err: (err as Error).message }, 'could not end this node\'s lease; it runs out by itself');
    }
  }

  /** Nodes with a lease that has not run out (this one included while it renews), sorted. */
  async liveNodeIds(): Promise<string[]> {
    return withTimeout(this.o.db.snapshot((trx) => q.aliveNodeIds(trx)), this.t.queryTimeoutMs);
  }

  /** Every node known to the cluster database, with its lease state and the device sessions it holds. */
  async list(): Promise<ClusterNodeInfo[]> {
    const { now, rows } = await withTimeout(this.o.db.snapshot((trx) => q.listNodes(trx)), this.t.queryTimeoutMs);
    return rows.map((r) => ({
      nodeId: r.node_id,
      state: r.stopped_at !== null ? 'stopped' as const : r.lease_until >= now ? 'alive' as const : 'expired' as const,
      self: r.node_id === this.o.nodeId && r.instance === this.instance,
      startedAt: Number(r.started_at), renewedAt: Number(r.renewed_at), leaseUntil: Number(r.lease_until),
      sweptAt: r.swept_at === null ? null : Number(r.swept_at), stoppedAt: r.stopped_at === null ? null : Number(r.stopped_at),
      devices: r.devices,
    }));
  }

  /**
   * For /readyz: ok unless fenced (one failed renewal must not take the node out; PostgreSQL away fails `telemetry`);
   * fenced, the balancer must drain it: it sends no command and refuses devices.
   */
  report(): { ok: boolean; detail: Record<string, unknown> } {
    const degraded = this.consecutiveFailures >= this.t.degradedAfter || this.conflict;
    const fenced = this.fence.isFenced();
    return {
      ok: !fenced,
      detail: {
        ...(fenced ? { fenced: 'this node\'s lease was not renewed in time: it sends no command and refuses devices until a renewal succeeds' } : {}),
        fenceRemainingMs: this.fence.remainingMs(),
        nodeId: this.o.nodeId, leaseUntilMs: this.leaseUntil, renewFailures: this.failures, consecutiveFailures: this.consecutiveFailures,
        lastRenewAgoMs: this.lastRenewAt === 0 ? null : Date.now() - this.lastRenewAt,
        ...(this.lastError !== null && this.consecutiveFailures > 0 ? { lastError: this.lastError } : {}),
        ...(this.conflict ? { conflict: 'another process renews this node id (KENG_NODE_ID must differ per node)' } : {}),
        ...(degraded ? { degraded: true } : {}),
      },
    };
  }

  /** One sweep (also run by the timer); resolves with the devices it wrote offline. */
  sweepNow(): Promise<ExpiredDevice[]> {
    if (this.sweeping) return this.sweeping;
    this.sweeping = this.sweep().finally(() => { this.sweeping = null; });
    return this.sweeping;
  }

  /** One renewal (also run by the timer). Throws when the database did not answer. */
  renewNow(): Promise<void> {
    if (this.renewing) return this.renewing;
    this.renewing = this.renew(false).finally(() => { this.renewing = null; });
    return this.renewing;
  }

  private async renewSafely(): Promise<void> {
    if (this.renewing) {
      // The previous renewal still hangs (a black-holed network): that is a failure too; never a second one at once.
      this.failed(new Error('the previous renewal has not answered'));
      return;
    }
    try { await this.renewNow(); } catch { /* counted in renew() */ }
  }

  private failed(err: unknown): void {
    this.failures++;
    this.consecutiveFailures++;
    this.lastError = (err as Error).message;
    this.m.renewals.inc({ result: 'failed' });
    if (this.consecutiveFailures === this.t.degradedAfter) {
      this.o.logger.warn({ err: this.lastError, nodeId: this.o.nodeId }, 'could not renew this node\'s lease; its devices are written offline by the other nodes if this lasts');
    }
  }

  private async renew(first: boolean): Promise<void> {
    let out: { now: number; prev: q.NodeRow | undefined; epoch: number | null };
    // Before the request leaves: PostgreSQL's now in the lease is later, so the fence's deadline is early.
    const sentAt = this.fence.mark();
    try {
      out = await withTimeout(this.o.db.write(async (trx) => {
        const now = await q.dbNow(trx);
        const prev = await q.lockOwnRow(trx, this.o.nodeId);
        await q.upsertLease(trx, this.o.nodeId, this.instance, now, this.t.leaseMs);
        return { now, prev, epoch: first ? await q.lastEpoch(trx) : null };
      }), this.t.queryTimeoutMs);
    } catch (err) {
      if (first) throw err;
      this.failed(err);
      throw err;
    }
    const { now, prev } = out;
    if (this.consecutiveFailures >= this.t.degradedAfter) this.o.logger.info({ nodeId: this.o.nodeId }, 'node lease renewed again');
    this.consecutiveFailures = 0;
    this.lastRenewAt = Date.now();
    this.leaseUntil = now + this.t.leaseMs;
    this.m.renewals.inc({ result: 'ok' });
    this.fence.renewed(sentAt);
    if (first) this.started(prev, now, out.epoch!);
    else this.checked(prev, now);
    await this.clearPredecessor(now);
    if (this.mending) await this.mend();
  }

  /** The first renewal: who held this node id before this process. */
  private started(prev: q.NodeRow | undefined, now: number, epoch: number): void {
    // Rows of this node id claimed before this process started are its predecessor's (or a pre-lease version's).
    const dead = prev === undefined || prev.stopped_at !== null || Number(prev.lease_until) < now;
    this.predecessor = { maxEpoch: epoch, leaseUntil: dead ? null : Number(prev.lease_until) };
    if (!dead) {
      this.o.logger.warn({ nodeId: this.o.nodeId, leaseUntil: Number(prev.lease_until) - now },
        'the previous process of this node id still has a lease: a restart after a crash, or another process with the same KENG_NODE_ID; its device sessions are cleared when its lease runs out unrenewed');
    }
  }

  /** A later renewal: is the lease still this process's, and was it swept meanwhile? */
  private checked(prev: q.NodeRow | undefined, now: number): void {
    if (prev !== undefined && prev.instance !== this.instance) {
      this.m.conflicts.inc();
      if (!this.conflict) {
        this.o.logger.error({ nodeId: this.o.nodeId, other: prev.instance },
          'another process renews this node id: two nodes are configured with one KENG_NODE_ID; give each node its own');
      }
      this.conflict = true;
      this.predecessor = null; // it is alive: its sessions are never cleared from here
      return;
    }
    if (prev === undefined || prev.swept_at !== null) {
      this.m.lost.inc();
      this.o.logger.warn({ nodeId: this.o.nodeId, lateMs: prev ? now - Number(prev.lease_until) : null },
        'this node\'s lease ran out and its device sessions were swept by another node: closing the connections it still holds so they reconnect');
      this.mending = true;
    } else if (Number(prev.lease_until) < now) {
      this.o.logger.info({ nodeId: this.o.nodeId, lateMs: now - Number(prev.lease_until) }, 'node lease renewed after it had run out (not swept)');
    }
  }

  private async mend(): Promise<void> {
    try {
      const closed = await (this.o.lost?.() ?? Promise.resolve(0));
      this.mending = false;
      this.o.logger.info({ closed }, 'closed the connections whose sessions were swept while this node\'s lease had run out');
    } catch (err) {
      this.o.logger.warn({ err: (err as Error).message }, 'could not yet close the connections swept while this node\'s lease had run out; retried at the next renewal');
    }
  }

  /** Once the predecessor is known dead: its session rows go as a dead node's would. */
  private async clearPredecessor(now: number): Promise<void> {
    const p = this.predecessor;
    if (p === null || (p.leaseUntil !== null && now <= p.leaseUntil) || this.conflict) return;
    try {
      const devices = await withTimeout(this.o.db.write((trx) => q.expireSessions(trx, [this.o.nodeId], p.maxEpoch)), this.t.queryTimeoutMs);
      this.predecessor = null;
      if (devices.length) {
        this.m.expiredDevices.inc(devices.length);
        this.o.logger.info({ devices: devices.length }, 'cleared the device sessions left by the previous process of this node id');
        this.o.expired?.(devices);
      }
    } catch (err) {
      this.o.logger.debug({ err: (err as Error).message }, 'could not clear the previous process\'s device sessions; retried');
    }
  }

  private async sweep(): Promise<ExpiredDevice[]> {
    let out: { devices: ExpiredDevice[]; nodes: string[]; alive: number };
    try {
      out = await withTimeout(this.o.db.write(async (trx) => {
        const now = await q.dbNow(trx);
        const alive = await q.countAlive(trx, now);
        const dead = await q.lockDeadNodes(trx, now, this.o.nodeId);
        if (dead.length === 0) return { devices: [], nodes: [], alive };
        const devices = await q.expireSessions(trx, dead);
        const nodes = [...new Set(devices.map((d) => d.nodeId))].sort();
        await q.markSwept(trx, nodes, now);
        await q.forgetNodes(trx, dead, now, this.t.forgetMs);
        return { devices, nodes, alive };
      }), this.t.queryTimeoutMs);
    } catch (err) {
      this.m.sweepErrors.inc();
      this.o.logger.debug({ err: (err as Error).message }, 'sweep of dead nodes failed');
      throw err;
    }
    this.m.alive.set(out.alive);
    if (out.devices.length) {
      this.m.expiredDevices.inc(out.devices.length);
      this.m.expiredNodes.inc(out.nodes.length);
      this.o.logger.warn({ nodes: out.nodes, devices: out.devices.length }, 'node lease ran out: its device sessions removed and its devices written offline');
      this.o.expired?.(out.devices);
    }
    return out.devices;
  }
}

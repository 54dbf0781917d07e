/**
 * One MQTT session per device across cluster nodes (docs/cluster.md "One MQTT
 * session per device"): the claims, in the cluster database's
 * `device_sessions` table (sessions-schema.ts).
 *
 * - claim(): after authentication, before the CONNACK, the accepting node takes
 *   the device's row with one upsert (node_id = this node, a new, larger epoch:
 *   sessions-schema.ts) and
 *   tells the other nodes on the cluster bus (fast path, best effort).
 * - A node that hears of a later claim of a device it holds closes that
 *   connection (remoteClaim()).
 * - Reconciliation (the safe path, every `reconcileMs`): one query asks which
 *   of the devices this node holds now have a row of another node or another
 *   epoch, and closes those. So a takeover completes without Redis, within
 *   about reconcileMs.
 * - release(): a connection that ends deletes its row only while it is still
 *   this claim's (node and epoch): a later claim is never undone. Releases are
 *   batched (one DELETE per burst, e.g. when a node stops with all its devices).
 * - A row whose holder is gone (SIGKILL) stays until the device's next claim
 *   overwrites it, or until the node leases' sweep removes it once that node's
 *   lease ran out (node-leases.ts). A missing row is not a reason to close in
 *   reconciliation: only a LATER claim takes a session away. The exceptions are
 *   dropUnclaimed(), run when this node learns that its own rows were swept,
 *   and dropAll(), run when this node fences itself (its lease not renewed in
 *   time, lease-fence.ts): then it also refuses every CONNECT until renewed.
 *
 * A claim whose query outlives the timeout refuses the connect (broker side);
 * if it commits later anyway, its row is released at once so that it cannot
 * take the session from a connection accepted elsewhere meanwhile.
 */
import { sql } from 'kysely';
import type { Counter, Histogram } from 'prom-client';
import type { SessionClaims } from '../broker/index.js';
import type { Clock } from '../core/clock.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import { counterOn, histogramOn, type Metrics } from '../core/metrics.js';
import { withTimeout } from '../core/async.js';
import { migrate, type Db } from '../storage/sql/index.js';
import type { LeaseFencePort } from './lease-fence.js';
import type { SessionClaimNotice } from './port.js';
import { SESSION_MIGRATIONS } from './sessions-schema.js';

export interface SessionClaimTuning {
  /** How long a CONNECT waits for its claim before it is refused with 3 (server unavailable). */
  claimTimeoutMs: number;
  /** Period of the reconciliation query. */
  reconcileMs: number;
  /** Bound of one reconciliation or release query (the pool's own timeouts are 30 s). */
  queryTimeoutMs: number;
}

export const SESSION_CLAIM_DEFAULTS: SessionClaimTuning = { claimTimeoutMs: 5_000, reconcileMs: 2_000, queryTimeoutMs: 5_000 };

export interface PgSessionClaimsOptions {
  db: Db<unknown>;
  nodeId: string;
  /** Closes this node's connection of claim `epoch` of the device, if it is still here (the broker). */
  close: (deviceId: string, epoch: number) => boolean;
  /** Tells the other nodes (the cluster bus; best effort). */
  announce: (deviceId: string, epoch: number) => void;
  logger: Logger;
  clock: Clock;
  metrics?: Pick<Metrics, 'registry'>;
  tuning?: Partial<SessionClaimTuning>;
  /** This node's self-fence (NodeLeases.fence): while it is not valid, no claim is made (CONNECT refused with 3). */
  fence?: LeaseFencePort;
}

export class PgSessionClaims implements SessionClaims, Component {
  readonly name = 'session-claims';
  readonly active = true;
  private readonly t: SessionClaimTuning;
  /** The claims this node holds: device → epoch of its connection here. */
  private readonly held = new Map<string, number>();
  private pendingRelease = new Map<string, number>();
  private flushing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private reconciling: Promise<void> | null = null;
  private running = false;
  private readonly takenOver: Counter<'path'>;
  private readonly claims: Counter<'result'>;
  private readonly claimSeconds: Histogram;
  private readonly reconcileErrors: Counter;

  constructor(private readonly o: PgSessionClaimsOptions) {
    this.t = { ...SESSION_CLAIM_DEFAULTS, ...o.tuning };
    const r = o.metrics?.registry;
    this.takenOver = counterOn(r, 'keng_cluster_sessions_taken_over_total', 'Device connections this node closed because another node (or a later connection) claimed the device session, by how it learnt it', ['path'] as const);
    this.claims = counterOn(r, 'keng_cluster_session_claims_total', 'Device session claims made by this node at CONNECT, by result', ['result'] as const);
    this.claimSeconds = histogramOn(r, 'keng_cluster_session_claim_seconds', 'Time a CONNECT waited for its session claim in the cluster database',
      [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]);
    this.reconcileErrors = counterOn(r, 'keng_cluster_session_reconcile_errors_total', 'Session reconciliations that failed (the cluster database did not answer)');
  }

  async start(): Promise<void> {
    if (this.running) return;
    await migrate(this.o.db, 'sessions', SESSION_MIGRATIONS);
    this.running = true;
    this.timer = setInterval(() => { this.reconcileNow().catch(() => undefined); }, this.t.reconcileMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.reconciling;
    // The broker stopped first: its connections' releases are queued; whatever is still held goes too.
    for (const [d, e] of this.held) this.pendingRelease.set(d, e);
    this.held.clear();
    await this.flushing;
    await this.flush();
  }

  /** True while fenced: the broker refuses CONNECTs without a claim. */
  refusing(): boolean {
    return this.o.fence !== undefined && !this.o.fence.valid();
  }

  async claim(deviceId: string): Promise<number> {
    if (this.refusing()) throw new Error('this node is fenced: its lease was not renewed in time');
    const t0 = this.o.clock.now();
    const q = sql<{ epoch: number }>`
      INSERT INTO device_sessions (device_id, node_id, epoch, connected_at) VALUES (${deviceId}, ${this.o.nodeId}, nextval('device_session_epochs'), ${t0})
      ON CONFLICT (device_id) DO UPDATE SET node_id = EXCLUDED.node_id,
        epoch = GREATEST(device_sessions.epoch + 1, nextval('device_session_epochs')), connected_at = EXCLUDED.connected_at
      RETURNING epoch`.execute(this.o.db.kysely).then((r) => Number(r.rows[0]!.epoch));
    let epoch: number;
    try {
      epoch = await withTimeout(q, this.t.claimTimeoutMs);
    } catch (err) {
      this.claims.inc({ result: 'failed' });
      // Committed after all, too late for its CONNECT: give the row back (only if it is still this claim's).
      q.then((late) => this.release(deviceId, late), () => undefined);
      throw err;
    }
    this.claimSeconds.observe((this.o.clock.now() - t0) / 1000);
    if (this.refusing()) { // fenced while the claim ran: the fence's dropAll() has passed already
      this.claims.inc({ result: 'failed' });
      this.release(deviceId, epoch);
      throw new Error('this node fenced itself while the claim ran');
    }
    this.claims.inc({ result: 'ok' });
    // Two connects of one device racing on this node: the later claim stays held (the broker refuses the other).
    if ((this.held.get(deviceId) ?? 0) < epoch) this.held.set(deviceId, epoch);
    this.o.announce(deviceId, epoch);
    return epoch;
  }

  release(deviceId: string, epoch: number): void {
    const held = this.held.get(deviceId);
    if (held !== undefined && held !== epoch) return; // a newer connection of this node holds it
    this.held.delete(deviceId);
    if ((this.pendingRelease.get(deviceId) ?? 0) < epoch) this.pendingRelease.set(deviceId, epoch);
    if (!this.flushing) this.flushing = this.flushSoon();
  }

  /** The cluster bus: another node claimed `deviceId`; a connection here with an older claim closes. */
  remoteClaim(c: SessionClaimNotice): void {
    const mine = this.held.get(c.deviceId);
    if (mine === undefined || mine >= c.epoch) return;
    this.takeOver(c.deviceId, mine, 'bus');
  }

  /** One reconciliation (also run by the timer): closes the held sessions claimed later elsewhere. */
  reconcileNow(): Promise<void> {
    if (this.reconciling) return this.reconciling;
    this.reconciling = this.reconcile().finally(() => { this.reconciling = null; });
    return this.reconciling;
  }

  private async reconcile(): Promise<void> {
    if (this.held.size === 0) return;
    const ids = [...this.held.keys()];
    const epochs = ids.map((d) => this.held.get(d)!);
    let rows: Array<{ device_id: string; mine: number }>;
    try {
      rows = (await withTimeout(sql<{ device_id: string; mine: number }>`
        SELECT d.device_id, d.mine FROM unnest(${ids}::text[], ${epochs}::bigint[]) AS d(device_id, mine)
        JOIN device_sessions s ON s.device_id = d.device_id
        WHERE s.node_id <> ${this.o.nodeId} OR s.epoch <> d.mine`.execute(this.o.db.kysely), this.t.queryTimeoutMs)).rows;
    } catch (err) {
      // Nothing is closed on doubt: a node cut from the database keeps its devices (it is not ready, HAProxy moves them).
      this.reconcileErrors.inc();
      this.o.logger.debug({ err: (err as Error).message }, 'session reconciliation failed');
      return;
    }
    for (const r of rows) {
      const mine = Number(r.mine);
      if (this.held.get(r.device_id) === mine) this.takeOver(r.device_id, mine, 'reconcile');
    }
  }

  /**
   * This node's lease ran out and another node swept its rows (node-leases.ts): closes every held
   * connection whose claim has no row any more, so the device reconnects and is claimed (and shown
   * online) again. Connections claimed after the sweep keep their rows and stay. Throws when the
   * database does not answer (the caller retries). Returns how many it closed.
   */
  async dropUnclaimed(): Promise<number> {
    if (this.held.size === 0) return 0;
    const ids = [...this.held.keys()];
    const epochs = ids.map((d) => this.held.get(d)!);
    const rows = (await withTimeout(sql<{ device_id: string; mine: number }>`
      SELECT d.device_id, d.mine FROM unnest(${ids}::text[], ${epochs}::bigint[]) AS d(device_id, mine)
      WHERE NOT EXISTS (SELECT 1 FROM device_sessions s WHERE s.device_id = d.device_id AND s.node_id = ${this.o.nodeId} AND s.epoch = d.mine)`
      .execute(this.o.db.kysely), this.t.queryTimeoutMs)).rows;
    return this.closeHeld(rows.map((r) => [r.device_id, Number(r.mine)]), 'lease');
  }

  /**
   * This node fenced itself (lease-fence.ts): closes every connection it holds, without asking the database (it is
   * likely unreachable), so the devices reconnect through the balancer to a node that holds its lease. Their rows go
   * by the connections' releases, or by the sweep of this node once its lease ran out. Returns how many it closed.
   */
  dropAll(): number {
    return this.closeHeld([...this.held], 'fence');
  }

  /** Closes the held connections of these claims (still held as such); their releases then delete only their own rows. */
  private closeHeld(claims: ReadonlyArray<readonly [string, number]>, path: 'lease' | 'fence'): number {
    let closed = 0;
    for (const [deviceId, mine] of claims) {
      if (this.held.get(deviceId) !== mine) continue;
      this.held.delete(deviceId);
      if (this.o.close(deviceId, mine)) {
        closed++;
        this.takenOver.inc({ path });
      }
    }
    return closed;
  }

  private takeOver(deviceId: string, epoch: number, path: 'bus' | 'reconcile'): void {
    // Not ours any more: its connection's end must not delete the new holder's row.
    this.held.delete(deviceId);
    if (this.o.close(deviceId, epoch)) {
      this.takenOver.inc({ path });
      this.o.logger.info({ deviceId, epoch, path }, 'device session claimed by another connection: closed here');
    }
  }

  private async flushSoon(): Promise<void> {
    await new Promise((r) => setImmediate(r));
    await this.flush();
  }

  /** One DELETE for the releases queued so far; again while more arrive. */
  private async flush(): Promise<void> {
    while (this.pendingRelease.size > 0) {
      const batch = this.pendingRelease;
      this.pendingRelease = new Map();
      const ids = [...batch.keys()];
      const epochs = ids.map((d) => batch.get(d)!);
      try {
        await withTimeout(sql`
          DELETE FROM device_sessions s USING unnest(${ids}::text[], ${epochs}::bigint[]) AS d(device_id, epoch)
          WHERE s.device_id = d.device_id AND s.epoch = d.epoch AND s.node_id = ${this.o.nodeId}`.execute(this.o.db.kysely), this.t.queryTimeoutMs);
      } catch (err) {
        // Harmless: a stale row is overwritten by the device's next claim and closes nothing.
        this.o.logger.debug({ err: (err as Error).message, devices: ids.length }, 'could not release device sessions');
      }
    }
    this.flushing = null;
  }
}

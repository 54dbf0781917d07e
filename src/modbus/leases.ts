/**
 * Cluster mode: each Modbus line (a TCP gateway, a serial port) is polled by
 * exactly one node, the holder of its lease in PostgreSQL (lease-repo.ts), and
 * taken over by another node when that one dies. Embedded mode has no leases:
 * the one process polls every line.
 *
 * Every node runs this loop every `claimPeriodMs`:
 *  1. renew its leases, guarded by node and claim (a lease another node took
 *     over is never renewed back); a lease missing from the answer is lost:
 *     its line stops at once;
 *  2. give up lines it no longer has devices for, and serial lines whose port
 *     vanished from this machine;
 *  3. claim lines that are free or whose lease expired, up to its fair share
 *     of the TCP lines, ceil(TCP lines / live nodes), and every free serial
 *     line whose port exists on this machine (only such a node can poll it);
 *  4. when it holds more than its share (a node joined), or at least two more
 *     lines than a live node that holds fewest, give ONE line up per round,
 *     gently: no new poll starts on it, the poll under way finishes, the
 *     connection is closed, then the lease row is deleted. Another node claims
 *     it in its next round; no moment has both nodes polling it. A line given
 *     up is not claimed back by this node for two rounds, so it goes to the
 *     node that needs it.
 *
 * Local deadlines. The database says a lease is valid until T on ITS clock;
 * the node turns that into a deadline on its own monotonic clock: the time it
 * SENT the statement + (T − the database's time in the answer) − the safety
 * margin. Measuring from the send makes the deadline early by the round trip,
 * never late. The margin (SAFETY_MARGIN_MS) covers what the clocks cannot:
 * a timer firing late on a busy event loop, the drift of the two clocks over
 * one lease (microseconds), and the closing of the connection reaching the
 * gateway. So this node's last request on a line leaves before the lease could
 * have expired on the database's clock, and another node can claim it only
 * after that expiry. The poller asks `mayContinue` before every request and
 * `mayStart` before every poll, so a late timer cannot make it poll on.
 *
 * A node cut from PostgreSQL cannot renew: each line stops at its deadline
 * (counted as lost, reason expired), other nodes claim it after the lease,
 * and this node claims again when PostgreSQL answers. Nothing here throws out
 * of the loop.
 */
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { Db } from '../storage/sql/index.js';
import { LineLeaseRepo, type HeldLease } from './lease-repo.js';
import type { LiveNodes } from './live-nodes.js';
import { modbusLeaseMetrics, type ModbusLeaseMetrics } from './metrics.js';
import type { ModbusTransport } from './types.js';

/** How long a lease lasts without renewal (database time): how long a dead node's lines wait before another node takes them. */
export const LEASE_MS = 15_000;
/** How often every node renews, claims and rebalances: a line free or expired is taken within this after it falls free. */
export const CLAIM_PERIOD_MS = 3_000;
/** A node stops polling a line this long before its lease could expire on the database's clock (see the header). */
export const SAFETY_MARGIN_MS = 3_000;

/** Serial adapters named by their own serial number (udev): one path, one adapter, whichever machine it is on. */
const BY_ID = '/dev/serial/by-id/';

/** What the poller asks of line ownership; without it (embedded mode) every line is this node's. */
export interface LineGate {
  /** The lines the poller has devices for, by line key (types.ts lineKey), with a transport of each. Replaces the previous set. */
  want(lines: ReadonlyMap<string, ModbusTransport>): void;
  /** May a poll (or a write) start on the line now? */
  mayStart(lineKey: string): boolean;
  /** May a request of a poll already under way go out now? */
  mayContinue(lineKey: string): boolean;
  /** The poller's side: a line became this node's; must stop now (close its connection); finish its poll and close. */
  attach(hooks: LineHooks): void;
}

export interface LineHooks {
  gained(lineKey: string): void;
  lost(lineKey: string): void;
  drain(lineKey: string): Promise<void>;
}

export interface LineLeasesOptions {
  leaseMs?: number;
  claimPeriodMs?: number;
  safetyMarginMs?: number;
  /** Whether a serial port exists on this machine (tests replace it). */
  portExists?: (path: string) => boolean;
}

export interface LineLeasesDeps {
  db: Db<unknown>;
  nodeId: string;
  liveNodes: LiveNodes;
  logger: Logger;
  metrics: Pick<Metrics, 'registry'>;
  options?: LineLeasesOptions;
}

interface Held {
  epoch: number;
  /** performance.now() after which nothing may be sent on the line. */
  deadline: number;
  timer: NodeJS.Timeout | undefined;
  releasing: boolean;
}

type ReleaseReason = 'rebalance' | 'unused' | 'port_gone' | 'stop';

export class ModbusLineLeases implements Component, LineGate {
  readonly name = 'modbus-leases';
  private readonly repo: LineLeaseRepo;
  private readonly m: ModbusLeaseMetrics;
  private readonly held = new Map<string, Held>();
  private wanted: ReadonlyMap<string, ModbusTransport> = new Map();
  /** Lines this node gave up, and until when (performance.now()) it leaves them to others. */
  private readonly cooldown = new Map<string, number>();
  private hooks: LineHooks | null = null;
  private readonly warned = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | null = null;
  private again = false;
  private running = false;
  private failing = false;
  private readonly releases = new Set<Promise<void>>();
  private readonly leaseMs: number;
  private readonly periodMs: number;
  private readonly marginMs: number;
  private readonly portExists: (path: string) => boolean;

  constructor(private readonly deps: LineLeasesDeps) {
    this.repo = new LineLeaseRepo(deps.db, deps.nodeId);
    this.m = modbusLeaseMetrics(deps.metrics.registry);
    const o = deps.options ?? {};
    this.leaseMs = o.leaseMs ?? LEASE_MS;
    this.periodMs = o.claimPeriodMs ?? CLAIM_PERIOD_MS;
    this.marginMs = o.safetyMarginMs ?? SAFETY_MARGIN_MS;
    this.portExists = o.portExists ?? existsSync;
  }

  get nodeId(): string { return this.deps.nodeId; }

  async start(): Promise<void> {
    if (this.marginMs >= this.leaseMs - this.periodMs) throw new Error('modbus leases: the safety margin must be shorter than the lease minus the claim period');
    this.running = true;
    this.timer = setInterval(() => { void this.kick(); }, this.periodMs);
    this.timer.unref();
    void this.kick();
  }

  /** Stops claiming; lines still held are given up (their polls finished: the poller stops first). */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    // A round stuck on an unreachable database is not waited for (up to its query timeout); what it claims late is given back.
    if (this.round) await Promise.race([this.round.catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    await Promise.allSettled([...this.releases]);
    await Promise.allSettled([...this.held.keys()].map((k) => this.release(k, 'stop')));
    for (const h of this.held.values()) if (h.timer) clearTimeout(h.timer);
    this.held.clear();
    this.m.held.set(0);
  }

  attach(hooks: LineHooks): void { this.hooks = hooks; }

  want(lines: ReadonlyMap<string, ModbusTransport>): void {
    const added = [...lines.keys()].some((k) => !this.wanted.has(k));
    for (const [k, t] of lines) {
      if (t.type !== 'modbus-rtu' || t.path.startsWith(BY_ID) || this.warned.has(k)) continue;
      this.warned.add(k);
      // /dev/ttyUSB0 on two machines may be two different buses: a node would read the other bus's sensors under these ids.
      this.deps.logger.warn({ line: k }, `modbus serial line named by a path that may exist on several nodes; in cluster mode name the adapter by ${BY_ID}… (docs/cluster.md)`);
    }
    this.wanted = new Map(lines);
    if (added) void this.kick(); // a new line need not wait for the next round
  }

  mayStart(lineKey: string): boolean {
    const h = this.held.get(lineKey);
    return h !== undefined && !h.releasing && performance.now() < h.deadline;
  }

  mayContinue(lineKey: string): boolean {
    const h = this.held.get(lineKey);
    return h !== undefined && performance.now() < h.deadline;
  }

  /** The lines this node holds now (tests, logs). */
  heldLines(): string[] { return [...this.held.keys()].sort(); }

  /** Runs a round now (or once more after the one under way); resolves when it is done. */
  kick(): Promise<void> {
    if (!this.running) return Promise.resolve();
    if (this.round) { this.again = true; return this.round; }
    const run = async (): Promise<void> => {
      do {
        this.again = false;
        await this.roundOnce();
      } while (this.again && this.running);
    };
    this.round = run().finally(() => { this.round = null; });
    return this.round;
  }

  private async roundOnce(): Promise<void> {
    try {
      await this.renew();
      if (!this.running) return;
      this.dropUnwanted();
      await this.claimAndBalance();
      if (this.failing) this.deps.logger.info({ lines: this.heldLines() }, 'modbus line leases work again');
      this.failing = false;
    } catch (err) {
      this.m.errors.inc();
      // Said once per outage; the lines stop at their deadlines by themselves.
      if (!this.failing) this.deps.logger.warn({ err }, 'modbus line leases: PostgreSQL did not answer; lines held stop when their leases could expire');
      this.failing = true;
    }
  }

  private async renew(): Promise<void> {
    const mine = [...this.held].map(([lineKey, h]) => ({ lineKey, epoch: h.epoch }));
    if (!mine.length) return;
    const sent = performance.now();
    const renewed = await this.repo.renew(mine, this.leaseMs);
    const got = new Map(renewed.map((l) => [l.lineKey, l]));
    for (const { lineKey, epoch } of mine) {
      const h = this.held.get(lineKey);
      const l = got.get(lineKey);
      if (!h || h.epoch !== epoch) {
        // Given up or stopped (its deadline passed) while the renewal was on its way: free the row now rather than in 15 s.
        if (l) void this.repo.release(lineKey, epoch).catch(() => undefined);
        continue;
      }
      if (l) this.setDeadline(lineKey, h, sent, l);
      else this.lose(lineKey, 'taken_over');
    }
  }

  private dropUnwanted(): void {
    for (const [key, h] of this.held) {
      if (h.releasing) continue;
      const t = this.wanted.get(key);
      if (!t) void this.releaseInBackground(key, 'unused');
      else if (t.type === 'modbus-rtu' && !this.portExists(t.path)) void this.releaseInBackground(key, 'port_gone');
    }
  }

  private async claimAndBalance(): Promise<void> {
    const rows = await this.repo.all();
    const live = new Set([this.deps.nodeId, ...await this.deps.liveNodes.liveNodeIds()]);
    const now = performance.now();
    for (const [k, until] of this.cooldown) if (until <= now) this.cooldown.delete(k);
    const taken = new Set(rows.filter((r) => r.live).map((r) => r.lineKey));
    const tcp = [...this.wanted].filter(([, t]) => t.type === 'modbus-tcp').map(([k]) => k);
    const share = Math.ceil(tcp.length / live.size);
    const heldTcp = tcp.filter((k) => this.held.has(k) && !this.held.get(k)!.releasing);
    const free = (k: string): boolean => !taken.has(k) && !this.held.has(k) && !this.cooldown.has(k);
    const serial = [...this.wanted].filter(([k, t]) => t.type === 'modbus-rtu' && free(k) && this.portExists(t.path)).map(([k]) => k);
    const room = Math.max(0, share - heldTcp.length);
    const candidates = [...serial, ...shuffle(tcp.filter(free)).slice(0, room)];
    if (candidates.length) {
      const sent = performance.now();
      for (const l of await this.repo.claim(candidates, this.leaseMs)) {
        if (!this.running) { void this.repo.release(l.lineKey, l.epoch).catch(() => undefined); continue; }
        const h: Held = { epoch: l.epoch, deadline: 0, timer: undefined, releasing: false };
        this.held.set(l.lineKey, h);
        this.setDeadline(l.lineKey, h, sent, l);
        this.m.claims.inc();
        this.deps.logger.info({ line: l.lineKey, epoch: l.epoch }, 'modbus line claimed; polling it');
        this.hooks?.gained(l.lineKey);
      }
      this.m.held.set(this.held.size);
    }
    // Rebalance: one line per round, and not while one is being given up.
    if ([...this.held.values()].some((h) => h.releasing)) return;
    const mineNow = tcp.filter((k) => this.held.has(k));
    const counts = new Map([...live].map((n) => [n, 0]));
    for (const r of rows) if (r.live && counts.has(r.nodeId) && this.wanted.get(r.lineKey)?.type === 'modbus-tcp') counts.set(r.nodeId, counts.get(r.nodeId)! + 1);
    counts.set(this.deps.nodeId, mineNow.length);
    const fewest = Math.min(...counts.values());
    if (mineNow.length > share || (mineNow.length >= fewest + 2 && mineNow.length > 1)) {
      void this.releaseInBackground(mineNow[Math.floor(Math.random() * mineNow.length)]!, 'rebalance');
    }
  }

  private setDeadline(lineKey: string, h: Held, sent: number, l: HeldLease): void {
    h.deadline = sent + l.remainingMs - this.marginMs;
    if (h.timer) clearTimeout(h.timer);
    h.timer = setTimeout(() => {
      if (this.held.get(lineKey) === h) this.lose(lineKey, 'expired');
    }, Math.max(0, h.deadline - performance.now()));
    h.timer.unref();
  }

  /** The line must stop now: its lease is another node's, or could expire before this node renews it. */
  private lose(lineKey: string, reason: 'taken_over' | 'expired'): void {
    const h = this.held.get(lineKey);
    if (!h) return;
    if (h.timer) clearTimeout(h.timer);
    this.held.delete(lineKey);
    this.m.held.set(this.held.size);
    this.m.lost.labels(reason).inc();
    this.deps.logger.warn({ line: lineKey, reason }, 'modbus line lease lost; stopped polling it');
    this.hooks?.lost(lineKey);
  }

  private releaseInBackground(lineKey: string, reason: ReleaseReason): Promise<void> {
    const p = this.release(lineKey, reason).catch((err: unknown) => {
      this.deps.logger.warn({ err, line: lineKey }, 'could not give up a modbus line lease; it expires by itself');
    }).finally(() => this.releases.delete(p));
    this.releases.add(p);
    return p;
  }

  /** Gently: no new poll, the one under way finishes, the connection closes, then the row goes. */
  private async release(lineKey: string, reason: ReleaseReason): Promise<void> {
    const h = this.held.get(lineKey);
    if (!h) return;
    h.releasing = true;
    await this.hooks?.drain(lineKey);
    if (this.held.get(lineKey) !== h) return; // lost meanwhile
    if (h.timer) clearTimeout(h.timer);
    this.held.delete(lineKey);
    this.m.held.set(this.held.size);
    this.cooldown.set(lineKey, performance.now() + 2 * this.periodMs);
    this.m.releases.labels(reason).inc();
    this.deps.logger.info({ line: lineKey, reason }, 'modbus line given up');
    await this.repo.release(lineKey, h.epoch);
  }
}

function shuffle<T>(xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

/**
 * Command ownership across cluster nodes (docs/design/state-window.md §3, docs/cluster.md "RPC commands across
 * nodes"). Several nodes share `rpc_requests` on PostgreSQL, each with its own MQTT broker; a command can only be
 * delivered by the node holding its device's connection. So every open command (`queued`, `sent`) has an OWNER,
 * `owner_node`: the node that holds it in memory, publishes it, re-sends it on reconnect and expires it. Which node
 * moves a command's state is still decided by compare-and-set (store-sql.ts): a command transitions once, whatever
 * node tries; ownership only decides who tries.
 *
 *  - Creation (store-sql.ts, the insert kind): owner = the node holding the device's session (`device_sessions`),
 *    else the creating node; `handed` false when that is another node. The creator keeps only what it owns.
 *  - Pickup (every `pickupMs`): this node takes the rows other nodes made for it (`handed` false) into memory and
 *    publishes them when their device is ready.
 *  - Claim on connect (a device's `status` online, which follows its session claim): one statement moves the
 *    device's open commands here, then the warm-up sends them as on one node. While it runs the device is not
 *    ready (its commands, old and new, go out in creation order after it). Devices connecting together share one
 *    statement. The node that lost the session finds, within `adoptMs`, that another node owns what it held for
 *    that device (it is no longer connected here) and forgets it.
 *  - Orphans (every `adoptMs`): open rows of a dead owner (no live lease, ownership-sql.ts) are adopted by a node
 *    when they are due to expire (that node expires them) or their device is connected to it (re-sent), SKIP LOCKED.
 *  - A fenced node (`canPublish` false: its lease was not renewed in time, src/cluster/lease-fence.ts) publishes
 *    nothing (rpc-service.ts), and neither picks up nor adopts: the other nodes may already treat it as dead. A
 *    move to `sent` (or back to `queued`) applies only to a row this node still owns (store-sql.ts), so a node that
 *    comes back never publishes a command another node took meanwhile, whatever its memory still holds.
 *  - ThingsBoard integer request ids: only the session holder allocates; a claim starts TB_ID_HANDOFF_GAP above the
 *    last id recorded, so ids the previous holder may still allocate before it sees the takeover are never reused.
 *
 * All of it goes through the state window as units, so their memory effects apply in commit order with the
 * service's own writes. Embedded mode (one node, SQLite): nothing of this runs.
 */
import type { Transaction } from 'kysely';
import type { Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import type { Db } from '../storage/sql/db.js';
import type { StateWindow } from '../storage/state/window.js';
import type { OpenCommands } from './open-commands.js';
import { adoptOrphans, claimDevices, notMine, pickUp, takeAtStart, type OwnedRow } from './ownership-sql.js';
import { MAX_TB_ID } from './store-sql.js';
import type { RpcRequest } from './types.js';

/** What RpcService needs to own commands in cluster mode (built by the wiring; PostgreSQL only). */
export interface RpcOwnership {
  /** This node's id: `cluster_nodes.node_id`, `device_sessions.node_id`. */
  readonly nodeId: string;
  /** Period of the pickup of commands other nodes made for devices held here. Default 1000. */
  readonly pickupMs?: number;
  /** Period of the orphan adoption and of the check of what memory holds for devices not connected here. Default 2000. */
  readonly adoptMs?: number;
  /** Best effort: tells node `nodeId` that commands it owns were stored here (it picks them up at once). */
  nudge?(nodeId: string): void;
  /** False while this node is fenced (src/cluster/lease-fence.ts): nothing is published, picked up or adopted. Absent: true. */
  canPublish?(): boolean;
}

/** How far above the last recorded id a new session holder starts allocating integer request ids. */
export const TB_ID_HANDOFF_GAP = 1_000;
/** Rows adopted at most per tick (the rest at the next). */
const ADOPT_LIMIT = 500;
/** Ids checked at most per tick. */
const CHECK_LIMIT = 5_000;
/** A failed ownership statement (a timeout, a table missing) undoes only itself, never the window's other writes. */
const UNIT = { savepoint: true } as const;

export interface OwnershipDeps {
  own: RpcOwnership;
  db: Db<unknown>;
  window: StateWindow;
  open: OpenCommands;
  clock: Clock;
  logger: Logger;
  answerGraceMs: number;
  isConnected(deviceId: string): boolean;
  /** The device's open commands are in memory now (claimed): the warm-up may send them. */
  claimed(deviceId: string): void;
  /** Commands memory did not hold, taken here (pickup, adoption): publish those whose device is ready. */
  taken(rows: readonly RpcRequest[]): void;
  /** A queued command held here that another node finished or took (found by a check): forgotten here. */
  withdrawn?(r: RpcRequest): void;
  /** The device's last integer request id as recorded (memory's or the database's, whichever is larger). */
  tbLast: Map<string, number>;
}

export class CommandOwnership {
  private readonly me: string;
  private readonly claimingSet = new Set<string>();
  private pending = new Set<string>();
  private claimTimer: NodeJS.Immediate | null = null;
  private timers: NodeJS.Timeout[] = [];
  private picking = false;
  /** A pickup was asked for while one ran (a nudge): run again after it, it may have missed those rows. */
  private pickAgain = false;
  private adopting = false;
  private rechecking = false;
  private running = false;
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly d: OwnershipDeps) {
    this.me = d.own.nodeId;
  }

  get nodeId(): string { return this.me; }

  /** At start: the open commands this node owns (creation order), taken for this process. */
  load(): Promise<RpcRequest[]> {
    return this.d.db.write((trx) => takeAtStart(trx, this.me)).then(strip);
  }

  start(): void {
    this.running = true;
    const every = (ms: number, f: () => void): void => { const t = setInterval(f, ms); t.unref(); this.timers.push(t); };
    every(this.d.own.pickupMs ?? 1000, () => { this.pickup(); });
    every(this.d.own.adoptMs ?? 2000, () => { this.adopt(); this.check(); });
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.timers.splice(0)) clearInterval(t);
    if (this.claimTimer) clearImmediate(this.claimTimer);
    this.claimTimer = null;
    this.pending.clear();
    this.claimingSet.clear();
    await Promise.allSettled([...this.inFlight]);
  }

  /** True while the device's claim runs: it is not ready (its commands go out after the claim, in order). */
  claiming(deviceId: string): boolean { return this.claimingSet.has(deviceId); }

  /** A device connected here (after its session claim): take its open commands (batched with others connecting now). */
  connected(deviceId: string): void {
    if (!this.running) return;
    this.claimingSet.add(deviceId);
    this.pending.add(deviceId);
    this.claimTimer ??= setImmediate(() => { this.claimTimer = null; this.claim(); });
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p)).catch(() => undefined);
    return p;
  }

  private claim(): void {
    const devices = [...this.pending];
    this.pending = new Set();
    if (devices.length === 0 || !this.running) return;
    const p = this.d.window.unit(async (trx, after) => {
      const got = await claimDevices(trx, this.me, devices);
      // What memory holds for them that another node finished (an answer matched there) or still owns: dropped.
      const heldIds = devices.flatMap((dv) => this.d.open.device(dv).map((r) => r.id));
      const stale = heldIds.length > 0 ? new Set(await notMine(trx, this.me, heldIds)) : new Set<string>();
      after(() => {
        for (const id of stale) this.d.open.remove(id);
        const rows = new Map<string, RpcRequest[]>(devices.map((dv) => [dv, []]));
        for (const r of strip(got.rows)) rows.get(r.deviceId)?.push(r);
        for (const dv of devices) {
          this.d.open.merge(dv, rows.get(dv)!);
          const last = Math.max(this.d.tbLast.get(dv) ?? 0, got.tbLast.get(dv) ?? 0);
          // Also with no id recorded yet: the previous holder may be giving out its first ones right now.
          this.d.tbLast.set(dv, (last + TB_ID_HANDOFF_GAP - 1) % MAX_TB_ID + 1);
        }
      });
      return got.rows.length;
    }, UNIT);
    void this.track(p).then((n) => {
      if (n > 0) this.d.logger.debug({ devices: devices.length, commands: n }, 'rpc commands claimed for devices connected here');
      this.claimDone(devices);
    }, (err: unknown) => {
      this.d.logger.warn({ err, devices: devices.length }, 'could not claim the rpc commands of devices connected here; retried');
      this.claimDone(devices);
      const t = setTimeout(() => { for (const dv of devices) if (this.d.isConnected(dv)) this.connected(dv); }, 1000);
      t.unref();
    });
  }

  private claimDone(devices: readonly string[]): void {
    for (const dv of devices) {
      // A newer connect of the device queued another claim meanwhile: it stays claiming until that one.
      if (this.pending.has(dv)) continue;
      this.claimingSet.delete(dv);
      this.d.claimed(dv);
    }
  }

  /** Takes the commands other nodes made for devices held here. */
  pickup(): Promise<void> {
    if (!this.running || this.d.own.canPublish?.() === false) return Promise.resolve();
    if (this.picking) { this.pickAgain = true; return Promise.resolve(); }
    this.picking = true;
    return this.track(this.take((trx) => pickUp(trx, this.me), 'picked up')).finally(() => {
      this.picking = false;
      if (this.pickAgain) { this.pickAgain = false; void this.pickup(); }
    });
  }

  /** Adopts the orphans this node should take (due to expire, or their device is here). */
  adopt(): Promise<void> {
    if (this.adopting || !this.running || this.d.own.canPublish?.() === false) return Promise.resolve();
    this.adopting = true;
    const now = this.d.clock.now();
    return this.track(this.take((trx) => adoptOrphans(trx, this.me, now, this.d.answerGraceMs, ADOPT_LIMIT), 'adopted from a dead node'))
      .finally(() => { this.adopting = false; });
  }

  private async take(q: (trx: Transaction<unknown>) => Promise<OwnedRow[]>, what: string): Promise<void> {
    let added: RpcRequest[] = [];
    try {
      await this.d.window.unit(async (trx, after) => {
        const rows = strip(await q(trx));
        after(() => {
          added = rows.filter((r) => (r.state === 'queued' || r.state === 'sent') && !this.d.open.get(r.id) && !this.d.open.finished(r.id));
          for (const r of added) this.d.open.put(r);
        });
      }, UNIT);
    } catch (err) {
      this.d.logger.warn({ err }, `rpc commands could not be ${what}; retried`);
      return;
    }
    if (added.length === 0) return;
    this.d.logger.debug({ commands: added.length }, `rpc commands ${what}`);
    this.d.taken(added);
  }

  /**
   * The commands memory holds queued (never sent), also of connected devices: forgets those another node finished
   * (cancelled: a broadcast stopped there, which then hints this node) or owns now. Run on a hint; the next move to
   * `sent` of such a command would miss anyway and not be published (publisher.ts), this only frees memory early.
   */
  recheckQueued(): Promise<void> {
    if (!this.running || this.rechecking) return Promise.resolve(); // hints in a burst: one check at a time
    this.rechecking = true;
    return this.recheck().finally(() => { this.rechecking = false; });
  }

  private recheck(): Promise<void> {
    const ids: string[] = [];
    for (const r of this.d.open.all()) {
      if (ids.length >= CHECK_LIMIT) break;
      if (r.state === 'queued' && !this.claimingSet.has(r.deviceId)) ids.push(r.id);
    }
    if (ids.length === 0) return Promise.resolve();
    const p = this.d.window.unit(async (trx, after) => {
      const gone = await notMine(trx, this.me, ids);
      after(() => {
        for (const id of gone) {
          const r = this.d.open.get(id);
          if (r?.state !== 'queued' || this.claimingSet.has(r.deviceId)) continue;
          this.d.open.remove(id);
          this.d.withdrawn?.(r);
        }
      });
    }, UNIT);
    return this.track(p).then(() => undefined, (err: unknown) => { this.d.logger.debug({ err }, 'rpc queued-commands check failed'); });
  }

  /**
   * What memory holds for devices not connected here and not being claimed: forgets what another node owns now (it
   * claimed the device) or finished. The session holder alone keeps a device's commands.
   */
  check(): Promise<void> {
    if (!this.running) return Promise.resolve();
    const ids: string[] = [];
    for (const r of this.d.open.all()) {
      if (ids.length >= CHECK_LIMIT) break;
      if (!this.d.isConnected(r.deviceId) && !this.claimingSet.has(r.deviceId)) ids.push(r.id);
    }
    if (ids.length === 0) return Promise.resolve();
    const p = this.d.window.unit(async (trx, after) => {
      const gone = await notMine(trx, this.me, ids);
      after(() => {
        let n = 0;
        for (const id of gone) {
          const r = this.d.open.get(id);
          if (!r || this.d.isConnected(r.deviceId) || this.claimingSet.has(r.deviceId)) continue;
          this.d.open.remove(id);
          if (r.state === 'queued') this.d.withdrawn?.(r);
          n++;
        }
        if (n > 0) this.d.logger.debug({ commands: n }, 'rpc commands now owned by another node (their devices moved): forgotten here');
      });
    }, UNIT);
    return this.track(p).then(() => undefined, (err: unknown) => { this.d.logger.debug({ err }, 'rpc ownership check failed; retried'); });
  }
}

function strip(rows: readonly OwnedRow[]): RpcRequest[] {
  return rows.map(({ seq: _seq, ...r }) => r);
}

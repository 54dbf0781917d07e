/**
 * Stopping a broadcast: `broadcast.stop {broadcastId}` to every speaker still sent/accepted/playing (its target
 * becomes `stopped` when the speaker confirms, by a `stopped` event or an `ok` answer); targets never sent
 * (pending, offline) have their play command withdrawn and are marked `stopped` at once. Decided at once when
 * memory holds the broadcast (else after one read); the writes go into the open state window with the command
 * withdrawals and the stop commands, so they commit together.
 *
 * Cluster mode (commands owned by nodes, on PostgreSQL): a target's play command may be queued on the node
 * holding its speaker, which this node's memory cannot see, so the database decides in one statement
 * (stop-queued.ts); a play that went out first gets a `broadcast.stop` after it, as on one node.
 *
 * Separate from the executor because the stop has paths of its own (withdraw or stop, one node or the
 * database, the stop command's id on the target) that stream-stops.ts shares (stopSent), while the executor
 * owns starting a broadcast and the component's lifecycle.
 */
import type { Clock } from '../../core/clock.js';
import { Errors } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { STOP_METHOD } from '../../core/protocol.js';
import type { RpcService } from '../../rpc/rpc-service.js';
import type { StateWindow, WindowKind } from '../../storage/state/window.js';
import { byDevice, view, type HeldBroadcast, type HeldBroadcasts } from './held.js';
import type { TargetRow } from './repo.js';
import type { BroadcastRepoSql } from './repo-sql.js';
import { isTerminal } from './state-machine.js';
import { stopQueuedKind, type StopQueued, type StopQueuedOutcome } from './stop-queued.js';
import type { MoveOptions } from './transitions.js';
import type { Broadcast, TargetState } from './types.js';

export interface StopsDeps {
  held: HeldBroadcasts;
  window: StateWindow;
  rpc: Pick<RpcService, 'sendMany' | 'isQueued' | 'cancel' | 'forgetQueued' | 'hintOwner'>;
  /** The repository, or KENG_ERR_NOT_READY when the executor is not started. */
  repo: () => BroadcastRepoSql;
  clock: Clock;
  logger: Logger;
  /** expiresAt of broadcast.stop commands, from now. */
  stopTtlMs: number;
  /** The validated transition (transitions.ts). */
  move: (broadcastId: string, deviceId: string, to: TargetState, o: MoveOptions) => boolean;
  /** `broadcast.state` on the bus (after the commit). */
  emit: (broadcastId: string, deviceId: string, area: string, state: TargetState, at: number) => void;
}

export class BroadcastStops {
  /** Cluster mode: the stop of queued plays decided in the database (null on one node). */
  private stopQueued: WindowKind<StopQueued, StopQueuedOutcome> | null = null;

  constructor(private readonly d: StopsDeps) {}

  /** At the executor's start: whether commands are owned by nodes (cluster mode), so queued plays are withdrawn in the database. */
  open(clustered: boolean): void {
    this.stopQueued = clustered ? stopQueuedKind() : null;
  }

  /** BroadcastExecutor.stopBroadcast(): resolves after the commit with the broadcast as stopped. Unknown id → 404. */
  stop(broadcastId: string): Promise<Broadcast> {
    this.d.repo();
    const h = this.d.held.get(broadcastId);
    if (h) return this.stopHeld(h);
    return this.d.held.load(broadcastId).then((l) => {
      if (!l) throw Errors.NOT_FOUND(`Broadcast "${broadcastId}"`);
      return this.stopHeld(l);
    });
  }

  /** BroadcastExecutor.preload(): reads a broadcast into memory if not held; false when it does not exist. */
  async preload(broadcastId: string): Promise<boolean> {
    if (this.d.held.has(broadcastId)) return true;
    return (await this.d.held.load(broadcastId)) !== undefined;
  }

  /** A broadcast.stop was made for a target: its id on the target (memory now, the row in the same window). */
  stopSent(broadcastId: string, deviceId: string, requestId: string): void {
    const h = this.d.held.get(broadcastId);
    const t = h?.targets.get(deviceId);
    if (h && t) h.targets.set(deviceId, { ...t, stop_request_id: requestId });
    this.d.window.post(this.d.repo().requestIds, { broadcastId, deviceId, stopRequestId: requestId });
  }

  private stopHeld(h: HeldBroadcast): Promise<Broadcast> {
    const sqlRepo = this.d.repo();
    const w = this.d.window;
    const broadcastId = h.row.id;
    const now = this.d.clock.now();
    const waits: Array<Promise<unknown>> = [];
    if (h.row.stop_requested_at === null) {
      h.row = { ...h.row, stop_requested_at: now };
      waits.push(w.add(sqlRepo.stopRequested, { broadcastId, at: now }));
    }
    // Cluster mode: a play command may be queued on the node holding its speaker; the database decides (stop-queued.ts).
    const clustered = this.stopQueued !== null;
    for (const t of [...h.targets.values()].sort(byDevice)) {
      if (isTerminal(t.state)) continue;
      const unsent = t.state === 'pending' || t.state === 'offline';
      if (unsent && t.play_request_id !== null && clustered) {
        waits.push(this.withdraw(h, t, now));
        continue;
      }
      if (unsent && (t.play_request_id === null || this.d.rpc.isQueued(t.play_request_id))) {
        if (t.play_request_id !== null) waits.push(this.d.rpc.cancel(t.play_request_id));
        this.d.move(broadcastId, t.device_id, 'stopped', { source: 'controller', detail: 'stopped before it was sent' });
        continue;
      }
      waits.push(this.sendStop(broadcastId, t.device_id, now));
    }
    this.d.logger.info({ broadcastId }, 'broadcast stop requested');
    const v = view(h);
    if (!clustered) return w.durable(Promise.all(waits)).then(() => v);
    // The targets withdrawn in the database are known after its commit: the broadcast as memory holds it then.
    return w.durable(Promise.all(waits)).then(async () => {
      const cur = this.d.held.get(broadcastId) ?? await this.d.held.load(broadcastId).catch(() => undefined);
      return cur ? view(cur) : v;
    });
  }

  /** A `broadcast.stop` to the speaker (stored and published by the owner of its session); never rejects. */
  private sendStop(broadcastId: string, deviceId: string, now: number): Promise<unknown> {
    try {
      return this.d.rpc.sendMany([deviceId], STOP_METHOD, { broadcastId }, { expiresAt: now + this.d.stopTtlMs },
        ([r]) => { this.stopSent(broadcastId, deviceId, r!.requestId); }).catch((err: unknown) => {
        this.d.logger.error({ err, broadcastId, deviceId }, 'broadcast.stop could not be stored');
      });
    } catch (err) {
      this.d.logger.error({ err, broadcastId, deviceId }, 'broadcast.stop could not be queued');
      return Promise.resolve();
    }
  }

  /**
   * Cluster mode: withdraws a target's play command wherever it is queued and stops the target, in one statement of the
   * window (stop-queued.ts); when the command went out first, a `broadcast.stop` follows it. Never rejects.
   */
  private withdraw(h: HeldBroadcast, t: TargetRow, now: number): Promise<unknown> {
    const broadcastId = h.row.id;
    const deviceId = t.device_id;
    const detail = 'stopped before it was sent';
    this.d.rpc.forgetQueued(t.play_request_id!); // held here: never published now (the statement below withdraws the row)
    let out: Promise<StopQueuedOutcome>;
    try {
      out = this.d.window.add(this.stopQueued!, {
        broadcastId, deviceId, requestId: t.play_request_id!, from: t.state, at: now, detail,
        ...(h.row.schedule_id !== null ? { scheduleId: h.row.schedule_id } : {}),
      });
    } catch (err) {
      this.d.logger.warn({ err, broadcastId, deviceId }, 'broadcast stop dropped: the state window is stopped');
      return Promise.resolve();
    }
    // Memory as decided (what the caller's audit record and reply show); a miss below evicts it.
    h.targets.set(deviceId, { ...t, state: 'stopped', updated_at: now, detail });
    return out.then((o) => {
      if (o.owner !== undefined) this.d.rpc.hintOwner(o.owner);
      if (o.moved) { this.d.emit(broadcastId, deviceId, t.area, 'stopped', now); return undefined; }
      this.d.held.delete(broadcastId); // memory was stale (the command went out, or the target moved on elsewhere): read again
      if (o.cancelled || o.neverSent) return undefined; // withdrawn (now or before): no play to stop
      return this.sendStop(broadcastId, deviceId, this.d.clock.now());
    }, (err: unknown) => { this.d.logger.error({ err, broadcastId, deviceId }, 'broadcast stop could not withdraw a queued play'); });
  }
}

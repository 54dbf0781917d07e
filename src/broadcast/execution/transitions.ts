/**
 * A target's state change, the one way every part of execution moves a target (a speaker's answer or playback
 * event, an RPC event, a stop, a report deadline): checked against state-machine.ts, applied in memory at once
 * (held.ts), its compare-and-set and its `broadcast_log` line written into the open state window (repo-sql.ts),
 * and `broadcast.state` emitted on the bus only after that commit. A move the rows refuse (another node moved
 * the target first) drops memory's copy of the broadcast (read again on next use).
 *
 * Separate from the executor so the rule "checked, in memory now, in the window, on the bus after the commit"
 * lives in one place that the collaborators (target-events.ts, report-deadlines.ts, stop-broadcast.ts) are
 * handed, while the executor keeps the commands.
 */
import type { Counter } from 'prom-client';
import type { Clock } from '../../core/clock.js';
import type { EventBus } from '../../core/events.js';
import type { Logger } from '../../core/logger.js';
import { counterOn, type Metrics } from '../../core/metrics.js';
import type { StateWindow } from '../../storage/state/window.js';
import type { HeldBroadcast, HeldBroadcasts } from './held.js';
import type { Applied, BroadcastRepoSql } from './repo-sql.js';
import { checkTransition } from './state-machine.js';
import type { LogSource, TargetState } from './types.js';

/** How a move is recorded in the log line. */
export interface MoveOptions { source: LogSource; detail?: string; deviceAt?: number }

export interface TransitionsDeps {
  /** Where the rows go (null while the executor is stopped: nothing moves). */
  repo: () => BroadcastRepoSql | null;
  held: HeldBroadcasts;
  window: StateWindow;
  bus: EventBus;
  clock: Clock;
  logger: Logger;
  metrics: Metrics | undefined;
  /** A target was accepted or started playing: its broadcast's report deadline is armed (report-deadlines.ts). */
  onActive: (h: HeldBroadcast) => void;
}

export class TargetTransitions {
  private readonly ignored: Counter<'reason'>;

  constructor(private readonly d: TransitionsDeps) {
    this.ignored = counterOn(d.metrics?.registry, 'keng_broadcast_transitions_ignored_total',
      'Target state changes ignored (from a terminal state, or backwards), e.g. a late accepted after completed', ['reason'] as const);
  }

  /**
   * Validated transition: decided and applied in memory at once, its target CAS and log line into the open
   * state window; the bus event after that commit. false when ignored.
   */
  move(broadcastId: string, deviceId: string, to: TargetState, o: MoveOptions): boolean {
    const sqlRepo = this.d.repo();
    const h = this.d.held.get(broadcastId);
    const t = h?.targets.get(deviceId);
    if (!sqlRepo || !h || !t) return false;
    const check = checkTransition(t.state, to);
    if (check === 'same') return false;
    if (check !== 'ok') {
      this.ignored.labels({ reason: check }).inc();
      this.d.logger.info({ broadcastId, deviceId, from: t.state, to, source: o.source, reason: check }, 'broadcast target transition ignored');
      return false;
    }
    const now = this.d.clock.now();
    const scheduleId = h.row.schedule_id ?? undefined;
    let applied: Promise<Applied>;
    try {
      applied = sqlRepo.transition(this.d.window, { broadcastId, deviceId, area: t.area, state: t.state }, to, now, {
        source: o.source, ...(o.detail !== undefined ? { detail: o.detail } : {}), ...(o.deviceAt !== undefined ? { deviceAt: o.deviceAt } : {}),
        ...(scheduleId !== undefined ? { scheduleId } : {}),
      });
    } catch (err) { // the window is stopped (shutting down): nothing changes
      this.d.logger.warn({ err, broadcastId, deviceId, to }, 'broadcast target transition dropped: the state window is stopped');
      return false;
    }
    h.targets.set(deviceId, { ...t, state: to, updated_at: now, detail: o.detail ?? null });
    applied.then((a) => {
      if (a.applied) this.emit(broadcastId, deviceId, t.area, to, now);
      else { // moved by someone else: memory is stale
        this.d.held.delete(broadcastId);
        this.d.logger.info({ broadcastId, deviceId, from: t.state, to, source: o.source }, 'broadcast target transition not applied: the target was moved elsewhere');
      }
    }, () => { /* the window failed: its callers are told, this broadcast is evicted */ });
    if (to === 'accepted' || to === 'playing') this.d.onActive(h);
    return true;
  }

  /** `broadcast.state` on the bus (called once the change is committed). */
  emit(broadcastId: string, deviceId: string, area: string, state: TargetState, at: number): void {
    this.d.bus.emit('broadcast.state', { broadcastId, deviceId, area, state, at });
  }
}

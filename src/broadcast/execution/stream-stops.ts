/**
 * Planned ends of streams: a stream with a duration has no end of its own, so the controller sends
 * `broadcast.stop` durationSec after the speaker reported it playing. The timers are in memory; the
 * due time is not: it follows from the target row (state `playing` since updated_at, no stop
 * request yet), so rearm() (at the executor's start) re-arms the stops of streams that were playing
 * when Keng went down, and sends at once those already due.
 *
 * Separate from the executor because these timers are the only part of execution that acts on its
 * own later (besides report deadlines): a lifecycle of their own, cleared at stop.
 */
import type { Clock } from '../../core/clock.js';
import type { Logger } from '../../core/logger.js';
import { STOP_METHOD } from '../../core/protocol.js';
import type { RpcService } from '../../rpc/rpc-service.js';
import type { BroadcastRepo } from './repo.js';
import { isTerminal } from './state-machine.js';

/** Broadcasts created longer ago than this are not looked at on restart (bounds the start-up queries; a relay lasts hours, not days). */
export const RECOVERY_WINDOW_MS = 7 * 24 * 3600_000;

export interface StreamStopsDeps {
  /** The started executor's repo (throws when not started). */
  requireRepo: () => BroadcastRepo;
  /** The repo if still started (a timer may fire after stop). */
  repo: () => BroadcastRepo | null;
  rpc: Pick<RpcService, 'sendMany'>;
  clock: Clock;
  logger: Logger;
  /** expiresAt of broadcast.stop commands, from now. */
  stopTtlMs: number;
}

export class StreamStops {
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly d: StreamStopsDeps) {}

  /** The speaker reported `broadcastId` playing: arm its stop if it is a stream with a planned duration. */
  onPlaying(broadcastId: string, deviceId: string): void {
    // Only the broadcast row: this runs on every `started` event, and reading the whole broadcast
    // (every target row) here made a broadcast to N speakers cost O(N²) (26 s of CPU for 2,000).
    const b = this.d.requireRepo().getBroadcastRow(broadcastId);
    if (!b || b.duration_sec === null || !(JSON.parse(b.content_json) as { stream?: unknown }).stream) return;
    this.schedule(broadcastId, deviceId, b.duration_sec * 1000);
  }

  /** After a restart: stops of streams that were playing. */
  rearm(): void {
    const now = this.d.clock.now();
    for (const r of this.d.requireRepo().playingStreams(now - RECOVERY_WINDOW_MS)) {
      this.schedule(r.broadcast_id, r.device_id, Math.max(0, r.updated_at + r.duration_sec * 1000 - now));
    }
  }

  clear(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private schedule(broadcastId: string, deviceId: string, delayMs: number): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      const t = this.d.repo()?.target(broadcastId, deviceId);
      if (!t || isTerminal(t.state) || t.stop_request_id !== null) return;
      try {
        // sendMany for its synchronous results: the stop's id is stored with the target now (group commit bridge,
        // executor.ts `committed`); the command itself commits with the state window.
        this.d.rpc.sendMany([deviceId], STOP_METHOD, { broadcastId }, { expiresAt: this.d.clock.now() + this.d.stopTtlMs },
          ([r]) => { this.d.repo()?.setStopRequest(broadcastId, deviceId, r!.requestId); })
          .catch((err: unknown) => { this.d.logger.error({ err, broadcastId, deviceId }, 'stream stop could not be stored'); });
      } catch (err) { this.d.logger.error({ err, broadcastId, deviceId }, 'stream stop failed'); }
    }, delayMs);
    timer.unref();
    this.timers.add(timer);
  }
}

/**
 * Planned ends of streams: a stream with a duration has no end of its own, so the controller sends
 * `broadcast.stop` durationSec after the speaker reported it playing. The timers are in memory; the
 * due time is not: it follows from the target row (state `playing` since updated_at, no stop
 * request yet), so rearm() (at the executor's start, from the broadcasts it loaded into memory)
 * re-arms the stops of streams that were playing when Keng went down, and sends at once those
 * already due.
 *
 * Separate from the executor because these timers are the only part of execution that acts on its
 * own later (besides report deadlines): a lifecycle of their own, cleared at stop.
 */
import type { Clock } from '../../core/clock.js';
import type { Logger } from '../../core/logger.js';
import { STOP_METHOD } from '../../core/protocol.js';
import type { RpcService } from '../../rpc/rpc-service.js';
import type { HeldBroadcast } from './held.js';
import { isTerminal } from './state-machine.js';

/** Broadcasts created longer ago than this are not looked at on restart (bounds the start-up queries; a relay lasts hours, not days). */
export const RECOVERY_WINDOW_MS = 7 * 24 * 3600_000;

export interface StreamStopsDeps {
  /** Runs `fn` with the broadcast as memory holds it (after one read when it does not). */
  withHeld: (broadcastId: string, fn: (h: HeldBroadcast | undefined) => void) => void;
  /** Whether the executor still runs (a timer may fire after stop). */
  running: () => boolean;
  /** Records the stop's request id with the target (memory, and the row in the stop command's window). */
  stopSent: (broadcastId: string, deviceId: string, requestId: string) => void;
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
    this.d.withHeld(broadcastId, (h) => {
      const sec = h ? streamSec(h) : undefined;
      if (sec !== undefined) this.schedule(broadcastId, deviceId, sec * 1000);
    });
  }

  /** After a restart: stops of the loaded streams that were playing. */
  rearm(held: Iterable<HeldBroadcast>): void {
    const now = this.d.clock.now();
    for (const h of held) {
      const sec = streamSec(h);
      if (sec === undefined) continue;
      for (const t of h.targets.values()) {
        if (t.state === 'playing' && t.stop_request_id === null) this.schedule(t.broadcast_id, t.device_id, Math.max(0, t.updated_at + sec * 1000 - now));
      }
    }
  }

  clear(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  /** Cluster mode (the target sweep): the stream's planned end passed and no stop was sent (the node that armed it is gone). */
  stopNow(broadcastId: string, deviceId: string): void {
    if (!this.d.running()) return;
    this.d.withHeld(broadcastId, (h) => {
      const t = h?.targets.get(deviceId);
      if (!h || !t || t.state !== 'playing' || t.stop_request_id !== null) return;
      const sec = streamSec(h);
      if (sec === undefined || t.updated_at + sec * 1000 > this.d.clock.now()) return;
      this.send(broadcastId, deviceId);
    });
  }

  private schedule(broadcastId: string, deviceId: string, delayMs: number): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.d.running()) return;
      this.d.withHeld(broadcastId, (h) => {
        const t = h?.targets.get(deviceId);
        if (!t || isTerminal(t.state) || t.stop_request_id !== null) return;
        this.send(broadcastId, deviceId);
      });
    }, delayMs);
    timer.unref();
    this.timers.add(timer);
  }

  private send(broadcastId: string, deviceId: string): void {
    try {
      // The command and the stop's id on the target go into one state window (sendMany calls back at once).
      this.d.rpc.sendMany([deviceId], STOP_METHOD, { broadcastId }, { expiresAt: this.d.clock.now() + this.d.stopTtlMs },
        ([r]) => { this.d.stopSent(broadcastId, deviceId, r!.requestId); })
        .catch((err: unknown) => { this.d.logger.error({ err, broadcastId, deviceId }, 'stream stop could not be stored'); });
    } catch (err) { this.d.logger.error({ err, broadcastId, deviceId }, 'stream stop failed'); }
  }
}

/** A relayed stream's planned duration in seconds (undefined: media, or a stream without one). */
function streamSec(h: HeldBroadcast): number | undefined {
  const b = h.row;
  if (b.duration_sec === null || !(JSON.parse(b.content_json) as { stream?: unknown }).stream) return undefined;
  return b.duration_sec;
}

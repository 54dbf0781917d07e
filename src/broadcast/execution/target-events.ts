/**
 * What the speakers and the RPC service report about a broadcast's targets, turned into target
 * transitions (state-machine.ts): RPC 'sent' / 'expired', the answers to `broadcast.play`,
 * `broadcast.stop` and `media.prefetch`, and playback events (device protocol §12.5).
 *
 * A playback event for a broadcast the speaker is not a target of, or was never sent, is refused:
 * counted in `keng_broadcast_events_refused_total` and logged (RPC responses are refused the same
 * way by the RPC service).
 *
 * Separate from the executor because this is the inbound side (device → controller), with its own
 * checks and refusals; the executor owns the commands it sends and the transitions themselves.
 */
import type { Counter } from 'prom-client';
import type { EventBus, KengEvents } from '../../core/events.js';
import type { Logger } from '../../core/logger.js';
import { counterOn, type Metrics } from '../../core/metrics.js';
import { PLAY_METHOD, PREFETCH_METHOD, STOP_METHOD } from '../../core/protocol.js';
import type { RpcService } from '../../rpc/rpc-service.js';
import type { RpcEvents, RpcRequest } from '../../rpc/types.js';
import type { HeldBroadcast } from './held.js';
import { PLAY_RESPONSE_TO_STATE, PLAYBACK_TO_STATE, isTerminal } from './state-machine.js';
import type { LogSource, TargetState } from './types.js';

type Refusal = 'unknown_broadcast' | 'not_target' | 'never_sent';

export interface TargetEventsDeps {
  /** Runs `fn` with the broadcast as memory holds it (after one read when it does not; undefined: no such broadcast). */
  withHeld: (broadcastId: string, fn: (h: HeldBroadcast | undefined) => void) => void;
  logger: Logger;
  metrics: Metrics | undefined;
  /** The executor's validated transition; false when ignored. */
  move: (broadcastId: string, deviceId: string, to: TargetState, o: { source: LogSource; detail?: string; deviceAt?: number }) => boolean;
  /** Memory's copy of the broadcast is stale (read again on next use). */
  forget: (broadcastId: string) => void;
  /** A speaker reported a broadcast playing (stream stops are armed from it). */
  onPlaying: (broadcastId: string, deviceId: string) => void;
  /**
   * Cluster mode: runs `fn` with the broadcast as the database has it now. Memory may be behind there (another
   * node moved the target: the speaker answered there, then reconnected here), so an event memory would ignore or
   * refuse is judged once more against the rows. Absent on the embedded store, where memory is authoritative.
   */
  reread?: (broadcastId: string, fn: (h: HeldBroadcast | undefined) => void) => void;
  /**
   * Cluster mode: whether a command was published (its row `sent` or `answered`). A node may die after storing
   * that, before the target's `sent`: the speaker's answers and reports, sent again here, prove the delivery.
   */
  delivered?: (requestId: string, fn: (yes: boolean) => void) => void;
}

export class TargetEvents {
  private readonly refused: Counter<'reason'>;

  constructor(private readonly d: TargetEventsDeps) {
    this.refused = counterOn(d.metrics?.registry, 'keng_broadcast_events_refused_total',
      'Playback events refused: unknown broadcast, speaker not a target, or a broadcast never sent to it', ['reason'] as const);
  }

  /** Subscribes to the RPC service and the bus; returns the unsubscribe functions. */
  listen(rpc: Pick<RpcService, 'on'>, bus: EventBus): Array<() => void> {
    // The RPC service emits these synchronously at its decision: the target moves they cause go into the same
    // state window as the RPC write (one transaction), unless the broadcast must be read first (rare).
    return [
      rpc.on('sent', (e) => this.onRpcSent(e)),
      rpc.on('expired', (e) => this.onRpcExpired(e)),
      rpc.on('response', (e) => this.onRpcResponse(e)),
      // Cluster mode: a play withdrawn by another node (a stop there moved its target): this memory of it is stale.
      rpc.on('withdrawn', (e) => { const ref = refOf(e.request); if (ref && e.request.method === PLAY_METHOD) this.d.forget(ref.broadcastId); }),
      bus.on('device.event', (e) => this.onDeviceEvent(e)),
    ];
  }

  private onRpcSent(e: RpcEvents['sent']): void {
    if (e.request.method !== PLAY_METHOD) return;
    const ref = refOf(e.request);
    if (!ref) return;
    const o = { source: 'rpc' as const, ...(e.resend ? { detail: 'sent after reconnect' } : {}) };
    this.d.withHeld(ref.broadcastId, (h) => {
      const t = h?.targets.get(ref.deviceId);
      if (!t || (t.state !== 'pending' && t.state !== 'offline')) return;
      this.moveOrReread(ref.broadcastId, ref.deviceId, 'sent', o);
    });
  }

  private onRpcExpired(e: RpcEvents['expired']): void {
    const ref = refOf(e.request);
    if (!ref) return;
    if (e.request.method === STOP_METHOD) {
      this.d.logger.warn({ ...ref }, 'broadcast.stop expired before the speaker answered');
      return;
    }
    if (e.request.method !== PLAY_METHOD) return;
    this.d.withHeld(ref.broadcastId, (h) => {
      const t = h?.targets.get(ref.deviceId);
      if (!t) return;
      const detail = t.state === 'sent' ? 'no answer from the speaker before notAfter' : 'speaker offline until notAfter';
      this.d.move(ref.broadcastId, ref.deviceId, 'expired', { source: 'rpc', detail });
    });
  }

  private onRpcResponse(e: RpcEvents['response']): void {
    // A repeated answer changes nothing here, except in cluster mode: the node that stored the first one may have
    // died before the target's move committed (the device got no PUBACK and answered again, here).
    if (e.duplicate && !this.d.reread) return;
    if (e.request.method === PREFETCH_METHOD) {
      // Nothing waits for it (the play downloads what the prefetch could not); staff see why in the log.
      if (e.status === 'error') this.d.logger.warn({ deviceId: e.request.deviceId, detail: e.detail }, 'speaker could not prefetch media');
      return;
    }
    const ref = refOf(e.request);
    if (!ref) return;
    if (e.request.method === PLAY_METHOD) {
      const to = PLAY_RESPONSE_TO_STATE[e.status];
      if (to) this.d.withHeld(ref.broadcastId, () => { this.moveOrReread(ref.broadcastId, ref.deviceId, to, { source: 'rpc', ...(e.detail !== undefined ? { detail: e.detail } : {}) }, true); });
    } else if (e.request.method === STOP_METHOD) {
      this.d.withHeld(ref.broadcastId, (h) => {
        const t = h?.targets.get(ref.deviceId);
        if (!t || isTerminal(t.state)) return;
        if (e.status === 'ok' || e.status === 'accepted') this.d.move(ref.broadcastId, ref.deviceId, 'stopped', { source: 'rpc', detail: 'broadcast.stop confirmed' });
        else this.d.logger.warn({ ...ref, status: e.status, detail: e.detail }, 'speaker did not confirm broadcast.stop');
      });
    }
  }

  private onDeviceEvent(e: KengEvents['device.event']): void {
    const p = e.payload;
    if (p.type !== 'playback' || typeof p.broadcastId !== 'string' || typeof p.state !== 'string') return;
    const to = PLAYBACK_TO_STATE[p.state];
    if (!to) return;
    const broadcastId = p.broadcastId;
    const deviceAt = typeof p.at === 'number' && Number.isFinite(p.at) ? p.at : undefined;
    const detail = typeof p.detail === 'string' ? p.detail : undefined;
    const o = { source: 'event' as const, ...(deviceAt !== undefined ? { deviceAt } : {}), ...(detail !== undefined ? { detail } : {}) };
    const judge = (h: HeldBroadcast | undefined, last: boolean): void => {
      const t = h?.targets.get(e.deviceId);
      const refusal: Refusal | null = !t ? (h ? 'not_target' : 'unknown_broadcast') : t.state === 'pending' || t.state === 'offline' ? 'never_sent' : null;
      if (refusal) {
        if (!last && this.d.reread) this.d.reread(broadcastId, (fresh) => judge(fresh, true));
        else if (refusal === 'never_sent' && t?.play_request_id && this.d.delivered) {
          this.d.delivered(t.play_request_id, (yes) => {
            if (!yes) { this.refuse(e.deviceId, broadcastId, refusal); return; }
            this.catchUpSent(h, e.deviceId);
            if (this.d.move(broadcastId, e.deviceId, to, o) && to === 'playing') this.d.onPlaying(broadcastId, e.deviceId);
          });
        } else this.refuse(e.deviceId, broadcastId, refusal);
        return;
      }
      const moved = this.d.move(broadcastId, e.deviceId, to, o);
      if (moved && to === 'playing') this.d.onPlaying(broadcastId, e.deviceId);
      else if (!moved && !last && this.d.reread) {
        this.d.reread(broadcastId, () => { if (this.d.move(broadcastId, e.deviceId, to, o) && to === 'playing') this.d.onPlaying(broadcastId, e.deviceId); });
      }
    };
    this.d.withHeld(broadcastId, (h) => judge(h, false));
  }

  /** The move; in cluster mode, when memory ignores it (perhaps behind the rows), once more after a read. */
  private moveOrReread(broadcastId: string, deviceId: string, to: TargetState, o: { source: LogSource; detail?: string }, answered = false): void {
    if (this.d.move(broadcastId, deviceId, to, o) || !this.d.reread) return;
    this.d.reread(broadcastId, (h) => {
      // The speaker answered its play command: it was sent, also when the node that sent it died before saying so.
      if (answered) this.catchUpSent(h, deviceId);
      this.d.move(broadcastId, deviceId, to, o);
    });
  }

  /** A target still pending/offline whose command the speaker demonstrably got: `sent` first. */
  private catchUpSent(h: HeldBroadcast | undefined, deviceId: string): void {
    const t = h?.targets.get(deviceId);
    if (h && t && (t.state === 'pending' || t.state === 'offline')) {
      this.d.move(h.row.id, deviceId, 'sent', { source: 'rpc', detail: 'sent by a node that stopped before recording it' });
    }
  }

  private refuse(deviceId: string, broadcastId: string, reason: Refusal): void {
    this.refused.labels({ reason }).inc();
    this.d.logger.warn({ deviceId, broadcastId: broadcastId.slice(0, 128), reason }, 'playback event refused: speaker was never sent this broadcast');
  }
}

function refOf(r: RpcRequest): { broadcastId: string; deviceId: string } | null {
  const id = r.params.broadcastId;
  return typeof id === 'string' ? { broadcastId: id, deviceId: r.deviceId } : null;
}

/**
 * The end of a command nobody answered: a `queued` command expires at its expiresAt (device protocol "Commands
 * (RPC)": an offline device gets it on reconnect "unless expiresAt has passed"); a `sent` one only
 * `answerGraceMs` later, so an answer on its way still lands. A sweep every `sweepIntervalMs` expires what is
 * due ('expired' event, emitted at the decision); once an hour it deletes finished commands older than
 * `retentionMs` in a transaction of its own.
 *
 * Separate from RpcService because it is the only part of the service that acts on its own later (a timer of its
 * own, cleared at stop), and the publisher needs its expire() too (a held command found stale at a reconnect).
 */
import type { Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import type { RpcMetrics } from './metrics.js';
import type { OpenCommands } from './open-commands.js';
import type { RpcCas, RpcStoreSql } from './store-sql.js';
import type { RpcEvents, RpcRequest } from './types.js';

export interface ExpiryDeps {
  open: OpenCommands;
  /** The store while the service runs (null once stopped). */
  store: () => RpcStoreSql | null;
  metrics: RpcMetrics;
  logger: Logger;
  clock: Clock;
  emit: <K extends keyof RpcEvents>(event: K, e: RpcEvents[K]) => void;
  /** A move nobody awaits, into the state window. */
  post(c: RpcCas): void;
  /** No longer open (kept as finished until its window commits). */
  finish(r: RpcRequest): void;
  sweepIntervalMs: number;
  answerGraceMs: number;
  retentionMs: number;
}

export class CommandExpiry {
  private timer: NodeJS.Timeout | null = null;
  private lastCleanup = 0;

  constructor(private readonly d: ExpiryDeps) {}

  /** Starts the periodic sweep and runs one now. */
  start(): void {
    this.timer = setInterval(() => this.sweep(), this.d.sweepIntervalMs);
    this.timer.unref();
    this.sweep();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Expires what is due now; deletes old finished commands once an hour. */
  sweep(): void {
    const store = this.d.store();
    if (!store) return;
    const now = this.d.clock.now();
    const grace = this.d.answerGraceMs;
    for (const r of [...this.d.open.all()]) {
      if (r.state === 'queued' ? r.expiresAt <= now : r.expiresAt <= now - grace) this.expire(r, now);
    }
    if (now - this.lastCleanup > 3_600_000) {
      this.lastCleanup = now;
      // Its own transaction; not through the window (nothing waits for it, and it may delete many rows).
      store.deleteFinishedBefore(now - this.d.retentionMs).then((n) => {
        if (n > 0) this.d.logger.debug({ deleted: n }, 'old rpc requests deleted');
      }, (err: unknown) => { this.d.logger.warn({ err }, 'old rpc requests could not be deleted'); });
    }
  }

  /** Expires `r` if memory still holds it in the same state. */
  expire(r: RpcRequest, now: number): void {
    if (this.d.open.get(r.id)?.state !== r.state) return;
    this.d.finish({ ...r, state: 'expired' });
    this.d.post({ id: r.id, deviceId: r.deviceId, from: r.state, to: 'expired' });
    this.d.metrics.expired.labels({ method: r.method }).inc();
    this.d.logger.debug({ requestId: r.id, deviceId: r.deviceId, method: r.method, was: r.state }, 'rpc request expired');
    this.d.emit('expired', { request: { ...r, state: 'expired' }, at: now });
  }
}

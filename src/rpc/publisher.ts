/**
 * Publishing the held commands: a command is marked `sent` in memory and in the state window at once and
 * published after that window's COMMIT, so no device is ever sent a command that is not stored. A device's
 * commands go out in the order they were sent (one publish chain per device). A publish that fails, or whose
 * payload could not be made (the params hook or the signer failed), puts the command back to `queued` for the
 * next connect (requeue), unless it was answered meanwhile.
 *
 * Re-sending (firmware-protocols/device-protocol.md §1.4): once a device is ready (warmup.ts), every
 * non-expired command of it that is `queued`, or `sent` but unanswered (it may have been lost with the previous
 * connection: QoS 1 with a clean session), is published again in creation order (flush). Devices must
 * de-duplicate request ids (guide §11.4: "be ready to see R twice").
 *
 * Cluster mode: commands taken from the database (pickup, adoption: ownership.ts) are published when their
 * device is ready (taken). Another node may withdraw a queued command in the database (a broadcast stopped
 * there): this node's move of it to `sent` then misses and it is not published ('withdrawn' event).
 *
 * Separate from RpcService because when and how a command goes on the wire (the per-device chains, the
 * after-commit rule, the requeue of what did not go out) is one concern shared by send(), sendMany() and the
 * re-sends, while the service decides what is sent.
 */
import type { BrokerPort } from '../broker/types.js';
import type { Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import type { StateWindow } from '../storage/state/window.js';
import type { CommandEncoder } from './encoder.js';
import type { RpcMetrics } from './metrics.js';
import type { OpenCommands } from './open-commands.js';
import type { RpcCas, RpcStoreSql } from './store-sql.js';
import type { TbIds } from './tb-ids.js';
import type { RpcEvents, RpcRequest } from './types.js';

export interface PublisherDeps {
  broker: Pick<BrokerPort, 'publish'>;
  window: StateWindow;
  open: OpenCommands;
  /** The store while the service runs (null once stopped). */
  store: () => RpcStoreSql | null;
  enc: CommandEncoder;
  tbIds: TbIds;
  metrics: RpcMetrics;
  logger: Logger;
  clock: Clock;
  emit: <K extends keyof RpcEvents>(event: K, e: RpcEvents[K]) => void;
  /** true when a command sent now would be published at once (connected, subscribed, not being claimed). */
  isReady(deviceId: string): boolean;
  /** A move nobody awaits, into the state window. */
  post(c: RpcCas): void;
  /** Expires a held command (expiry.ts). */
  expire(r: RpcRequest, now: number): void;
  /** Expires what is due now (expiry.ts). */
  sweep(): void;
  /** Cluster mode (ownership on PostgreSQL): a move to `sent` may miss because another node withdrew the command. */
  clustered: boolean;
  /** Cluster mode: false while this node is fenced (its lease not renewed in time); what it withholds stays for its owner. */
  canPublish?: () => boolean;
}

export class CommandPublisher {
  /** Per-device publish chain: commands reach a device in the order they were sent. */
  private readonly chains = new Map<string, Promise<void>>();

  constructor(private readonly d: PublisherDeps) {}

  /** Re-sends the device's queued and unanswered commands in creation order; expires the stale ones. */
  flush(deviceId: string): void {
    if (!this.d.store() || !this.d.isReady(deviceId)) return;
    const now = this.d.clock.now();
    let resent = 0;
    for (const r of this.d.open.device(deviceId)) {
      if (r.expiresAt <= now) {
        if (r.state === 'queued') this.d.expire(r, now);
        continue; // a sent one past expiresAt is left to the answer grace period
      }
      if (this.publish(r, true)) resent++;
    }
    if (resent > 0) this.d.logger.debug({ deviceId, resent }, 'held rpc requests sent after reconnect');
  }

  /** Cluster mode: commands taken from the database (pickup, adoption): published when their device is ready; due ones expire. */
  taken(rows: readonly RpcRequest[]): void {
    const now = this.d.clock.now();
    for (const r0 of rows) {
      const r = this.d.open.get(r0.id);
      if (!r || r.expiresAt <= now || !this.d.isReady(r.deviceId)) continue;
      this.publish(r, r.state === 'sent');
    }
    this.d.sweep();
  }

  /** Marks a held command sent and publishes it after that commit. false when the params hook failed (stays queued). */
  publish(r0: RpcRequest, resend: boolean): boolean {
    const { tbIds } = this.d;
    let r = r0;
    let tbId: number | undefined;
    if (tbIds.isTokenSession(r.deviceId) && r.tbId === null) {
      tbId = tbIds.next(r.deviceId)!;
      r = { ...r, tbId };
    }
    const topicId = tbIds.topicId(r);
    const payload = this.payloadOf(r, topicId);
    if (payload === null) return false;
    const now = this.d.clock.now();
    const wasSent = r.state === 'sent';
    const sent: RpcRequest = { ...r, state: 'sent', sentAt: now };
    this.d.open.put(sent);
    this.d.post({ id: r.id, deviceId: r.deviceId, from: r0.state, to: 'sent', at: now, ...(tbId !== undefined ? { tbId } : {}) });
    this.d.metrics.sent.labels({ method: r.method, resend: String(resend || wasSent) }).inc();
    const store = this.d.store()!;
    this.d.window.afterCommit(() => {
      // Cluster mode: the move to `sent` missed (another node cancelled or finished the command meanwhile, e.g. a
      // broadcast stopped there): it must not go out; memory forgets it.
      if (this.d.clustered && store.sendMissed(r.id)) { this.dropMissed(r.id); return; }
      void this.chainPublish(r.deviceId, r.id, topicId, payload);
    });
    this.d.emit('sent', { request: sent, at: now, resend: resend || wasSent });
    return true;
  }

  /** The request payload on the wire; null when the params hook or the signer failed. */
  payloadOf(r: RpcRequest, topicId: string): Buffer | null {
    const params = this.d.enc.sendParams(r);
    return params === null ? null : this.d.enc.encode({ topicId, deviceId: r.deviceId, method: r.method, expiresAt: r.expiresAt }, params);
  }

  /**
   * Publishes after the device's earlier commands (per-device chain), so they arrive in the order
   * sent. A payload still being signed holds the chain until it is; null (signing failed, logged)
   * keeps the command for the next connect. The promise settles when this one is out (or kept for later).
   */
  chainPublish(deviceId: string, requestId: string, topicId: string, payload: Buffer | Promise<Buffer | null>): Promise<void> {
    const topic = `v1/devices/${deviceId}/rpc/request/${topicId}`;
    const prev = this.chains.get(deviceId) ?? Promise.resolve();
    const next = prev.then(() => payload).then((p) => {
      if (p !== null && this.d.canPublish?.() !== false) return this.d.broker.publish(topic, p, { qos: 1 });
      this.requeue(requestId);
      return undefined;
    }).catch((err: unknown) => {
      // Not delivered: keep it for the next connect (unless answered meanwhile).
      this.d.logger.warn({ err, requestId, deviceId }, 'rpc publish failed: request kept for the next connect');
      this.requeue(requestId);
    });
    this.chains.set(deviceId, next);
    void next.then(() => { if (this.chains.get(deviceId) === next) this.chains.delete(deviceId); });
    return next;
  }

  /** Resolves once every publish begun so far has ended (out, or kept for later); forgets the chains. */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.chains.values()]);
    this.chains.clear();
  }

  /** Cluster mode: a command whose move to `sent` missed in the database is no longer this node's to publish. */
  private dropMissed(id: string): void {
    const r = this.d.open.get(id);
    if (r?.state !== 'sent') return;
    this.d.open.remove(id);
    this.d.logger.debug({ requestId: id, deviceId: r.deviceId }, 'rpc command not published: finished by another node (cancelled) before it went out');
    this.d.emit('withdrawn', { request: r, at: this.d.clock.now() });
  }

  /** A sent command that did not go out: queued again (unless answered or expired meanwhile). */
  private requeue(requestId: string): void {
    const r = this.d.open.get(requestId);
    if (!r || r.state !== 'sent' || !this.d.store()) return;
    this.d.open.put({ ...r, state: 'queued' });
    this.d.post({ id: r.id, deviceId: r.deviceId, from: 'sent', to: 'queued' });
  }
}

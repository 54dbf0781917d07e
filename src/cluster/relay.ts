/**
 * Committed readings → the cluster bus, one publish per committed batch.
 *
 * Ingest emits `telemetry` (readings durable) for every reading of a group
 * commit synchronously, in one post-commit callback (ingest/handlers/
 * telemetry.ts afterCommit). The relay collects them and publishes once, in a
 * microtask after that callback: one call (one stream entry) per commit, not
 * per reading, without the ingest path knowing the bus exists.
 *
 * `telemetry`, not `telemetry.accepted`: only readings the store made
 * durable cross to other nodes, so no node shows a reading that was then
 * refused (the local view may, briefly: it prefers latency).
 */
import type { EventBus, TelemetryEvent } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import type { ClusterBus } from './port.js';

export class CommitRelay implements Component {
  readonly name = 'cluster-relay';
  private pending: TelemetryEvent[] = [];
  private scheduled = false;
  private off: (() => void) | null = null;

  constructor(private readonly d: { bus: Pick<EventBus, 'on'>; cluster: Pick<ClusterBus, 'publish' | 'shares'>; logger?: Logger }) {}

  async start(): Promise<void> {
    // Embedded mode: not even a listener on the hot path.
    if (this.d.cluster.shares) this.off ??= this.d.bus.on('telemetry', this.onTelemetry);
  }

  async stop(): Promise<void> {
    this.off?.();
    this.off = null;
    this.flush();
  }

  private readonly onTelemetry = (e: TelemetryEvent): void => {
    this.pending.push(e);
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(this.flush);
  };

  private readonly flush = (): void => {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    try { this.d.cluster.publish(batch); } catch (err) {
      // A port must not throw; if one does, an exception in a microtask would end the process.
      this.d.logger?.error({ err }, 'cluster bus publish threw; batch not shared');
    }
  };
}

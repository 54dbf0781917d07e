/** The live feed's Prometheus instruments, on the app's registry (names: docs/metrics.md "Live feed"). */
import type { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { counterOn, gaugeOn, histogramOn } from '../core/metrics.js';

export interface LiveMetrics {
  clients: Gauge;
  slowClients: Gauge;
  throttledClients: Gauge;
  connects: Counter;
  refused: Counter<'reason'>;
  dropped: Counter<'reason'>;
  requestsRefused: Counter<'request' | 'reason'>;
  coalesced: Counter;
  emitted: Counter<'type'>;
  batchWait: Histogram;
}

/**
 * Events counted on the hot path, added to the prom-client instruments on
 * each periodic check: a field increment per event rather than a prom-client
 * call.
 */
export interface EventCounts { telemetry: number; status: number; broadcast: number; alert: number; alertRule: number; coalesced: number }


export function liveMetrics(registry: Registry): LiveMetrics {
  return {
    clients: gaugeOn(registry, 'keng_live_clients', 'Connected live-feed (socket.io) clients'),
    slowClients: gaugeOn(registry, 'keng_live_slow_clients', 'Live-feed clients currently backed up (receiving coalesced updates)'),
    throttledClients: gaugeOn(registry, 'keng_live_throttled_clients', 'Single-event live-feed clients currently throttled (over live.maxEventRate)'),
    connects: counterOn(registry, 'keng_live_connects_total', 'Accepted live-feed connections'),
    refused: counterOn(registry, 'keng_live_refused_total', 'Refused live-feed handshakes by reason', ['reason'] as const),
    dropped: counterOn(registry, 'keng_live_dropped_total', 'Live-feed clients disconnected by the server, by reason', ['reason'] as const),
    requestsRefused: counterOn(registry, 'keng_live_requests_refused_total', 'Live-feed subscribe/unsubscribe requests refused unprocessed, by request and reason',
      ['request', 'reason'] as const),
    coalesced: counterOn(registry, 'keng_live_coalesced_total', 'Updates held back for a backed-up client and merged into its latest-value set'),
    emitted: counterOn(registry, 'keng_live_events_total', 'Events published to live-feed rooms, by type', ['type'] as const),
    batchWait: histogramOn(registry, 'keng_live_batch_wait_seconds', 'Time the oldest reading of a telemetry.batch waited in its buffer before the batch was emitted',
      [0.001, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1]),
  };
}

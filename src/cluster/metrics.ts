/** The live bus's Prometheus instruments (names: docs/metrics.md "Cluster live bus"). */
import type { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { counterOn, gaugeOn, histogramOn } from '../core/metrics.js';

export interface BusMetrics {
  up: Gauge;
  outages: Counter;
  entries: Counter<'direction'>;
  readings: Counter<'direction'>;
  unsent: Counter<'reason'>;
  badEntries: Counter;
  missedEntries: Counter;
  delay: Histogram;
  claims: Counter<'direction'>;
}

export function busMetrics(registry: Registry | undefined): BusMetrics {
  return {
    up: gaugeOn(registry, 'keng_cluster_bus_up', 'Whether this node reaches the Redis of the live bus (1) or not (0)'),
    outages: counterOn(registry, 'keng_cluster_bus_outages_total', 'Times the live bus lost Redis (one per outage, not per failed call)'),
    entries: counterOn(registry, 'keng_cluster_bus_entries_total', 'Live-bus stream entries sent by this node and received from other nodes', ['direction'] as const),
    readings: counterOn(registry, 'keng_cluster_bus_readings_total', 'Readings sent on the live bus and received from other nodes', ['direction'] as const),
    unsent: counterOn(registry, 'keng_cluster_bus_unsent_readings_total', 'Committed readings this node could not forward to the other nodes, by reason', ['reason'] as const),
    badEntries: counterOn(registry, 'keng_cluster_bus_bad_entries_total', 'Live-bus entries from other nodes that could not be decoded (skipped)'),
    missedEntries: counterOn(registry, 'keng_cluster_bus_missed_entries_total', 'Entries of other nodes this node never read (gaps in their sequence numbers: outages, trimming)'),
    delay: histogramOn(registry, 'keng_cluster_bus_delay_seconds', 'From another node sending an entry to this node handing it to its live feed (node clocks)',
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
    claims: counterOn(registry, 'keng_cluster_bus_session_claims_total', 'Device session claims announced on the live bus (sent, unsent) and read from other nodes (received)', ['direction'] as const),
  };
}

/** Calls between nodes (calls.ts; docs/metrics.md "Cluster live bus"). */
export interface CallMetrics {
  calls: Counter<'kind' | 'outcome'>;
  served: Counter<'kind' | 'result'>;
}

export function callMetrics(registry: Registry | undefined): CallMetrics {
  return {
    calls: counterOn(registry, 'keng_cluster_calls_total',
      'Calls this node made to another node over the bus, by kind and outcome (answered, unsent, no_answer)', ['kind', 'outcome'] as const),
    served: counterOn(registry, 'keng_cluster_calls_served_total',
      'Calls from other nodes this node received, by kind and result (done, failed, duplicate, stale, unknown_kind, answer_unsent)', ['kind', 'result'] as const),
  };
}

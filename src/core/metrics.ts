import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';

/**
 * An instrument of `registry`, made on first use and shared after: parts
 * that are built more than once on one registry (several apps in one test
 * process, a second live feed) get the same instrument instead of a
 * "metric already registered" error. Without a registry (a part built
 * without metrics) the instrument counts but is not exported.
 */
export function counterOn<L extends string = string>(registry: Registry | undefined, name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
  return (registry?.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter<L>({ name, help, labelNames, registers: registry ? [registry] : [] });
}

export function gaugeOn<L extends string = string>(registry: Registry | undefined, name: string, help: string, labelNames: readonly L[] = []): Gauge<L> {
  return (registry?.getSingleMetric(name) as Gauge<L> | undefined) ?? new Gauge<L>({ name, help, labelNames, registers: registry ? [registry] : [] });
}

export function histogramOn<L extends string = string>(registry: Registry | undefined, name: string, help: string, buckets: number[], labelNames: readonly L[] = []): Histogram<L> {
  return (registry?.getSingleMetric(name) as Histogram<L> | undefined)
    ?? new Histogram<L>({ name, help, buckets, labelNames, registers: registry ? [registry] : [] });
}

/** What a per-message path increments. */
export interface CountChild { inc(value?: number): void }

/**
 * Counts of a per-message path (~100,000 messages/s) kept as plain numbers per
 * label value and added to the prom-client counter when it is read (its
 * collect(), run by every scrape and by get()): prom-client hashes the label
 * set on every inc(), which showed up in the broker thread's profile.
 */
export class HotCounts {
  private readonly children = new Map<string, { n: number; inc(v?: number): void }>();
  private target: Counter<string> | null = null;

  constructor(private readonly label: string) {}

  /** The counter the sums go into (set once, by the counter's owner). */
  attach(c: Counter<string>): void { this.target = c; }

  child(value: string): CountChild {
    let c = this.children.get(value);
    if (!c) {
      c = { n: 0, inc(v = 1) { this.n += v; } };
      this.children.set(value, c);
    }
    return c;
  }

  /** Move the pending sums into the counter. */
  flush(): void {
    const t = this.target;
    if (!t) return;
    for (const [value, c] of this.children) {
      if (c.n === 0) continue;
      t.inc({ [this.label]: value }, c.n);
      c.n = 0;
    }
  }
}

/**
 * One Prometheus registry per app instance (tests run several apps in one
 * process, so nothing is registered globally). Modules take the instruments
 * they need from here; names are listed in docs/metrics.md.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly mqttConnections = new Gauge({ name: 'keng_mqtt_connections', help: 'Connected MQTT clients', registers: [this.registry] });
  readonly mqttConnectsTotal = new Counter({ name: 'keng_mqtt_connects_total', help: 'Accepted MQTT connections', registers: [this.registry] });
  readonly mqttRefusedTotal = new Counter({
    name: 'keng_mqtt_refused_total', help: 'Refused MQTT operations by reason (connect, publish, subscribe)',
    labelNames: ['op', 'reason'] as const, registers: [this.registry],
  });
  readonly mqttProxyRefusedTotal = new Counter({
    name: 'keng_mqtt_proxy_refused_total', help: 'MQTT connections closed for want of a valid PROXY protocol header from a trusted proxy (mqtt.proxyProtocol required)',
    labelNames: ['reason'] as const, registers: [this.registry],
  });
  readonly throttledMessagesTotal = new Counter({
    name: 'keng_throttled_messages_total', help: 'Device messages held back by their rate limit (flow control: delayed, not dropped)', registers: [this.registry],
  });
  readonly throttledSecondsTotal = new Counter({
    name: 'keng_throttled_seconds_total', help: 'Seconds device messages were held back by their rate limit, summed over messages', registers: [this.registry],
  });
  /** Per-message counts of messagesInTotal{type} (count with messagesIn(type).inc()). */
  private readonly inCounts = new HotCounts('type');
  readonly messagesInTotal = new Counter({
    name: 'keng_messages_in_total', help: 'MQTT messages received from devices by type', labelNames: ['type'] as const, registers: [this.registry],
    collect: () => { this.inCounts.flush(); },
  });
  readonly readingsAcceptedTotal = new Counter({ name: 'keng_readings_accepted_total', help: 'Readings validated and committed to disk', registers: [this.registry] });
  readonly readingsStoredTotal = new Counter({ name: 'keng_readings_stored_total', help: 'Readings written to the telemetry store', labelNames: ['store'] as const, registers: [this.registry] });
  readonly rejectedTotal = new Counter({
    name: 'keng_rejected_total', help: 'Rejected device messages or readings by reason', labelNames: ['reason'] as const, registers: [this.registry],
  });
  readonly readingsDeadLetteredTotal = new Counter({
    name: 'keng_readings_dead_lettered_total', help: 'Acknowledged readings kept in the dead-letter table instead of the store, by store and reason',
    labelNames: ['store', 'reason'] as const, registers: [this.registry],
  });
  readonly duplicatesTotal = new Counter({ name: 'keng_readings_duplicate_total', help: 'Readings ignored as duplicates of (device, ts, field)', registers: [this.registry] });
  readonly queueDepth = new Gauge({ name: 'keng_queue_depth_readings', help: 'Readings waiting in the on-disk queue for the telemetry database', registers: [this.registry] });
  readonly queueBytes = new Gauge({ name: 'keng_queue_bytes', help: 'Bytes used by the on-disk queue', registers: [this.registry] });
  readonly queueCapBytes = new Gauge({ name: 'keng_queue_cap_bytes', help: 'Configured disk cap of the on-disk queue', registers: [this.registry] });
  readonly queueOldestAgeSeconds = new Gauge({ name: 'keng_queue_oldest_age_seconds', help: 'Age of the oldest readings waiting in the PostgreSQL outbox for InfluxDB (cluster mode); 0 when empty', registers: [this.registry] });
  readonly commitLatency = new Histogram({
    name: 'keng_commit_seconds', help: 'Group-commit latency (readings durable on disk)',
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1], registers: [this.registry],
  });
  readonly storeWriteLatency = new Histogram({
    name: 'keng_store_write_seconds', help: 'Telemetry store write latency by store', labelNames: ['store'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry],
  });
  readonly storeErrorsTotal = new Counter({ name: 'keng_store_errors_total', help: 'Failed telemetry store writes by store and kind', labelNames: ['store', 'kind'] as const, registers: [this.registry] });
  readonly devicesOnline = new Gauge({ name: 'keng_devices_online', help: 'Devices currently online', registers: [this.registry] });
  /** keng_messages_in_total{type} for the per-message path (see HotCounts). */
  messagesIn(type: string): CountChild { return this.inCounts.child(type); }

  readonly httpErrorsTotal = new Counter({ name: 'keng_http_errors_total', help: 'HTTP error replies by code', labelNames: ['code'] as const, registers: [this.registry] });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    this.inCounts.attach(this.messagesInTotal as Counter<string>);
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'keng_' });
  }
}

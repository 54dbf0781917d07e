import type { Scalar } from '../../core/events.js';
import type { Component } from '../../core/lifecycle.js';
import type { Clock } from '../../core/clock.js';
import type { Logger } from '../../core/logger.js';
import type { Metrics } from '../../core/metrics.js';
import type { Timers } from './timers.js';
import type { SetAsideReading } from './field-types.js';

export type { SetAsideReading } from './field-types.js';

/** One device message's readings at one timestamp (after validation). */
export interface TelemetryRecord {
  deviceId: string;
  kind: string;
  /** Code of the device's area (commune/village): an InfluxDB tag for grouping by area; '' or absent = none. */
  area?: string;
  ts: number; // epoch ms
  values: Record<string, Scalar>;
}

/** Aggregates of the history query, the same on every store. */
export const AGGS = ['mean', 'min', 'max', 'sum', 'count', 'last'] as const;
export type Agg = (typeof AGGS)[number];

export interface HistoryQuery {
  deviceId: string;
  /** Fields to return; empty = all fields the device has in the window. */
  fields: string[];
  from: number; // inclusive, epoch ms
  to: number;   // exclusive, epoch ms
  /** Window in ms; absent = raw points. Windows are aligned to the Unix epoch (as InfluxQL GROUP BY time). */
  everyMs?: number;
  agg?: Agg;
  /** Maximum points returned (raw); the API pages beyond it. */
  limit?: number;
}

export interface HistoryPoint { ts: number; values: Record<string, Scalar> }

export interface WriteResult {
  /** Readings (device, ts, field) newly accepted. */
  written: number;
  /** Readings ignored as duplicates (embedded store knows; InfluxDB overwrites identical points). */
  duplicates: number;
  /**
   * Readings not stored as readings because their type differs from the
   * field's (field-types.ts); they are in the dead-letter table. Present only
   * when there are some, so latest values can leave them out.
   */
  setAside?: SetAsideReading[];
}

/**
 * A telemetry store. `writeBatch` resolves only when the records are durable
 * (the QoS 1 PUBACK depends on it): for the embedded store that is the SQLite
 * commit; for InfluxDB it is the commit into the on-disk queue in front of it,
 * which a forwarder drains to the database; for PostgreSQL (cluster mode) it is
 * the COMMIT on the server.
 */
export interface TelemetryStore extends Component {
  readonly kind: 'embedded' | 'influxdb-v1' | 'influxdb-v2' | 'postgres';
  writeBatch(records: TelemetryRecord[]): Promise<WriteResult>;
  /**
   * Settle the writeBatch calls whose commit has finished, now (cheap when
   * none has). The group committer calls it between messages so PUBACKs of a
   * finished commit need not wait for the next turn of the event loop.
   */
  settleFinished?(): void;
  query(q: HistoryQuery): Promise<HistoryPoint[]>;
  /** Usable for /readyz: local disk queue writable; for InfluxDB also whether the server answers (reported, not required). */
  health(): Promise<{ ok: boolean; detail: Record<string, unknown> }>;
  /** Wait until every queued record has reached the database (tests, shutdown); false on timeout. */
  drain(timeoutMs: number): Promise<boolean>;
}

/** What a purge removed so far, per place (e.g. `readings`, `deadReadings`, `queuedReadings`, `influxReadings`). */
export type PurgeCounts = Record<string, number>;

/**
 * Removing one device's readings (telemetry.onDeviceDelete = 'purge', docs/telemetry-storage.md
 * "Deleting a device"): readings with ts < `before`, or all of them when `before` is null. Both
 * steps are idempotent (a purge cut short by a crash is simply run again), work in bounded chunks
 * so writes keep flowing meanwhile, add what they removed to `removed`, and stop early (rejecting)
 * when `signal` aborts.
 */
export interface TelemetryPurge {
  /** What is on this machine: the embedded store, or the InfluxDB queue; and the dead-letter tables. */
  purgeLocal(deviceId: string, before: number | null, removed: PurgeCounts, signal: AbortSignal): Promise<void>;
  /** The remote database (InfluxDB); nothing for the embedded store. Rejects while it cannot be reached. */
  purgeRemote(deviceId: string, before: number | null, removed: PurgeCounts, signal: AbortSignal): Promise<void>;
}

/** What createTelemetryStore and the stores need. */
export interface TelemetryStoreDeps {
  dataDir: string;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  /** Optional: timer for retention and the InfluxDB retry back-off (tests simulate long outages with a fast one). */
  timers?: Timers;
  /** Optional: jitter source of the back-off (tests). */
  random?: () => number;
}

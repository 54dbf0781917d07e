/**
 * Telemetry storage: `createTelemetryStore(config, deps)` picks the embedded
 * SQLite store (`telemetry.store = 'embedded'`, default) or InfluxDB behind an
 * on-disk queue (`telemetry.store = 'influxdb'`, API by `influx.api`).
 *
 * query() gives the same answers on both (test/integration/influx-v1.test.ts
 * checks raw and every aggregate). Unavoidable differences:
 *  - InfluxDB answers from what the forwarder has delivered; readings still in
 *    the on-disk queue (server down) show up once forwarded.
 *  - SQLite sums with compensated summation, InfluxDB naively: mean/sum of
 *    arbitrary floats may differ in the last bits (identical when sums are exact).
 *  - Field types follow one rule in both stores (field-types.ts): a value whose
 *    type differs from its field's first stored value goes to `dead_readings`.
 *    What InfluxDB refuses anyway (another writer changed a type, a field
 *    named `time` on 1.x) is dead-lettered reading by reading (forwarder.ts).
 *  - `influx.api = 'v2'` queries with Flux (needs the `types` package: InfluxDB
 *    2.1+ / Cloud TSM). InfluxDB 3.x has no Flux: use `api = 'v1'` (its v1
 *    compatibility /write and InfluxQL /query endpoints).
 */
import { hostname } from 'node:os';
import type { Config } from '../../config/index.js';
import { Errors } from '../../core/errors.js';
import { EmbeddedTelemetryStore } from './embedded-store.js';
import { InfluxTelemetryStore } from './influx-store.js';
import { InfluxV1Backend } from './influx-v1.js';
import { InfluxV2Backend } from './influx-v2.js';
import { PgInfluxTelemetryStore } from './pg-influx-store.js';
import { PgTelemetryStore } from './pg-store.js';
import type { TelemetryPurge, TelemetryStore, TelemetryStoreDeps } from './types.js';
import type { Db } from '../sql/index.js';

export type { TelemetryStore, TelemetryRecord, HistoryQuery, HistoryPoint, WriteResult, Agg, TelemetryStoreDeps, TelemetryPurge, PurgeCounts } from './types.js';
export type { Timers } from './timers.js';
export type { QueueTotals } from './outbox-db.js';
export { EmbeddedTelemetryStore } from './embedded-store.js';
export { InfluxTelemetryStore } from './influx-store.js';
export { PgTelemetryStore } from './pg-store.js';
export { PgInfluxTelemetryStore } from './pg-influx-store.js';
export { windowStart } from './windows.js';


/**
 * In cluster mode (`cluster.databaseUrl` set, `clusterDb` its connection) `embedded` means the
 * cluster database: readings are committed in PostgreSQL (pg-store.ts), where every node sees them;
 * `influxdb` commits them to a PostgreSQL outbox that every node forwards to InfluxDB (pg-influx-store.ts).
 */
export function createTelemetryStore(config: Readonly<Config>, deps: TelemetryStoreDeps & { clusterDb?: Db<unknown> | null }): TelemetryStore & TelemetryPurge {
  const cluster = config.cluster.databaseUrl;
  if (cluster !== undefined && !deps.clusterDb) throw Errors.CONFIG('KENG_DATABASE_URL: cluster mode without a database connection');
  if (config.telemetry.store === 'embedded') {
    if (cluster !== undefined) {
      return new PgTelemetryStore(config, { db: deps.clusterDb!, url: cluster, logger: deps.logger, metrics: deps.metrics, clock: deps.clock, timers: deps.timers });
    }
    return new EmbeddedTelemetryStore(config, deps);
  }
  if (!config.influx.url) throw Errors.CONFIG('influx.url: required when telemetry.store is "influxdb"');
  const logger = deps.logger;
  const backend = config.influx.api === 'v1'
    ? new InfluxV1Backend(config.influx, logger)
    : new InfluxV2Backend(config.influx, logger);
  if (config.influx.api === 'v2' && (!config.influx.org || !config.influx.bucket)) {
    logger.warn('influx.api is v2 but influx.org or influx.bucket is not set; using bucket = influx.database');
  }
  // Cluster mode: the queue is a PostgreSQL outbox that every node forwards from (pg-influx-store.ts).
  if (cluster !== undefined) {
    return new PgInfluxTelemetryStore(config, backend, { ...deps, db: deps.clusterDb!, url: cluster, nodeId: config.cluster.nodeId ?? hostname() });
  }
  return new InfluxTelemetryStore(config, backend, deps);
}

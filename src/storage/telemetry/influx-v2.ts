/**
 * InfluxDB 2.x / 3.x / Cloud through @influxdata/influxdb-client.
 * Writes: a WriteApi per HTTP write with the client's own retrying and
 * buffering off (`maxRetries: 0`, no flush interval, batch larger than the
 * body): the on-disk queue is the only buffer, and the outcome of each write
 * is returned to the forwarder. Queries: Flux (flux.ts) via QueryApi.
 */
import { HttpError, InfluxDB, setLogger } from '@influxdata/influxdb-client';
import type { Config } from '../../config/index.js';
import { Errors } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { buildFlux } from './flux.js';
import { networkMessage, outcomeForStatus, type InfluxBackend, type WriteOutcome } from './influx-backend.js';
import type { HistoryPoint, HistoryQuery } from './types.js';
import { PointBuilder, normaliseQuery, windowStart } from './windows.js';
import type { Scalar } from '../../core/events.js';

type InfluxSettings = Config['influx'];

let clientLoggerSet = false;

export class InfluxV2Backend implements InfluxBackend {
  readonly kind = 'influxdb-v2' as const;
  private readonly client: InfluxDB;
  private readonly url: string;

  constructor(private readonly cfg: Readonly<InfluxSettings>, private readonly logger: Logger) {
    this.url = (cfg.url ?? 'http://127.0.0.1:8086').replace(/\/+$/, '');
    this.client = new InfluxDB({ url: this.url, token: cfg.token, timeout: cfg.timeoutMs });
    if (!clientLoggerSet) {
      // The client logs each failed write itself; the forwarder already does (with context). Keep its lines at debug.
      clientLoggerSet = true;
      setLogger({
        error: (message: string, err?: unknown) => logger.debug({ err }, `influxdb-client: ${message}`),
        warn: (message: string, err?: unknown) => logger.debug({ err }, `influxdb-client: ${message}`),
      });
    }
  }

  private get org(): string { return this.cfg.org ?? ''; }
  private get bucket(): string { return this.cfg.bucket ?? this.cfg.database; }

  async init(): Promise<void> { /* buckets are provisioned by the operator */ }

  async write(body: string, _lines: number, signal: AbortSignal): Promise<WriteOutcome> {
    const api = this.client.getWriteApi(this.org, this.bucket, 'ms', {
      maxRetries: 0, batchSize: 2, flushInterval: 0, maxBatchBytes: Number.MAX_SAFE_INTEGER, maxBufferLines: 1,
    });
    const onAbort = (): void => { void api.close().catch(() => undefined); };
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      // The whole body is one "record" (it may hold raw newlines inside quoted strings, so it is never split).
      api.writeRecord(body);
      await api.close(); // flushes: resolves on 2xx, rejects with the server's error
      return { ok: true, status: 204 };
    } catch (err) {
      if (err instanceof HttpError) return outcomeForStatus(err.statusCode, err.json?.message ?? err.body ?? err.message);
      return { ok: false, retry: true, status: null, message: networkMessage(err) };
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  async query(input: HistoryQuery): Promise<HistoryPoint[]> {
    const q = normaliseQuery(input);
    if (q.everyMs === undefined && q.limit === 0) return [];
    const flux = buildFlux(this.bucket, this.cfg.measurement, q);
    let rows: { _time: string; _field: string; _value: Scalar | null }[];
    try {
      rows = await this.client.getQueryApi(this.org).collectRows(flux);
    } catch (err) {
      throw Errors.STORE_UNAVAILABLE(`InfluxDB query failed: ${(err as Error).message}`);
    }
    const pb = new PointBuilder();
    for (const r of rows) {
      let ts = Date.parse(r._time);
      if (q.everyMs !== undefined) ts = windowStart(ts, q.everyMs);
      pb.add(ts, r._field, r._value);
    }
    return pb.build(q.everyMs === undefined ? q.limit : undefined);
  }

  /**
   * The delete API (POST /api/v2/delete: time range and predicate, InfluxDB 2.x). It returns no
   * count, so null. InfluxDB 3.x has no such API and refuses: the purge is retried and logged
   * (docs/telemetry-storage.md "Deleting a device").
   */
  async deleteDevice(deviceId: string, before: number | null, signal: AbortSignal): Promise<number | null> {
    const url = `${this.url}/api/v2/delete?org=${encodeURIComponent(this.org)}&bucket=${encodeURIComponent(this.bucket)}`;
    const quote = (v: string): string => '"' + v.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
    const body = JSON.stringify({
      start: '1970-01-01T00:00:00Z',
      // Both ends are inclusive; the newest point InfluxDB can hold when there is no bound.
      stop: before === null ? '2262-04-11T00:00:00Z' : new Date(before - 1).toISOString(),
      predicate: `_measurement=${quote(this.cfg.measurement)} AND device_id=${quote(deviceId)}`,
    });
    const res = await fetch(url, {
      method: 'POST', body,
      headers: { authorization: `Token ${this.cfg.token ?? ''}`, 'content-type': 'application/json' },
      signal: AbortSignal.any([signal, AbortSignal.timeout(this.cfg.timeoutMs)]),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`InfluxDB answered ${res.status} to the delete: ${text.slice(0, 200)}`);
    return null;
  }

  async ping(timeoutMs: number): Promise<boolean> {
    try {
      const res = await fetch(`${this.url}/ping`, { signal: AbortSignal.timeout(timeoutMs) });
      await res.arrayBuffer();
      return res.status === 204 || res.ok;
    } catch { return false; }
  }

  async close(): Promise<void> { /* nothing held open */ }
}

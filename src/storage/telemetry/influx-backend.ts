/**
 * What the queue's forwarder and the InfluxDB store need from a server API
 * (v1: influx-v1.ts, v2: influx-v2.ts).
 */
import type { HistoryPoint, HistoryQuery } from './types.js';

export type WriteOutcome =
  | { ok: true; status: number }
  /** retry: network error, timeout, 5xx, 429/408, or a configuration problem (401/403/404) the operator can fix; else rejected (dead-letter). */
  | { ok: false; retry: boolean; status: number | null; message: string };

export interface InfluxBackend {
  readonly kind: 'influxdb-v1' | 'influxdb-v2';
  /** Prepare the server (v1: CREATE DATABASE). May fail while the server is down: the caller logs and carries on. */
  init(): Promise<void>;
  /** One HTTP write of line protocol (precision ms). Never throws. */
  write(body: string, lines: number, signal: AbortSignal): Promise<WriteOutcome>;
  query(q: HistoryQuery): Promise<HistoryPoint[]>;
  /**
   * Field names and InfluxDB types of the measurement (several pairs for one
   * field when shards differ), so the field-type rule starts from what the
   * server already holds. Absent when the API cannot tell (v2). Throws when
   * the server cannot be asked.
   */
  fieldTypes?(): Promise<[string, string][]>;
  /**
   * Deletes the device's points (tag `device_id`) of the measurement with time < `before` (all when
   * null). Resolves with how many readings there were when the server can tell (null otherwise);
   * rejects when the server cannot be reached or refuses (the purge is retried later).
   */
  deleteDevice(deviceId: string, before: number | null, signal: AbortSignal): Promise<number | null>;
  ping(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * Status → outcome (nothing acknowledged is ever dropped): 2xx ok; 5xx, 408, 429 retry; 401/403 (bad
 * credentials) and 404 (database/bucket missing) retry too: the readings are
 * fine and the operator can fix the setting, so dead-lettering everything
 * would be wrong; any other 4xx (type conflict, partial write, bad line,
 * too large) is a rejection of this data.
 */
export function outcomeForStatus(status: number, message: string): WriteOutcome {
  if (status >= 200 && status < 300) return { ok: true, status };
  const retry = status >= 500 || status === 408 || status === 429 || status === 401 || status === 403 || status === 404 || status < 400;
  return { ok: false, retry, status, message: message || `HTTP ${status}` };
}

/** Message of a network-level failure (fetch TypeError with a cause, AbortError, ...). */
export function networkMessage(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'request timed out or aborted';
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}

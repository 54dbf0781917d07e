/**
 * InfluxQL text for history queries on InfluxDB 1.x (same answers as the embedded store: windows.ts), and parsing
 * of its JSON answers into HistoryPoints.
 *
 *   raw:  SELECT "a","b" FROM "telemetry" WHERE "device_id"='d' AND time >= Fms AND time < Tms ORDER BY time ASC LIMIT n
 *   agg:  SELECT mean("a") AS "a", ... GROUP BY time(300000ms) fill(none)
 * `*::field` selects every field when no field is named (raw only; aggregates
 * name the fields from SHOW FIELD KEYS so numeric-only aggregates can leave
 * out boolean/string fields, which InfluxQL would otherwise refuse).
 */
import type { Scalar } from '../../core/events.js';
import type { Agg, HistoryPoint, HistoryQuery } from './types.js';
import { PointBuilder, windowStart } from './windows.js';

export function quoteIdent(s: string): string {
  return '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}

export function quoteLiteral(s: string): string {
  return "'" + s.replace(/\\/g, '\\\\').replace(/'/g, "\\'") + "'";
}

function where(measurement: string, q: HistoryQuery): string {
  return ` FROM ${quoteIdent(measurement)} WHERE "device_id" = ${quoteLiteral(q.deviceId)}`
    + ` AND time >= ${Math.ceil(q.from)}ms AND time < ${Math.ceil(q.to)}ms`;
}

export function rawStatement(measurement: string, q: HistoryQuery): string {
  const sel = q.fields.length ? q.fields.map(quoteIdent).join(', ') : '*::field';
  return `SELECT ${sel}${where(measurement, q)} ORDER BY time ASC${q.limit !== undefined ? ` LIMIT ${q.limit}` : ''}`;
}

export function aggStatement(measurement: string, q: HistoryQuery, agg: Agg, fields: string[]): string {
  const sel = fields.map((f) => `${agg}(${quoteIdent(f)}) AS ${quoteIdent(f)}`).join(', ');
  return `SELECT ${sel}${where(measurement, q)} GROUP BY time(${q.everyMs}ms) fill(none)`;
}

export function showFieldKeysStatement(measurement: string): string {
  return `SHOW FIELD KEYS FROM ${quoteIdent(measurement)}`;
}

/**
 * A purge of one device (types.ts TelemetryPurge) on InfluxDB 1.x: `count` (its readings, all
 * fields summed by countTotal) then `remove`. Without a time bound DROP SERIES, which also takes the
 * device out of the series index (SHOW TAG VALUES no longer lists it); with one, DELETE (1.x
 * DELETE accepts tag and time conditions only, which is all this needs).
 */
export function deleteDeviceStatements(measurement: string, deviceId: string, before: number | null): { count: string; remove: string } {
  const m = quoteIdent(measurement);
  const dev = `"device_id" = ${quoteLiteral(deviceId)}`;
  const where = before === null ? dev : `${dev} AND time < ${Math.ceil(before)}ms`;
  return {
    count: `SELECT COUNT(*) FROM ${m} WHERE ${where}`,
    remove: before === null ? `DROP SERIES FROM ${m} WHERE ${dev}` : `DELETE FROM ${m} WHERE ${where}`,
  };
}

/** The sum of every count column of a COUNT(*) answer (readings over all fields). */
export function countTotal(r: InfluxQLResult): number {
  let n = 0;
  for (const s of r.series ?? []) {
    const ti = s.columns.indexOf('time');
    for (const row of s.values ?? []) row.forEach((v, i) => { if (i !== ti && typeof v === 'number') n += v; });
  }
  return n;
}

export interface InfluxQLSeries { name?: string; columns: string[]; values?: unknown[][] }
export interface InfluxQLResult { statement_id?: number; series?: InfluxQLSeries[]; error?: string }
export interface InfluxQLResponse { results?: InfluxQLResult[]; error?: string }

/** Every (field, type) row of SHOW FIELD KEYS, in order (a field has one row per type its shards hold). */
export function fieldKeyPairs(r: InfluxQLResult): [string, string][] {
  const out: [string, string][] = [];
  for (const s of r.series ?? []) {
    const ki = s.columns.indexOf('fieldKey');
    const ti = s.columns.indexOf('fieldType');
    for (const row of s.values ?? []) out.push([String(row[ki]), String(row[ti])]);
  }
  return out;
}

/** Field name → type ('float' | 'integer' | 'string' | 'boolean' | 'unsigned') from SHOW FIELD KEYS. */
export function parseFieldKeys(r: InfluxQLResult): Map<string, string> {
  const m = new Map<string, string>();
  for (const s of r.series ?? []) {
    const ki = s.columns.indexOf('fieldKey');
    const ti = s.columns.indexOf('fieldType');
    for (const row of s.values ?? []) m.set(String(row[ki]), String(row[ti]));
  }
  return m;
}

/**
 * Rows (time in epoch ms, via `epoch=ms`) into points; several series (one per
 * `kind` tag value) are merged by timestamp. Aggregated timestamps are
 * re-aligned to the epoch window (they already are; harmless).
 */
export function parseRows(r: InfluxQLResult, everyMs?: number, limit?: number): HistoryPoint[] {
  const pb = new PointBuilder();
  for (const s of r.series ?? []) {
    const ti = s.columns.indexOf('time');
    for (const row of s.values ?? []) {
      let ts = Number(row[ti]);
      if (everyMs) ts = windowStart(ts, everyMs);
      for (let i = 0; i < s.columns.length; i++) {
        if (i === ti) continue;
        pb.add(ts, s.columns[i]!, row[i] as Scalar | null);
      }
    }
  }
  return pb.build(limit);
}

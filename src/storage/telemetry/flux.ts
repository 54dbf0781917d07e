/**
 * Flux text for history queries on InfluxDB 2.x / Cloud (same answers as the embedded store: windows.ts).
 *
 *   from(bucket) |> range(start, stop) |> filter(measurement, device_id)
 *     |> filter(fields) [|> filter(float only, for mean/min/max/sum)]
 *     |> group(columns: ["_field"]) |> sort(columns: ["_time"])
 *     |> aggregateWindow(every: Nms, fn: agg, createEmpty: false, timeSrc: "_start")   (aggregates)
 *     |> limit(n)                                                                    (raw)
 *     |> keep(columns: ["_time", "_field", "_value"])
 *
 * group(["_field"]) merges the series of different `kind` tag values, like
 * InfluxQL without GROUP BY tags. Difference handled in parsing: Flux clamps
 * the first window's `_start` to the range start, so the point's ts is
 * re-aligned to the epoch window (as InfluxQL and the embedded store report).
 */
import type { Agg, HistoryQuery } from './types.js';
import { isNumericAgg } from './windows.js';

/** A Flux string literal (escapes \, ", ${ and control characters). */
export function fluxString(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' || c === '"') out += '\\' + c;
    else if (c === '\n') out += '\\n';
    else if (c === '\r') out += '\\r';
    else if (c === '\t') out += '\\t';
    else if (c === '$' && s[i + 1] === '{') { out += '\\${'; i++; }
    else out += c;
  }
  return '"' + out + '"';
}

/** RFC 3339 time literal with milliseconds. */
export function fluxTime(ms: number): string {
  return new Date(Math.ceil(ms)).toISOString();
}

export function buildFlux(bucket: string, measurement: string, q: HistoryQuery): string {
  const agg: Agg | undefined = q.everyMs !== undefined ? (q.agg ?? 'mean') : undefined;
  const numeric = agg !== undefined && isNumericAgg(agg);
  const lines: string[] = [];
  if (numeric) lines.push('import "types"', '');
  lines.push(`from(bucket: ${fluxString(bucket)})`);
  lines.push(`  |> range(start: ${fluxTime(q.from)}, stop: ${fluxTime(q.to)})`);
  lines.push(`  |> filter(fn: (r) => r._measurement == ${fluxString(measurement)} and r.device_id == ${fluxString(q.deviceId)})`);
  if (q.fields.length) lines.push(`  |> filter(fn: (r) => ${q.fields.map((f) => `r._field == ${fluxString(f)}`).join(' or ')})`);
  if (numeric) lines.push('  |> filter(fn: (r) => types.isType(v: r._value, type: "float"))');
  lines.push('  |> group(columns: ["_field"])');
  lines.push('  |> sort(columns: ["_time"])');
  if (agg !== undefined) lines.push(`  |> aggregateWindow(every: ${q.everyMs}ms, fn: ${agg}, createEmpty: false, timeSrc: "_start")`);
  else if (q.limit !== undefined) lines.push(`  |> limit(n: ${q.limit})`); // per field: the first `limit` points need no more
  lines.push('  |> keep(columns: ["_time", "_field", "_value"])');
  return lines.join('\n');
}

/**
 * InfluxDB line protocol (1.x and 2.x share it): measurement
 * `influx.measurement`, tags `area` (the device's area code, so dashboards can
 * group by commune or village; left out when the device has none),
 * `device_id` and `kind`, one field per reading, timestamp in milliseconds
 * (`precision=ms`). History queries select by `device_id` and never group by
 * tag, so a device that moves to another area keeps one history.
 *
 * Escaping follows the line-protocol reference ("Special characters"):
 *  - measurement: comma and space;
 *  - tag keys, tag values, field keys: comma, equals sign and space;
 *  - string field values: double quote and backslash (inside double quotes).
 * Newline, carriage return and tab cannot appear raw in an identifier (a raw
 * newline would end the line); like the official @influxdata/influxdb-client
 * we write them as the two-character escapes `\n`, `\r`, `\t`. Raw newlines
 * are legal inside a quoted string field value and are kept.
 *
 * Numbers are always written as floats (never the `i` suffix), so a field
 * that carries 1 and later 1.5 never causes a field-type conflict. Booleans
 * are `t`/`f`.
 */
import type { Scalar } from '../../core/events.js';
import type { TelemetryRecord } from './types.js';

const MEAS_RE = /[, \n\r\t]/g;
const TAG_RE = /[,= \n\r\t]/g;
const STR_RE = /["\\]/g;
const CTRL: Record<string, string> = { ',': '\\,', ' ': '\\ ', '=': '\\=', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

export function escapeMeasurement(s: string): string {
  return s.replace(MEAS_RE, (c) => CTRL[c]!);
}

/** Tag keys, tag values and field keys. */
export function escapeTag(s: string): string {
  return s.replace(TAG_RE, (c) => CTRL[c]!);
}

/** A string field value, quoted. */
export function quoteString(s: string): string {
  return '"' + s.replace(STR_RE, (c) => '\\' + c) + '"';
}

/** Field value text, or undefined for a value that cannot be written (non-finite number). */
export function formatFieldValue(v: Scalar): string | undefined {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return undefined;
    // String(n) gives the shortest round-trip form ("1", "1.5", "1e+21"): no `i`, so a float.
    return String(v);
  }
  if (typeof v === 'boolean') return v ? 't' : 'f';
  return quoteString(v);
}

export interface LineStats { lines: number; readings: number; bytes: number }

/** Decides per reading whether it may be written (the field-type rule, outbox-db.ts); false = left out of the line. */
export interface FieldGuard { admit(r: TelemetryRecord, field: string, value: Scalar): boolean }

/** Measurement and tags of a line, escaped. Tags sorted by key (area < device_id < kind), as InfluxDB recommends; an empty tag value is not allowed, so omitted. */
function linePrefix(meas: string, deviceId: string, kind: string, area: string): string {
  return meas + (area ? ',area=' + escapeTag(area) : '') + (deviceId ? ',device_id=' + escapeTag(deviceId) : '')
    + (kind ? ',kind=' + escapeTag(kind) : '');
}

/**
 * Escaped line prefixes by device, kept across batches (outbox-db.ts): a
 * group commit interleaves many devices, so rebuilding the prefix whenever
 * the device changes cost three escapes per record, about a third of the
 * time of building the lines.
 */
export class PrefixCache {
  private readonly byDevice = new Map<string, { kind: string; area: string; prefix: string }>();
  private readonly meas: string;
  constructor(measurement: string, private readonly max = 100_000) { this.meas = escapeMeasurement(measurement); }
  prefix(deviceId: string, kind: string, area: string): string {
    let e = this.byDevice.get(deviceId);
    if (e === undefined || e.kind !== kind || e.area !== area) {
      if (e === undefined && this.byDevice.size >= this.max) this.byDevice.clear();
      e = { kind, area, prefix: linePrefix(this.meas, deviceId, kind, area) };
      this.byDevice.set(deviceId, e);
    }
    return e.prefix;
  }
}

/**
 * One line per record (all of its fields), appended to `out`. Records with no
 * writable field produce no line. Returns how many lines/readings were added.
 */
export function recordsToLines(measurement: string, records: readonly TelemetryRecord[], out: string[], guard?: FieldGuard, prefixes?: PrefixCache): LineStats {
  const meas = prefixes ? '' : escapeMeasurement(measurement);
  let lines = 0;
  let readings = 0;
  let bytes = 0;
  let lastDev = '';
  let lastKind = '';
  let lastArea = '';
  let prefix = '';
  for (const r of records) {
    const area = r.area ?? '';
    if (prefix === '' || r.deviceId !== lastDev || r.kind !== lastKind || area !== lastArea) {
      lastDev = r.deviceId;
      lastKind = r.kind;
      lastArea = area;
      prefix = prefixes ? prefixes.prefix(r.deviceId, r.kind, area) : linePrefix(meas, r.deviceId, r.kind, area);
    }
    let fields = '';
    let n = 0;
    for (const k in r.values) {
      const v = r.values[k]!;
      const fv = formatFieldValue(v);
      if (fv === undefined) continue;
      if (guard !== undefined && !guard.admit(r, k, v)) continue;
      fields += (n ? ',' : '') + escapeTag(k) + '=' + fv;
      n++;
    }
    if (!n) continue;
    const line = prefix + ' ' + fields + ' ' + Math.round(r.ts);
    out.push(line);
    lines++;
    readings += n;
    bytes += Buffer.byteLength(line) + 1;
  }
  return { lines, readings, bytes };
}

/**
 * Telemetry payload validation and normalisation, firmware-protocols/
 * device-protocol.md §6. Pure (apart from a bounded memo of valid field names),
 * never throws, and allocates little: the parsed `values` objects are reused
 * as the output. Runs once per telemetry message (~20,000/s).
 *
 * Accepted shapes (device protocol §6): "a flat object ... (timestamp = time of receipt)";
 * "{"ts": ..., "values": {...}}, ts in epoch milliseconds or an ISO 8601
 * string with offset"; "an array of either, oldest first" (store-and-forward
 * backlog). The output is ordered by ts (stable sort): device order is not trusted.
 *
 * "ts" and "values" are reserved: an object holding either is an envelope and
 * must hold exactly both (`bad_shape` otherwise), so a flat reading can have
 * no field named ts or values.
 */
import type { Scalar } from '../core/events.js';
import { parseIsoWithOffset } from '../core/time.js';
import { exceedsChars, fail, isPlainObject, parseJson, quote, JSON_MAX_DEPTH, type Failure } from './json.js';

export type { RejectReason, Failure } from './json.js';

export interface TelemetryLimits {
  /** Spec: "Readings dated more than 5 minutes in the future ... are rejected". config.telemetry.futureToleranceMs */
  futureToleranceMs: number;
  /** Spec: "... or older than the configured retention, are rejected". config.telemetry.retentionDays */
  retentionDays: number;
  /** Most records in one array payload (default 10,000). */
  maxRecords?: number;
  /** Most fields in one record (default 256). */
  maxFields?: number;
  /** Spec: "strings up to 256 characters". */
  maxStringLength?: number;
  /** Nesting guard before JSON.parse (default 16). */
  maxDepth?: number;
}

export const DEFAULT_MAX_RECORDS = 10_000;
export const DEFAULT_MAX_FIELDS = 256;
export const MAX_STRING_LENGTH = 256;
const DAY_MS = 86_400_000;

export interface DecodedRecord { ts: number; values: Record<string, Scalar> }

export type DecodeResult =
  | { ok: true; records: DecodedRecord[]; /** total (ts, field) readings */ readings: number }
  | Failure;

/** Spec "Telemetry payload": field names (ThingsBoard firmware sends camelCase keys such as `currentFirmwareVersion`). */
export const FIELD_NAME_RE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

/** Memo of names already seen valid: a Set lookup instead of a regex per field. Bounded; cleared when full. */
const validNames = new Set<string>();
const VALID_NAMES_MAX = 10_000;

export function isValidFieldName(k: string): boolean {
  if (validNames.has(k)) return true;
  if (!FIELD_NAME_RE.test(k)) return false;
  if (validNames.size >= VALID_NAMES_MAX) validNames.clear();
  validNames.add(k);
  return true;
}

/** Spec: "ts in epoch milliseconds or an ISO 8601 string with offset". A fraction of a ms falls in its ms (as in ISO input). NaN = invalid. */
function parseTs(v: unknown): number {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.floor(v) : NaN;
  if (typeof v === 'string') return parseIsoWithOffset(v);
  return NaN;
}

interface Ctx { receivedAt: number; minTs: number; maxTs: number; maxFields: number; maxString: number; readings: number }

/** One record (flat object or {ts, values}); `where` prefixes details for array items. */
function decodeRecord(x: unknown, c: Ctx, where: string): DecodedRecord | Failure {
  if (!isPlainObject(x)) return fail('not_object', `${where}expected a JSON object`);
  let ts: number;
  let values: Record<string, unknown>;
  if (x.ts !== undefined || x.values !== undefined) {
    // Spec: {"ts": ..., "values": {...}}: both keys, nothing else.
    if (x.ts === undefined) return fail('bad_shape', `${where}"values" without "ts"`);
    if (x.values === undefined) return fail('bad_shape', `${where}"ts" without "values"`);
    for (const k in x) {
      if (k !== 'ts' && k !== 'values') return fail('bad_shape', `${where}unexpected key ${quote(k)} beside ts and values`);
    }
    ts = parseTs(x.ts);
    if (Number.isNaN(ts)) return fail('bad_ts', `${where}ts must be epoch ms >= 0 or ISO 8601 with offset`);
    // Spec: "more than 5 minutes in the future, or older than the configured retention, are rejected".
    if (ts > c.maxTs) return fail('future_ts', `${where}ts ${ts} is more than ${c.maxTs - c.receivedAt} ms after receipt`);
    if (ts < c.minTs) return fail('too_old', `${where}ts ${ts} is older than the retention`);
    if (!isPlainObject(x.values)) return fail('bad_shape', `${where}"values" must be a JSON object`);
    values = x.values;
  } else {
    ts = c.receivedAt; // flat object: "timestamp = time of receipt"
    values = x;
  }
  // Spec: field names FIELD_NAME_RE; values finite numbers, booleans or strings <= 256 characters.
  let n = 0;
  for (const k in values) {
    if (++n > c.maxFields) return fail('too_many_fields', `${where}more than ${c.maxFields} fields`);
    if (!isValidFieldName(k)) return fail('bad_field_name', `${where}field ${quote(k)} does not match ${FIELD_NAME_RE.source}`);
    const v = values[k];
    switch (typeof v) {
      case 'number':
        if (!Number.isFinite(v)) return fail('bad_value', `${where}field ${quote(k)} is not a finite number`);
        break;
      case 'boolean':
        break;
      case 'string':
        if (exceedsChars(v, c.maxString)) return fail('string_too_long', `${where}field ${quote(k)} is longer than ${c.maxString} characters`);
        break;
      default:
        return fail('bad_value', `${where}field ${quote(k)} is ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`);
    }
  }
  if (n === 0) return fail('empty', `${where}no readings`);
  c.readings += n;
  return { ts, values: values as Record<string, Scalar> };
}

function isFailure(r: DecodedRecord | Failure): r is Failure {
  return (r as Failure).ok === false;
}

/**
 * Validates and normalises one telemetry payload. `receivedAt` is the receipt
 * time (epoch ms): the timestamp of flat readings and the reference for the
 * future/retention checks. The whole payload is refused if any part is invalid.
 */
export function decodeTelemetry(payload: Uint8Array, receivedAt: number, limits: TelemetryLimits): DecodeResult {
  const parsed = parseJson(payload, limits.maxDepth ?? JSON_MAX_DEPTH);
  if (!parsed.ok) return parsed;
  return decodeValue(parsed.value, receivedAt, limits);
}

/**
 * ThingsBoard compatibility (device protocol, "ThingsBoard compatibility"):
 * ThingsBoard SDKs send `null` for a value they do not have (the Arduino
 * SDK's firmware-update states are `{"fw_error": null, "fw_state": ...}`) and
 * ThingsBoard leaves such a key out. For access-token sessions only, and only
 * after decodeTelemetry refused a payload for a null value (so the usual path
 * pays nothing): the payload again, null values left out.
 */
export function decodeTelemetryWithoutNulls(payload: Uint8Array, receivedAt: number, limits: TelemetryLimits): DecodeResult {
  const parsed = parseJson(payload, limits.maxDepth ?? JSON_MAX_DEPTH);
  if (!parsed.ok) return parsed;
  return decodeValue(dropNulls(parsed.value), receivedAt, limits);
}

/** True for the refusal decodeTelemetryWithoutNulls may turn into an acceptance. */
export function isNullValueFailure(f: Failure): boolean {
  return f.reason === 'bad_value' && f.detail.endsWith(' is null');
}

/** The record objects (top level or in an array, and their `values`) without null-valued keys. */
function dropNulls(v: unknown): unknown {
  const strip = (o: unknown): void => {
    if (!isPlainObject(o)) return;
    for (const k of Object.keys(o)) if (o[k] === null) delete o[k];
    if (isPlainObject(o.values)) strip(o.values);
  };
  if (Array.isArray(v)) for (const x of v) strip(x);
  else strip(v);
  return v;
}

function decodeValue(v: unknown, receivedAt: number, limits: TelemetryLimits): DecodeResult {
  const c: Ctx = {
    receivedAt,
    minTs: receivedAt - limits.retentionDays * DAY_MS,
    maxTs: receivedAt + limits.futureToleranceMs,
    maxFields: limits.maxFields ?? DEFAULT_MAX_FIELDS,
    maxString: limits.maxStringLength ?? MAX_STRING_LENGTH,
    readings: 0,
  };
  if (!Array.isArray(v)) {
    const r = decodeRecord(v, c, '');
    if (isFailure(r)) return r;
    return { ok: true, records: [r], readings: c.readings };
  }
  // Spec: "an array of either, oldest first" (store-and-forward backlog).
  if (v.length === 0) return fail('empty', 'empty array');
  const maxRecords = limits.maxRecords ?? DEFAULT_MAX_RECORDS;
  if (v.length > maxRecords) return fail('too_many_records', `${v.length} records, at most ${maxRecords}`);
  const records: DecodedRecord[] = new Array<DecodedRecord>(v.length);
  let ordered = true;
  let prev = -Infinity;
  for (let i = 0; i < v.length; i++) {
    const r = decodeRecord(v[i], c, `[${i}] `);
    if (isFailure(r)) return r;
    if (r.ts < prev) ordered = false;
    prev = r.ts;
    records[i] = r;
  }
  if (!ordered) records.sort((a, b) => a.ts - b.ts); // Array.prototype.sort is stable (ES2019)
  return { ok: true, records, readings: c.readings };
}

export function telemetryLimits(t: { futureToleranceMs: number; retentionDays: number }): TelemetryLimits {
  return { futureToleranceMs: t.futureToleranceMs, retentionDays: t.retentionDays };
}

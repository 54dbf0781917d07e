/**
 * What a shared attribute may be. Keys follow telemetry field names
 * (`^[A-Za-z][A-Za-z0-9_]{0,63}$`: ThingsBoard firmware uses camelCase);
 * values are what ThingsBoard's shared scope holds and firmware parses from
 * JSON: finite numbers, booleans, strings, or a JSON object/array (its text
 * bounded, so a push always fits a device's receive buffer).
 *
 * Reserved keys: `deleted` (ThingsBoard's pushed updates list removed keys
 * under it, firmware would read it as such) and the `fw_` prefix (the
 * firmware assignment of src/firmware owns fw_title, fw_version, ...).
 */
import { Errors, withDetails } from '../core/errors.js';
import { FIELD_NAME_RE } from '../ingest/codec.js';

export const MAX_STRING_LENGTH = 1024;
/** JSON text of one object/array value. */
export const MAX_JSON_BYTES = 4096;
export const MAX_DEPTH = 8;
/** Keys one device or area may set. */
export const MAX_KEYS = 100;
export const RESERVED_PREFIX = 'fw_';

export type SharedValue = number | boolean | string | Record<string, unknown> | unknown[];
/** A change: a value sets the key, null deletes it. */
export type SharedPatch = Record<string, SharedValue | null>;

interface Problem { field: string; message: string }

function depth(v: unknown, d = 0): number {
  if (typeof v !== 'object' || v === null) return d;
  let max = d + 1;
  for (const x of Array.isArray(v) ? v : Object.values(v)) max = Math.max(max, depth(x, d + 1));
  return max;
}

function valueProblem(v: unknown): string | null {
  if (v === null) return null;
  if (typeof v === 'boolean') return null;
  if (typeof v === 'number') return Number.isFinite(v) ? null : 'must be a finite number';
  if (typeof v === 'string') return v.length <= MAX_STRING_LENGTH ? null : `must be at most ${MAX_STRING_LENGTH} characters`;
  if (typeof v === 'object') {
    if (depth(v) > MAX_DEPTH) return `must nest at most ${MAX_DEPTH} levels`;
    if (Buffer.byteLength(JSON.stringify(v)) > MAX_JSON_BYTES) return `must be at most ${MAX_JSON_BYTES} bytes of JSON`;
    return null;
  }
  return 'must be a number, boolean, string, object or array';
}

export function keyProblem(k: string, allowReserved = false): string | null {
  if (!FIELD_NAME_RE.test(k)) return `must match ${FIELD_NAME_RE.source}`;
  if (k === 'deleted') return '"deleted" is reserved (pushed updates list removed keys under it)';
  if (!allowReserved && k.startsWith(RESERVED_PREFIX)) return `keys starting with "${RESERVED_PREFIX}" are set by firmware updates`;
  return null;
}

/** Checks a PUT body (400 with per-key details); returns it typed. */
export function checkPatch(body: unknown): SharedPatch {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw Errors.VALIDATION('body must be a JSON object of key: value');
  const problems: Problem[] = [];
  for (const [k, v] of Object.entries(body)) {
    const kp = keyProblem(k);
    if (kp) { problems.push({ field: k, message: kp }); continue; }
    const vp = valueProblem(v);
    if (vp) problems.push({ field: k, message: vp });
  }
  if (problems.length) {
    throw withDetails(Errors.VALIDATION(`${problems[0]!.field}: ${problems[0]!.message}`), problems.map((p) => ({ in: 'body', ...p })));
  }
  return body as SharedPatch;
}

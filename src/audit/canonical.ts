/**
 * Canonical JSON (sorted keys, no whitespace) and secret stripping for the
 * audit log: the hash of a row must not depend on key order, and before/after
 * snapshots must never hold passwords, secrets or tokens.
 */

/** JSON with object keys sorted at every level; undefined members dropped (as JSON.stringify does). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

/** Keys whose values never enter the audit log. */
export const SECRET_KEY_RE = /pass(word|wd|phrase)?|secret|token|hash|salt|credential|api[_-]?key|private/i;
export const REDACTED = '[redacted]';
const MAX_DEPTH = 8;
/** Longest before/after JSON kept; larger snapshots are replaced by a marker. */
export const MAX_SNAPSHOT_CHARS = 16_384;

/** A copy of `value` with secret-looking keys replaced by "[redacted]" (and non-JSON values dropped). */
export function redact(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'bigint') return value.toString();
    if (typeof value === 'function' || typeof value === 'symbol') return undefined;
    return value;
  }
  if (depth >= MAX_DEPTH) return '[too deep]';
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return `[${value.length} bytes]`;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = SECRET_KEY_RE.test(k) && v !== null && v !== undefined && typeof v !== 'boolean' ? REDACTED : redact(v, depth + 1);
  }
  return out;
}

/** The stored form of a before/after snapshot: canonical, redacted, size-capped; null when absent. */
export function snapshotJson(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  const json = canonicalJson(redact(value));
  return json.length > MAX_SNAPSHOT_CHARS ? canonicalJson({ truncated: true, chars: json.length }) : json;
}

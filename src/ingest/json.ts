/**
 * Shared JSON intake for every device message: strict UTF-8, a nesting-depth
 * guard that runs before JSON.parse, and a non-recursive validator for
 * free-form JSON objects (attributes, status, events, RPC payloads).
 *
 * Spec device-protocol.md "Telemetry payload": "UTF-8 JSON ... A payload that
 * is not valid by these rules is rejected as a whole, counted by reason, and
 * never stops the server." Nothing here throws on bad input.
 */
import { isAscii } from 'node:buffer';

/** Stable rejection reasons (label values of keng_rejected_total{reason}). */
export type RejectReason =
  | 'not_utf8' | 'not_json' | 'too_deep' | 'not_object' | 'empty'
  | 'bad_shape' | 'bad_field_name' | 'bad_value' | 'string_too_long'
  | 'bad_ts' | 'future_ts' | 'too_old' | 'too_many_records' | 'too_many_fields'
  | 'bad_event' | 'bad_playback_event' | 'bad_rpc_response' | 'bad_rpc_request'
  | 'bad_attributes_request' | 'missing_request_id' | 'unknown_type' | 'internal_error'
  /** ThingsBoard gateway API: a device name that is not usable, an answer to no request of the gateway, claiming. */
  | 'bad_device_name' | 'unknown_rpc_id' | 'unsupported';

export interface Failure { ok: false; reason: RejectReason; detail: string }

export function fail(reason: RejectReason, detail: string): Failure {
  return { ok: false, reason, detail };
}

export type ParseResult = { ok: true; value: unknown } | Failure;

/** Fatal decoder: invalid UTF-8 (overlongs, lone surrogates, stray bytes) throws. A leading BOM is dropped. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Payload bytes → string. Most telemetry is pure ASCII (field names are
 * [a-z0-9_], values numbers): a native SIMD check and a one-byte (latin1)
 * string copy are about 3x cheaper than the validating UTF-8 decoder, and
 * give the same string for ASCII. Anything else takes the decoder.
 */
function decodeText(payload: Uint8Array): string {
  if (isAscii(payload)) {
    const b = Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    return b.toString('latin1');
  }
  return utf8.decode(payload);
}

/** Default nesting guard: far above anything the protocol needs (telemetry needs 3). */
export const JSON_MAX_DEPTH = 16;

/**
 * True when `bytes` opens more than `maxDepth` nested arrays/objects. One pass
 * over the bytes, no recursion, stops at the first excess. Bytes inside JSON
 * strings are skipped; UTF-8 continuation bytes are ≥ 0x80 so they never look
 * like `"`, `\`, `[` or `{`. Malformed JSON is left for JSON.parse to refuse.
 */
export function exceedsDepth(bytes: Uint8Array, maxDepth: number): boolean {
  const n = bytes.length;
  if (n <= maxDepth) return false; // cannot hold maxDepth + 1 openers
  // Fast path (most telemetry): with at most maxDepth openers in all, nesting cannot exceed it.
  // Counted with native indexOf (memchr) instead of a JS loop over every byte.
  if (countUpTo(bytes, 0x7b, maxDepth + 1) + countUpTo(bytes, 0x5b, maxDepth + 1) <= maxDepth) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < n; i++) {
    const c = bytes[i]!;
    if (inString) {
      if (c === 0x5c) i++;               // backslash: skip the escaped byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) { // [ {
      if (++depth > maxDepth) return true;
    } else if (c === 0x5d || c === 0x7d) { // ] }
      depth--;
    }
  }
  return false;
}

/** Occurrences of byte `b` in `bytes`, counting stops at `limit`. */
function countUpTo(bytes: Uint8Array, b: number, limit: number): number {
  let n = 0;
  for (let i = bytes.indexOf(b); i !== -1 && n < limit; i = bytes.indexOf(b, i + 1)) n++;
  return n;
}

/** Depth guard (first: it stops early on hostile nesting), UTF-8 check, JSON.parse. Never throws. */
export function parseJson(payload: Uint8Array, maxDepth: number = JSON_MAX_DEPTH): ParseResult {
  if (exceedsDepth(payload, maxDepth)) return fail('too_deep', `nesting deeper than ${maxDepth}`);
  let text: string;
  try {
    text = decodeText(payload);
  } catch {
    return fail('not_utf8', 'payload is not valid UTF-8');
  }
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (err) {
    // V8's JSON parser is iterative, but keep the guard should an engine recurse.
    if (err instanceof RangeError) return fail('too_deep', 'nesting too deep to parse');
    return fail('not_json', 'payload is not JSON');
  }
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A device-supplied name, shortened and quoted for details and logs. */
export function quote(s: string): string {
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}…` : s);
}

/** Length in Unicode code points ("characters"), counted only when UTF-16 length could exceed `max`. */
export function exceedsChars(s: string, max: number): boolean {
  if (s.length <= max) return false;
  if (s.length > 2 * max) return true;
  let n = 0;
  for (const _ of s) if (++n > max) return true;
  return false;
}

export interface TreeLimits {
  /** Longest key, in UTF-16 units. */
  maxKeyLength: number;
  /** Most keys + array items in the whole tree. */
  maxNodes: number;
  /** Longest string value, in characters. */
  maxStringLength: number;
}

export const DEFAULT_TREE_LIMITS: TreeLimits = { maxKeyLength: 64, maxNodes: 1000, maxStringLength: 4096 };

/** Keys that would reach an object's prototype through Object.assign or naive deep merges. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Validates a free-form JSON tree without recursion (depth is already bounded
 * by parseJson): keys 1..maxKeyLength and not prototype-related, numbers
 * finite (`1e999` parses to Infinity), strings bounded, node count bounded.
 * null, booleans, arrays and nested objects are allowed.
 */
export function validateTree(root: Record<string, unknown>, limits: TreeLimits = DEFAULT_TREE_LIMITS): Failure | null {
  const stack: unknown[] = [root];
  let nodes = 0;
  while (stack.length > 0) {
    const v = stack.pop();
    if (Array.isArray(v)) {
      nodes += v.length;
      if (nodes > limits.maxNodes) return fail('too_many_fields', `more than ${limits.maxNodes} keys and items`);
      for (const item of v) stack.push(item);
    } else if (typeof v === 'object' && v !== null) {
      const o = v as Record<string, unknown>;
      for (const k in o) {
        if (++nodes > limits.maxNodes) return fail('too_many_fields', `more than ${limits.maxNodes} keys and items`);
        if (k.length === 0 || k.length > limits.maxKeyLength || FORBIDDEN_KEYS.has(k)) {
          return fail('bad_field_name', `key ${quote(k)} not allowed (1-${limits.maxKeyLength} characters)`);
        }
        stack.push(o[k]);
      }
    } else if (typeof v === 'number') {
      if (!Number.isFinite(v)) return fail('bad_value', 'number is not finite');
    } else if (typeof v === 'string') {
      if (exceedsChars(v, limits.maxStringLength)) return fail('string_too_long', `string longer than ${limits.maxStringLength} characters`);
    }
  }
  return null;
}

/** parseJson + must be a non-empty plain object + validateTree. */
export function parseObject(payload: Uint8Array, maxDepth: number, limits: TreeLimits = DEFAULT_TREE_LIMITS, allowEmpty = false):
  { ok: true; value: Record<string, unknown> } | Failure {
  const p = parseJson(payload, maxDepth);
  if (!p.ok) return p;
  if (!isPlainObject(p.value)) return fail('not_object', 'payload must be a JSON object');
  const obj = p.value;
  if (!allowEmpty) {
    let any = false;
    for (const _ in obj) { any = true; break; }
    if (!any) return fail('empty', 'empty object');
  }
  const bad = validateTree(obj, limits);
  return bad ?? { ok: true, value: obj };
}

/**
 * Reading back the line protocol Keng writes (line-protocol.ts), for the
 * forwarder's handling of a rejected write: split a body into lines, a line
 * into its fields (one line per field), and a single-field line into the
 * reading it carries (for the dead-letter table).
 *
 * Only Keng's own output is parsed: unescaped space ends the measurement and
 * tags, commas split tags and fields, a string value is quoted with `\"` and
 * `\\` escaped and may hold raw newlines (so a body is not split on every
 * `\n`).
 */
import type { Scalar } from '../../core/events.js';

const BACKSLASH = 92;
const QUOTE = 34;
const SPACE = 32;
const COMMA = 44;
const NEWLINE = 10;

/** Lines of a body (a newline inside a quoted string value does not end its line). */
export function splitLines(body: string): string[] {
  const out: string[] = [];
  let start = 0;
  let section = 0; // 0 measurement+tags, 1 fields, 2 timestamp
  let inStr = false;
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    if (c === BACKSLASH) { i++; continue; }
    if (inStr) { if (c === QUOTE) inStr = false; continue; }
    if (c === QUOTE && section === 1) inStr = true;
    else if (c === SPACE) section++;
    else if (c === NEWLINE) {
      if (i > start) out.push(body.slice(start, i));
      start = i + 1; section = 0;
    }
  }
  if (start < body.length) out.push(body.slice(start));
  return out;
}

export interface LineParts { prefix: string; fields: string[]; ts: string }

/** Measurement+tags, the `key=value` fields and the timestamp of one line; null if it is not of that shape. */
export function splitLine(line: string): LineParts | null {
  let i = 0;
  for (; i < line.length; i++) {
    const c = line.charCodeAt(i);
    if (c === BACKSLASH) i++;
    else if (c === SPACE) break;
  }
  if (i >= line.length) return null;
  const prefix = line.slice(0, i);
  const fields: string[] = [];
  let start = ++i;
  let inStr = false;
  for (; i < line.length; i++) {
    const c = line.charCodeAt(i);
    if (c === BACKSLASH) { i++; continue; }
    if (inStr) { if (c === QUOTE) inStr = false; continue; }
    if (c === QUOTE) inStr = true;
    else if (c === COMMA) { fields.push(line.slice(start, i)); start = i + 1; }
    else if (c === SPACE) break;
  }
  if (i >= line.length || inStr) return null;
  fields.push(line.slice(start, i));
  const ts = line.slice(i + 1);
  if (!/^-?\d+$/.test(ts) || fields.some((f) => f === '')) return null;
  return { prefix, fields, ts };
}

const UNESCAPE: Record<string, string> = { n: '\n', r: '\r', t: '\t' };

function unescapeIdent(s: string): string {
  return s.replace(/\\(.)/gs, (_, c: string) => UNESCAPE[c] ?? c);
}

/** Split on an unescaped separator (tags: `,`; key/value: `=`). */
function splitUnescaped(s: string, sep: number, max = Infinity): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < s.length && out.length < max - 1; i++) {
    const c = s.charCodeAt(i);
    if (c === BACKSLASH) i++;
    else if (c === sep) { out.push(s.slice(start, i)); start = i + 1; }
  }
  out.push(s.slice(start));
  return out;
}

export interface LineSummary { deviceId: string | undefined; ts: number; fields: number }

/** The `device_id` tag, timestamp and number of fields (readings) of a line; null if it is not of Keng's shape. */
export function lineSummary(line: string): LineSummary | null {
  const p = splitLine(line);
  if (!p) return null;
  let deviceId: string | undefined;
  for (const t of splitUnescaped(p.prefix, COMMA).slice(1)) {
    const [k, v] = splitUnescaped(t, 61 /* = */, 2);
    if (k !== undefined && v !== undefined && unescapeIdent(k) === 'device_id') deviceId = unescapeIdent(v);
  }
  return { deviceId, ts: Number(p.ts), fields: p.fields.length };
}

export interface LineReading { tags: Record<string, string>; field: string; value: Scalar; ts: number }

/** The reading of a single-field line; null if the line is not one. */
export function parseReading(line: string): LineReading | null {
  const p = splitLine(line);
  if (!p || p.fields.length !== 1) return null;
  const tags: Record<string, string> = {};
  for (const t of splitUnescaped(p.prefix, COMMA).slice(1)) {
    const [k, v] = splitUnescaped(t, 61 /* = */, 2);
    if (k !== undefined && v !== undefined) tags[unescapeIdent(k)] = unescapeIdent(v);
  }
  const [key, raw] = splitUnescaped(p.fields[0]!, 61, 2);
  if (key === undefined || raw === undefined) return null;
  let value: Scalar;
  if (raw.startsWith('"')) value = raw.slice(1, -1).replace(/\\(["\\])/g, '$1');
  else if (raw === 't' || raw === 'true' || raw === 'T' || raw === 'TRUE' || raw === 'True') value = true;
  else if (raw === 'f' || raw === 'false' || raw === 'F' || raw === 'FALSE' || raw === 'False') value = false;
  else value = Number(raw.endsWith('i') || raw.endsWith('u') ? raw.slice(0, -1) : raw);
  return { tags, field: unescapeIdent(key), value, ts: Number(p.ts) };
}

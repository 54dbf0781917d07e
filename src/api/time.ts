/**
 * API times (spec http-api.md): accepted as ISO 8601 with an offset or as
 * epoch milliseconds; always returned as ISO 8601 with the offset of the
 * configured time zone (`config.tz`, e.g. Asia/Ho_Chi_Minh → "+07:00").
 */
import { Errors, withDetails } from '../core/errors.js';

/** Latest instant whose ISO form still has a four-digit year (9999-12-31T23:59:59.999Z). */
export const MAX_TIME_MS = 253_402_300_799_999;

const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|z|[+-]\d{2}(?::?\d{2})?)$/;
const EPOCH_MS_RE = /^\d{1,16}$/;

function daysInMonth(y: number, m: number): number {
  return new Date(Date.UTC(y, m, 0)).getUTCDate();
}

/**
 * Parse an API time value. `name` is the parameter, named in the error.
 * A space in place of "+" in the offset is accepted, because an unencoded
 * "+" in a query string arrives as a space ("…T08:00:00 07:00").
 * @throws KENG_ERR_BAD_TIME (400)
 */
export function parseTime(raw: string | number, name: string): number {
  const bad = () => withDetails(Errors.BAD_TIME(name), [{ field: name, value: String(raw).slice(0, 64) }]);
  if (typeof raw === 'number') {
    if (!Number.isInteger(raw) || raw < 0 || raw > MAX_TIME_MS) throw bad();
    return raw;
  }
  const s = raw.trim();
  if (EPOCH_MS_RE.test(s)) {
    const n = Number(s);
    if (n > MAX_TIME_MS) throw bad();
    return n;
  }
  const m = ISO_RE.exec(s.replace(/ (\d{2}(?::?\d{2})?)$/, '+$1'));
  if (!m) throw bad();
  const [, ys, mos, ds, hs, mis, ss, frac, off] = m as unknown as string[];
  const y = Number(ys), mo = Number(mos), d = Number(ds), h = Number(hs), mi = Number(mis), sec = Number(ss ?? 0);
  if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth(y, mo) || h > 23 || mi > 59 || sec > 59) throw bad();
  const ms = frac ? Math.floor(Number(`0${frac}`) * 1000) : 0;
  let offsetMin = 0;
  if (off !== 'Z' && off !== 'z') {
    const sign = off!.startsWith('-') ? -1 : 1;
    const digits = off!.slice(1).replace(':', '');
    const oh = Number(digits.slice(0, 2));
    const om = digits.length > 2 ? Number(digits.slice(2, 4)) : 0;
    if (oh > 23 || om > 59) throw bad();
    offsetMin = sign * (oh * 60 + om);
  }
  const t = Date.UTC(y, mo - 1, d, h, mi, sec, ms) - offsetMin * 60_000;
  if (!Number.isFinite(t) || t < 0 || t > MAX_TIME_MS) throw bad();
  return t;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterFor(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz, hourCycle: 'h23',
      year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
    formatters.set(tz, f);
  }
  return f;
}

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');

/** Offset of `tz` from UTC at instant `ms`, in minutes (Asia/Ho_Chi_Minh → 420). */
export function tzOffsetMinutes(ms: number, tz: string): number {
  // Offsets change only at transitions, which fall on whole quarter hours of UTC: cache per 15-minute bucket
  // (Intl formatting costs microseconds, and the history API formats up to 10,000 times per request).
  const bucket = Math.floor(ms / 900_000);
  let cache = offsetCache.get(tz);
  if (!cache) offsetCache.set(tz, cache = new Map());
  const hit = cache.get(bucket);
  if (hit !== undefined) return hit;
  const off = computeOffset(ms, tz);
  if (cache.size >= 20_000) cache.clear();
  cache.set(bucket, off);
  return off;
}

const offsetCache = new Map<string, Map<number, number>>();

function computeOffset(ms: number, tz: string): number {
  const parts: Record<string, number> = {};
  for (const p of formatterFor(tz).formatToParts(new Date(ms))) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  const wall = Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!, parts.second!);
  const secondFloor = ms - (((ms % 1000) + 1000) % 1000);
  return Math.round((wall - secondFloor) / 60_000);
}

/** ISO 8601 with milliseconds and the zone's offset: "2025-11-30T07:00:00.000+07:00". */
export function formatTime(ms: number, tz: string): string {
  const offset = tzOffsetMinutes(ms, tz);
  const local = new Date(ms + offset * 60_000);
  const sign = offset < 0 ? '-' : '+';
  const abs = Math.abs(offset);
  return `${pad(local.getUTCFullYear(), 4)}-${pad(local.getUTCMonth() + 1)}-${pad(local.getUTCDate())}`
    + `T${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())}:${pad(local.getUTCSeconds())}.${pad(local.getUTCMilliseconds(), 3)}`
    + `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

export function formatTimeOrNull(ms: number | null | undefined, tz: string): string | null {
  return ms === null || ms === undefined ? null : formatTime(ms, tz);
}

const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;
const DURATION_RE = /^(\d{1,6})(s|m|h|d|w)$/;
/** Longest accepted `every`: one year. */
export const MAX_EVERY_MS = 366 * UNIT_MS.d;

/**
 * Parse an aggregation window such as "30s", "5m", "1h", "1d", "1w".
 * Minimum 1 s, maximum 366 days.
 * @throws KENG_ERR_BAD_WINDOW (400)
 */
export function parseDuration(raw: string): number {
  const m = DURATION_RE.exec(raw.trim());
  if (!m) throw withDetails(Errors.BAD_WINDOW(raw.slice(0, 32)), [{ field: 'every', value: raw.slice(0, 32) }]);
  const ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  if (ms < 1000 || ms > MAX_EVERY_MS) {
    throw withDetails(Errors.BAD_WINDOW(raw), [{ field: 'every', value: raw, min: '1s', max: '366d' }]);
  }
  return ms;
}

/** Number of epoch-aligned windows of `everyMs` touched by [from, to). */
export function windowCount(from: number, to: number, everyMs: number): number {
  if (to <= from) return 0;
  return Math.floor((to - 1) / everyMs) - Math.floor(from / everyMs) + 1;
}

export interface TimeRangeInput { from?: string; to?: string; every?: string }
export interface TimeRange { from: number; to: number; everyMs?: number }

export const DEFAULT_RANGE_MS = 24 * 3_600_000;

/**
 * Resolve a history query's window: defaults to the last 24 h ending now;
 * `from` alone runs to now, `to` alone starts 24 h before it. With `every`,
 * refuses ranges producing more than `maxPoints` windows.
 * @throws KENG_ERR_BAD_TIME, KENG_ERR_BAD_WINDOW, KENG_ERR_VALIDATION, KENG_ERR_WINDOW_TOO_LARGE
 */
export function resolveRange(input: TimeRangeInput, now: number, maxPoints: number): TimeRange {
  const to = input.to !== undefined ? parseTime(input.to, 'to') : now;
  const from = input.from !== undefined ? parseTime(input.from, 'from') : Math.max(0, to - DEFAULT_RANGE_MS);
  if (from >= to) {
    throw withDetails(Errors.VALIDATION('"from" must be before "to"'), [
      { in: 'querystring', field: 'from', message: 'must be before "to"' },
    ]);
  }
  if (input.every === undefined) return { from, to };
  const everyMs = parseDuration(input.every);
  const n = windowCount(from, to, everyMs);
  if (n > maxPoints) {
    throw withDetails(Errors.WINDOW_TOO_LARGE(`${n} windows of ${input.every}; at most ${maxPoints}`),
      { windows: n, max: maxPoints, hint: 'use a larger "every" or a shorter from/to range' });
  }
  return { from, to, everyMs };
}

/**
 * Time, the one owner: parsing and formatting of instants, time zones and
 * durations, used by the device codec, the API, schedules, the broadcast log
 * and the live feed alike, so that a time is read and written the same way
 * everywhere.
 *
 * Input: ISO 8601 with a mandatory offset (`Z` or `±hh:mm`, also `±hhmm` and
 * `±hh`; `T` or `t`; fraction after `.` or `,`, truncated to the millisecond)
 * or epoch milliseconds. A local time without offset is ambiguous and refused.
 * Output: ISO 8601 with milliseconds and the offset of the configured zone,
 * `+00:00` for UTC (never `Z`, so every time Keng writes has one shape):
 * "2025-11-30T07:00:00.000+07:00". CAP 1.2 alerts are the one exception the
 * standard imposes: whole seconds, UTC as "-00:00" (parseCapTime, formatCapTime).
 */
import { Errors, withDetails } from './errors.js';

/** The zone of Vietnamese communes (UTC+07:00 since 1975); config.tz defaults to it. */
export const DEFAULT_TIME_ZONE = 'Asia/Ho_Chi_Minh';

/** Latest instant whose ISO form still has a four-digit year (9999-12-31T23:59:59.999Z). */
export const MAX_TIME_MS = 253_402_300_799_999;

const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)$/;
const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const FRACTION_SCALE = [1, 100, 10, 1, 0.1, 0.01, 0.001, 0.0001, 0.00001, 0.000001];

/**
 * Epoch ms of an ISO 8601 string with offset, or NaN. Calendar fields are
 * range-checked (no Date.parse leniency: 2025-02-30 is NaN). Allocation-light:
 * the device codec calls it for every timestamped reading.
 */
export function parseIsoWithOffset(s: string): number {
  const m = ISO_RE.exec(s);
  if (!m) return NaN;
  const y = +m[1]!, mo = +m[2]!, d = +m[3]!, h = +m[4]!, mi = +m[5]!;
  const sec = m[6] === undefined ? 0 : +m[6];
  if (mo < 1 || mo > 12 || d < 1 || d > DAYS_IN_MONTH[mo - 1]!) return NaN;
  if (mo === 2 && d === 29 && !(y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0))) return NaN;
  if (h > 23 || mi > 59 || sec > 59) return NaN;
  let offsetMin = 0;
  if (m[8] === undefined) {
    const oh = +m[10]!, om = m[11] === undefined ? 0 : +m[11];
    if (oh > 23 || om > 59) return NaN;
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const frac = m[7];
  // Truncated, not rounded: ".9999" stays in its second, as RFC 3339 readers do.
  const ms = frac === undefined ? 0 : Math.floor(+frac * FRACTION_SCALE[frac.length]! + 1e-9);
  const date = new Date(0);
  date.setUTCFullYear(y, mo - 1, d); // not Date.UTC: years 0-99 would map to 19xx
  date.setUTCHours(h, mi, sec, 0);
  return date.getTime() + ms - offsetMin * 60_000;
}

const EPOCH_MS_RE = /^\d{1,16}$/;

/**
 * Parse a time given by a user or a system: ISO 8601 with offset or epoch ms
 * (number or digits). `name` is the field, named in the error. A space in
 * place of "+" in the offset is accepted, because an unencoded "+" in a query
 * string arrives as a space ("…T08:00:00 07:00").
 * @throws KENG_ERR_BAD_TIME (400)
 */
export function parseTime(raw: string | number, name: string): number {
  const bad = () => withDetails(Errors.BAD_TIME(name), [{ field: name, value: String(raw).slice(0, 64) }]);
  if (typeof raw === 'number') {
    if (!Number.isInteger(raw) || raw < 0 || raw > MAX_TIME_MS) throw bad();
    return raw;
  }
  const s = raw.trim();
  const t = EPOCH_MS_RE.test(s) ? Number(s) : parseIsoWithOffset(s.replace(/ (\d{2}(?::?\d{2})?)$/, '+$1'));
  if (!Number.isFinite(t) || t < 0 || t > MAX_TIME_MS) throw bad();
  return t;
}

// ---------------------------------------------------------------- zones

const IANA_RE = /^(?:UTC|GMT|[A-Za-z][A-Za-z0-9_+-]*(?:\/[A-Za-z0-9_+-]+){1,2})$/;
const validity = new Map<string, boolean>();

/** True for an IANA time-zone name the runtime knows ("Asia/Ho_Chi_Minh", "UTC"). Offsets like "+07:00" are refused. */
export function isValidTimeZone(tz: string): boolean {
  let ok = validity.get(tz);
  if (ok === undefined) {
    ok = IANA_RE.test(tz);
    if (ok) {
      try {
        new Intl.DateTimeFormat('en-US', { timeZone: tz });
      } catch {
        ok = false;
      }
    }
    validity.set(tz, ok);
  }
  return ok;
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

/** Offsets change only on whole quarter hours of UTC, so one answer holds for a 15-minute slot. */
const SLOT_MS = 15 * 60_000;
const offsetCache = new Map<string, Map<number, number>>();

/** Offset of `tz` from UTC at instant `ms`, in minutes (Asia/Ho_Chi_Minh → 420). */
export function tzOffsetMinutes(ms: number, tz: string): number {
  // Intl formatting costs microseconds and the history API formats up to 10,000 times per request.
  const slot = Math.floor(ms / SLOT_MS);
  let cache = offsetCache.get(tz);
  if (!cache) offsetCache.set(tz, cache = new Map());
  const hit = cache.get(slot);
  if (hit !== undefined) return hit;
  const parts: Record<string, number> = {};
  for (const p of formatterFor(tz).formatToParts(new Date(ms))) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  const wall = Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!, parts.second!);
  const secondFloor = ms - (((ms % 1000) + 1000) % 1000);
  const off = Math.round((wall - secondFloor) / 60_000);
  if (cache.size >= 20_000) cache.clear();
  cache.set(slot, off);
  return off;
}

const fixedOffsets = new Map<string, number | null>();

/**
 * The zone's UTC offset in minutes if it is the same at every sampled instant
 * (mid-January and mid-July of each year 2000-2100: any DST rule or lasting
 * offset change shows up), otherwise null. Computed once per zone (~200 Intl
 * calls). Schedules use it for croner's faster `utcOffset` mode.
 */
export function fixedOffsetMinutes(tz: string): number | null {
  if (fixedOffsets.has(tz)) return fixedOffsets.get(tz)!;
  let result: number | null = tzOffsetMinutes(Date.UTC(2000, 0, 15), tz);
  for (let y = 2000; y <= 2100 && result !== null; y++) {
    for (const m of [0, 6]) {
      if (tzOffsetMinutes(Date.UTC(y, m, 15), tz) !== result) {
        result = null;
        break;
      }
    }
  }
  fixedOffsets.set(tz, result);
  return result;
}

/** Epoch ms of local midnight starting calendar day y-mo-d in `tz` (mo 1-12). */
export function zonedDayStart(y: number, mo: number, d: number, tz: string): number {
  const wall = Date.UTC(y, mo - 1, d);
  // Two refinements settle the offset, also next to a DST change.
  let t = wall - tzOffsetMinutes(wall, tz) * 60_000;
  t = wall - tzOffsetMinutes(t, tz) * 60_000;
  return t;
}

// ---------------------------------------------------------------- formatting

export type TimeFormatter = (ms: number) => string;

const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n));
const pad3 = (n: number): string => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : String(n));

function offsetSuffix(offset: number): string {
  const abs = Math.abs(offset);
  return `${offset < 0 ? '-' : '+'}${pad2(Math.floor(abs / 60))}:${pad2(abs % 60)}`;
}

function isoLocal(ms: number, offset: number, suffix: string): string {
  const d = new Date(ms + offset * 60_000);
  return `${String(d.getUTCFullYear()).padStart(4, '0')}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`
    + `T${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}.${pad3(d.getUTCMilliseconds())}${suffix}`;
}

/** ISO 8601 with milliseconds and the zone's offset: "2025-11-30T07:00:00.000+07:00". */
export function formatTime(ms: number, tz: string): string {
  const offset = tzOffsetMinutes(ms, tz);
  return isoLocal(ms, offset, offsetSuffix(offset));
}

export function formatTimeOrNull(ms: number | null | undefined, tz: string): string | null {
  return ms === null || ms === undefined ? null : formatTime(ms, tz);
}

/**
 * formatTime for a hot path (the live feed formats every reading it sends):
 * the zone's offset and its text are kept for the current 15-minute slot, so
 * consecutive calls skip even the cache lookup. Same output as formatTime.
 */
export function timeFormatter(tz: string): TimeFormatter {
  let slot = Number.NaN;
  let offset = 0;
  let suffix = '+00:00';
  return (ms: number): string => {
    const s = Math.floor(ms / SLOT_MS);
    if (s !== slot) {
      slot = s;
      offset = tzOffsetMinutes(ms, tz);
      suffix = offsetSuffix(offset);
    }
    return isoLocal(ms, offset, suffix);
  };
}

/** Calendar date "YYYY-MM-DD" of instant `ms` in `tz` (file names, day buckets). */
export function localDate(ms: number, tz: string): string {
  return formatTime(ms, tz).slice(0, 10);
}

// ---------------------------------------------------------------- CAP 1.2 dateTime

/**
 * The one form CAP 1.2 allows for sent, effective, onset and expires
 * (CAP-v1.2-os §3.3.2 "DateTime Data Type": "YYYY-MM-DDThh:mm:ssXzh:zm", and
 * the pattern of the same elements in CAP-v1.2.xsd): whole seconds, no
 * fraction, a numeric offset. "Alphabetic timezone designators such as "Z"
 * MUST NOT be used" (§3.2.1 sent, §3.2.2 effective/onset/expires).
 */
const CAP_TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[-+]\d{2}:\d{2}$/;

/**
 * Epoch ms of a CAP 1.2 dateTime, or NaN for anything else (a `Z`, a
 * fraction, a missing offset, an impossible date). Surrounding whitespace is
 * ignored, as xs:dateTime collapses it. "+00:00" is read like "-00:00"
 * (the schema accepts both; only the writer must use "-00:00").
 */
export function parseCapTime(s: string): number {
  const t = s.trim();
  return CAP_TIME_RE.test(t) ? parseIsoWithOffset(t) : NaN;
}

/**
 * Instant `ms` as a CAP 1.2 dateTime in zone `tz`: "2025-11-30T07:00:00+07:00".
 * Milliseconds are dropped (truncated, as parseIsoWithOffset truncates), and
 * a zero offset is written "-00:00": "The timezone for UTC MUST be represented
 * as "-00:00"" (CAP-v1.2-os §3.2.1 sent).
 */
export function formatCapTime(ms: number, tz: string): string {
  const s = formatTime(Math.floor(ms / 1000) * 1000, tz); // "2025-11-30T07:00:00.000+07:00"
  const offset = s.slice(23);
  return s.slice(0, 19) + (offset === '+00:00' ? '-00:00' : offset);
}

// ---------------------------------------------------------------- durations

const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;
const DURATION_RE = /^(\d{1,6})(s|m|h|d|w)$/;
/** Longest accepted aggregation window: one year. */
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

/**
 * Time-zone helpers for schedules: IANA name validation, local midnight of a
 * calendar date, and detection of zones with a fixed UTC offset.
 *
 * Why the fixed-offset detection: croner converts through Intl for every
 * step when given `timezone`, which costs ~70-100 µs per `nextRuns(1)`;
 * with `utcOffset` it is 3-10× faster. Asia/Ho_Chi_Minh (the default) has been
 * UTC+07:00 since 1975, so every Vietnamese schedule takes the fast path,
 * which matters for the overlap check over hundreds of schedules.
 */
import { tzOffsetMinutes } from '../../api/time.js';

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

const fixedOffsets = new Map<string, number | null>();

/**
 * The zone's UTC offset in minutes if it is the same at every sampled instant
 * (mid-January and mid-July of each year 2000-2100: any DST rule or lasting
 * offset change shows up), otherwise null. Computed once per zone (~200
 * Intl calls).
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

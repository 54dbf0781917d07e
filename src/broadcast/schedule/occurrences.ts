/**
 * When a schedule plays: pure functions over a (validated) schedule.
 *
 * Conventions (all times epoch ms):
 * - `nextRuns(s, from, n)` returns occurrences strictly after `from`
 *   (croner's own convention), so feeding the last returned value back in
 *   continues the series without repeats.
 * - `runsBetween(s, from, to)` is half-open: from <= t < to.
 * - startDate and endDate are both inclusive bounds on the occurrence start.
 * - Disabled schedules have no occurrences.
 */
import { Cron } from 'croner';
import type { ScheduleTiming } from './model.js';
import { fixedOffsetMinutes } from '../../core/time.js';

const MAX_CACHED = 2_000;
const crons = new Map<string, Cron>();

/**
 * A paused (timer-less) croner instance for a 5-field expression in `tz`,
 * cached by (expression, zone). Throws croner's TypeError on a bad pattern.
 * Zones with a fixed offset (Asia/Ho_Chi_Minh) use croner's faster `utcOffset`.
 */
export function cronFor(expr: string, tz: string): Cron {
  const key = `${expr}\u0000${tz}`;
  let c = crons.get(key);
  if (!c) {
    const offset = fixedOffsetMinutes(tz);
    c = offset === null
      ? new Cron(expr, { timezone: tz, paused: true, mode: '5-part' })
      : new Cron(expr, { utcOffset: offset, paused: true, mode: '5-part' });
    if (crons.size >= MAX_CACHED) crons.clear();
    crons.set(key, c);
  }
  return c;
}

/** Up to `n` occurrences strictly after `from`, honouring enabled, startDate, endDate. */
export function nextRuns(s: ScheduleTiming, from: number, n: number): number[] {
  if (!s.enabled || n <= 0) return [];
  if (s.at !== undefined) {
    return s.at > from && inWindow(s, s.at) ? [s.at] : [];
  }
  if (s.cron === undefined) return [];
  let after = from;
  if (s.startDate !== undefined && after < s.startDate - 1) after = s.startDate - 1;
  if (s.endDate !== undefined && after >= s.endDate) return [];
  const out: number[] = [];
  for (const d of cronFor(s.cron, s.timezone).nextRuns(n, new Date(after))) {
    const t = d.getTime();
    if (s.endDate !== undefined && t > s.endDate) break;
    out.push(t);
  }
  return out;
}

/** The first occurrence strictly after `from`, or undefined. */
export function firstAfter(s: ScheduleTiming, from: number): number | undefined {
  return nextRuns(s, from, 1)[0];
}

/**
 * Occurrences with from <= t < to, oldest first, at most `limit` (default
 * 10,000). `truncated` is true when more exist in the range.
 */
export function runsBetween(
  s: ScheduleTiming, from: number, to: number, limit = 10_000,
): number[] & { truncated?: boolean } {
  const out: number[] & { truncated?: boolean } = [];
  let cursor = from - 1;
  // croner computes every run asked for (25-100 µs each): start small and
  // double, so a short window over a sparse schedule stays cheap
  let batch = 4;
  while (cursor < to - 1) {
    const runs = nextRuns(s, cursor, Math.min(batch, limit - out.length + 1));
    batch = Math.min(batch * 2, 512);
    for (const t of runs) {
      if (t >= to) return out;
      if (out.length === limit) {
        out.truncated = true;
        return out;
      }
      out.push(t);
    }
    if (runs.length === 0 || (s.at !== undefined)) break;
    cursor = runs[runs.length - 1]!;
  }
  return out;
}

/** The latest occurrence at or before `at` and after `after` (exclusive), or undefined. */
export function lastRunAtOrBefore(s: ScheduleTiming, after: number, at: number): number | undefined {
  if (!s.enabled || at <= after) return undefined;
  if (s.at !== undefined) return s.at > after && s.at <= at && inWindow(s, s.at) ? s.at : undefined;
  if (s.cron === undefined) return undefined;
  let ref = at;
  if (s.endDate !== undefined && ref > s.endDate) ref = s.endDate;
  // previousRuns is exclusive of its reference: step 1 ms past it.
  const prev = cronFor(s.cron, s.timezone).previousRuns(1, new Date(ref + 1))[0]?.getTime();
  if (prev === undefined || prev <= after) return undefined;
  if (s.startDate !== undefined && prev < s.startDate) return undefined;
  return prev;
}

function inWindow(s: ScheduleTiming, t: number): boolean {
  return (s.startDate === undefined || t >= s.startDate) && (s.endDate === undefined || t <= s.endDate);
}

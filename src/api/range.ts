/**
 * The time window of a history query (`from`, `to`, `every`), with the API's
 * defaults and bounds. Parsing of times and durations is core/time.ts.
 */
import { Errors, withDetails } from '../core/errors.js';
import { parseDuration, parseTime } from '../core/time.js';

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

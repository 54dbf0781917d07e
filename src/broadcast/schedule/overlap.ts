/**
 * Overlap ("clash") detection between schedules (a speaker plays one thing at a time: two schedules that
 * would overlap on the same speaker are refused with 409 naming the clash,
 * unless the new one has higher priority).
 *
 * Two schedules clash when they share at least one speaker and some
 * occurrence intervals [start, start + duration) intersect.
 *
 * Horizon and bounds (documented limits, all configurable):
 * - the candidate's runs starting in [first, first + horizonMs), where
 *   first is its first run at or after now; default 30 days. Existing
 *   schedules' runs are checked wherever they can meet those (including one
 *   that started before now and is still playing);
 * - at most `maxRunsPerSchedule` (default 50,000) occurrences of one schedule
 *   in the window (every minute for a month fits).
 *
 * Algorithm, for ~hundreds of schedules:
 * 1. Area→speaker resolution is external (`resolve`), memoised per target
 *    within one call; schedules that share no speaker with the candidate, or
 *    that the candidate outranks, are skipped before any time computation.
 * 2. Occurrence lists come from a process-wide cache keyed by the timing
 *    fields only (cron, at, zone, start/end), so they never go stale and
 *    schedules sharing a pattern ("0 6 * * *") share one list. croner costs
 *    25-100 µs per occurrence, so the first check after start pays for the
 *    lists (~0.1-0.3 s for 400 weekly schedules) and later checks are
 *    array work only.
 * 3. Per pair, a merge sweep over the two sorted interval lists (each
 *    schedule's intervals have one duration, so starts and ends are both
 *    sorted): O(runs A + runs B) per pair, not O(runs A × runs B).
 */
import { Errors, withDetails, type KengError } from '../../core/errors.js';
import { PRIORITY_RANK, type Schedule, type ScheduleSpec, type ScheduleTarget, type ScheduleTiming } from './model.js';
import { firstAfter, runsBetween } from './occurrences.js';

export const DEFAULT_HORIZON_MS = 30 * 86_400_000;
/** Duration assumed when neither the schedule nor `durationSec()` knows it. */
export const DEFAULT_ASSUMED_DURATION_SEC = 300;

export interface Clash {
  scheduleId: string;
  name: string;
  priority: Schedule['priority'];
  /** Up to 20 of the shared speakers, sorted. */
  deviceIds: string[];
  /** How many speakers the two schedules share. */
  deviceCount: number;
  /** Start of the first overlap, epoch ms. */
  at: number;
}

export interface OverlapOptions {
  now: number;
  /** Speakers a target resolves to (areas include their villages' speakers). */
  resolve: (target: ScheduleTarget) => ReadonlySet<string>;
  horizonMs?: number;
  maxRunsPerSchedule?: number;
  /** Play length in seconds; default `s.durationSec`, else DEFAULT_ASSUMED_DURATION_SEC (e.g. pass the media's duration). */
  durationSec?: (s: ScheduleSpec) => number | undefined;
  /** Stop after this many clashes (default 10). */
  maxClashes?: number;
}

/**
 * Clashes between `candidate` (a new schedule, or the merged result of a
 * PATCH carrying its id) and `existing` schedules, earliest first. An empty
 * list means the candidate may be saved. Existing schedules with the same id
 * as the candidate, disabled ones and those of lower priority than the
 * candidate are ignored; a disabled candidate never clashes (check again
 * when it is enabled).
 */
export function findClashes(
  candidate: ScheduleSpec & { id?: string },
  existing: Iterable<Schedule>,
  opts: OverlapOptions,
): Clash[] {
  if (!candidate.enabled) return [];
  const maxRuns = opts.maxRunsPerSchedule ?? 50_000;
  const maxClashes = opts.maxClashes ?? 10;
  const durMs = (s: ScheduleSpec) => Math.max(1, Math.round(1000 * ((opts.durationSec?.(s) ?? s.durationSec) ?? DEFAULT_ASSUMED_DURATION_SEC)));

  const resolved = new Map<string, ReadonlySet<string>>();
  const resolve = (t: ScheduleTarget): ReadonlySet<string> => {
    const key = JSON.stringify([[...(t.areas ?? [])].sort(), [...(t.devices ?? [])].sort()]);
    let set = resolved.get(key);
    if (!set) { set = opts.resolve(t); resolved.set(key, set); }
    return set;
  };

  const mine = resolve(candidate.target);
  if (mine.size === 0) return [];
  const rank = PRIORITY_RANK[candidate.priority];
  const da = durMs(candidate);
  const firstA = firstAfter(candidate, opts.now - 1);
  if (firstA === undefined) return [];
  // the horizon starts at the candidate's first run (>= now), so a schedule
  // starting in two months is checked over its own first 30 days
  const end = firstA + (opts.horizonMs ?? DEFAULT_HORIZON_MS);
  const runsA = runsIn(candidate, firstA, end, maxRuns);
  const lastEndA = runsA[runsA.length - 1]! + da;

  const clashes: Clash[] = [];
  for (const other of existing) {
    if (other.id === candidate.id || !other.enabled) continue;
    if (rank > PRIORITY_RANK[other.priority]) continue; // the new one outranks it: allowed
    const shared = intersect(mine, resolve(other.target));
    if (shared.length === 0) continue;
    const db = durMs(other);
    // B's runs that can meet one of A's: started after firstA − db (possibly before now), before A's last end
    const runsB = runsIn(other, firstA - db + 1, lastEndA, maxRuns);
    const at = firstOverlap(runsA, da, runsB, db);
    if (at === undefined) continue;
    shared.sort();
    clashes.push({
      scheduleId: other.id, name: other.name, priority: other.priority,
      deviceIds: shared.slice(0, 20), deviceCount: shared.length, at,
    });
  }
  clashes.sort((x, y) => x.at - y.at || x.scheduleId.localeCompare(y.scheduleId));
  return clashes.slice(0, maxClashes);
}

/** The 409 error naming the first clash (details = all clashes found, times as epoch ms). */
export function toClashError(clashes: Clash[], formatTime: (ms: number) => string): KengError {
  const c = clashes[0]!;
  const speakers = c.deviceIds.slice(0, 3).join(', ') + (c.deviceCount > 3 ? ` and ${c.deviceCount - 3} more` : '');
  const msg = `overlaps schedule "${c.name}" (${c.scheduleId}) on ${speakers} at ${formatTime(c.at)}`;
  return withDetails(Errors.CONFLICT(msg), { clashes: clashes.map((x) => ({ ...x, at: formatTime(x.at) })) });
}

/**
 * Merge sweep: earliest start of an intersection of [a, a+da) and [b, b+db)
 * over two sorted run lists, or undefined. The interval that ends first
 * cannot meet any later interval of the other list, so it is dropped.
 */
function firstOverlap(A: readonly number[], da: number, B: readonly number[], db: number): number | undefined {
  let i = 0;
  let j = 0;
  while (i < A.length && j < B.length) {
    const a = A[i]!;
    const b = B[j]!;
    if (a + da <= b) i++;
    else if (b + db <= a) j++;
    else return Math.max(a, b);
  }
  return undefined;
}

// --- occurrence-list cache --------------------------------------------------

interface CachedRuns { from: number; to: number; runs: number[] }
const CACHE_MAX_KEYS = 5_000;
const runCache = new Map<string, CachedRuns>();
const SLACK_BEFORE_MS = 2 * 86_400_000;
const SLACK_AFTER_MS = 7 * 86_400_000;

/** Runs of `s` (as if enabled) with from <= t < to, through the cache. */
function runsIn(s: ScheduleTiming, from: number, to: number, maxRuns: number): number[] {
  const timing: ScheduleTiming = { timezone: s.timezone, enabled: true };
  if (s.cron !== undefined) timing.cron = s.cron;
  if (s.at !== undefined) timing.at = s.at;
  if (s.startDate !== undefined) timing.startDate = s.startDate;
  if (s.endDate !== undefined) timing.endDate = s.endDate;
  if (timing.at !== undefined) return runsBetween(timing, from, to, 1);
  const key = `${timing.cron}|${timing.timezone}|${timing.startDate ?? ''}|${timing.endDate ?? ''}`;
  let c = runCache.get(key);
  if (!c || c.from > from || c.to < to) {
    const cf = from - SLACK_BEFORE_MS;
    const ct = to + SLACK_AFTER_MS;
    c = { from: cf, to: ct, runs: runsBetween(timing, cf, ct, maxRuns) };
    if (runCache.size >= CACHE_MAX_KEYS) runCache.delete(runCache.keys().next().value!);
  } else {
    runCache.delete(key); // refresh LRU position
  }
  runCache.set(key, c);
  return c.runs.slice(lowerBound(c.runs, from), lowerBound(c.runs, to));
}

/** First index with runs[i] >= t. */
function lowerBound(runs: readonly number[], t: number): number {
  let lo = 0;
  let hi = runs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (runs[mid]! < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function intersect(x: ReadonlySet<string>, y: ReadonlySet<string>): string[] {
  const [small, big] = x.size <= y.size ? [x, y] : [y, x];
  const out: string[] = [];
  for (const d of small) if (big.has(d)) out.push(d);
  return out;
}

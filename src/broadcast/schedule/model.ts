/**
 * The schedule model (`POST /api/v1/schedules`, OpenAPI at /docs) and its
 * validation. A schedule is either recurring (`cron`, 5 fields, read in the
 * schedule's `timezone`) or one-off (`at`). Times are epoch ms internally;
 * the API formats them as ISO 8601 with offset on output.
 *
 * `validateSchedule` never throws on bad input: it returns every field error
 * at once, so a client can fix its form in one go. `toValidationError`
 * turns the list into the standard 400 KENG_ERR_VALIDATION error.
 */
import { randomUUID } from 'node:crypto';
import { parseTime } from '../../core/time.js';
import { Errors, withDetails, type KengError } from '../../core/errors.js';
import { cronFor, nextRuns } from './occurrences.js';
import { isValidTimeZone, zonedDayStart } from '../../core/time.js';

export const SCHEDULE_PRIORITIES = ['normal', 'priority'] as const;
export type SchedulePriority = (typeof SCHEDULE_PRIORITIES)[number];
/** Broadcast priorities (device-protocol.md); emergency is reserved for alerts. */
export type BroadcastPriority = SchedulePriority | 'emergency';
export const PRIORITY_RANK: Readonly<Record<BroadcastPriority, number>> = { normal: 0, priority: 1, emergency: 2 };

export const DEFAULT_VOLUME = 70;
/** Longest accepted durationSec (one day). */
export const MAX_DURATION_SEC = 86_400;

export interface ScheduleTarget {
  areas?: string[];
  devices?: string[];
}

export type ScheduleContent = { mediaId: string } | { streamUrl: string } | { ttsText: string };

/** The fields that decide when a schedule plays (what occurrences.ts needs). */
export interface ScheduleTiming {
  cron?: string;
  /** One-off start, epoch ms. Exactly one of cron/at is set. */
  at?: number;
  timezone: string;
  /** Inclusive bounds on occurrence start times, epoch ms. */
  startDate?: number;
  endDate?: number;
  enabled: boolean;
}

/** A validated, normalised request body (defaults applied). */
export interface ScheduleSpec extends ScheduleTiming {
  name: string;
  target: ScheduleTarget;
  content: ScheduleContent;
  volume: number;
  priority: SchedulePriority;
  /** Play length; required for streams, otherwise taken from the media when absent. */
  durationSec?: number;
  startDate?: number;
  endDate?: number;
}

export interface Schedule extends ScheduleSpec {
  id: string;
  createdAt: number;
  updatedAt: number;
  createdBy?: string;
  /**
   * Planned time of the last occurrence the scheduler handled (fired or
   * recorded as missed). Maintained by the scheduler only.
   */
  lastFiredAt?: number;
}

export interface FieldError {
  field: string;
  message: string;
}

export type Validation<T> = { ok: true; value: T } | { ok: false; errors: FieldError[] };

export interface ValidateOptions {
  /** Current time (from the injected Clock). */
  now: number;
  /** The commune's zone, `config.tz`. */
  defaultTz: string;
}

const FIELDS = new Set([
  'name', 'target', 'content', 'cron', 'at', 'timezone', 'volume', 'priority',
  'durationSec', 'startDate', 'endDate', 'enabled',
]);
/** Output-only fields a client may echo back; ignored on input. */
const READ_ONLY = new Set(['id', 'createdAt', 'updatedAt', 'createdBy', 'nextRuns', 'lastFiredAt']);
const DEVICE_ID_RE = /^[a-z0-9][a-z0-9_-]{1,63}$/;
const DATE_ONLY_RE = /^(\d{4})-(\d{2})-(\d{2})$/;
/** How many upcoming runs are checked against durationSec (a schedule must not overlap itself). */
const SELF_OVERLAP_RUNS = 100;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Validate a `POST /api/v1/schedules` body. */
export function validateSchedule(input: unknown, opts: ValidateOptions): Validation<ScheduleSpec> {
  return validate(input, opts, { timingChanged: true, atChanged: true });
}

/**
 * Validate a PATCH: `patch` fields replace those of `previous` (target and
 * content are replaced whole); a field set to null is removed, e.g.
 * `{"cron": "0 6 * * *", "at": null}` turns a one-off into a recurring
 * schedule. "At in the past" and "never runs" are only checked when a
 * timing field is in the patch, so an old schedule can still be renamed.
 */
export function validateSchedulePatch(previous: Schedule, patch: unknown, opts: ValidateOptions): Validation<ScheduleSpec> {
  if (!isObject(patch)) return { ok: false, errors: [{ field: '', message: 'must be a JSON object' }] };
  const merged: Record<string, unknown> = {};
  for (const k of FIELDS) {
    const v = (previous as unknown as Record<string, unknown>)[k];
    if (v !== undefined) merged[k] = v;
  }
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete merged[k];
    else merged[k] = v;
  }
  const has = (k: string) => Object.prototype.hasOwnProperty.call(patch, k);
  return validate(merged, opts, {
    timingChanged: ['cron', 'at', 'timezone', 'startDate', 'endDate', 'enabled', 'durationSec'].some(has),
    atChanged: has('at'),
  });
}

/** Give a validated spec its identity and timestamps. */
export function newSchedule(spec: ScheduleSpec, meta: { now: number; createdBy?: string; id?: string }): Schedule {
  const s: Schedule = { ...spec, id: meta.id ?? randomUUID(), createdAt: meta.now, updatedAt: meta.now };
  if (meta.createdBy !== undefined) s.createdBy = meta.createdBy;
  return s;
}

/** Apply a validated PATCH result to the stored schedule (identity, createdAt and lastFiredAt kept). */
export function applySpec(previous: Schedule, spec: ScheduleSpec, now: number): Schedule {
  const s: Schedule = { ...spec, id: previous.id, createdAt: previous.createdAt, updatedAt: Math.max(now, previous.updatedAt) };
  if (previous.createdBy !== undefined) s.createdBy = previous.createdBy;
  if (previous.lastFiredAt !== undefined) s.lastFiredAt = previous.lastFiredAt;
  return s;
}

/** The 400 error for a list of field errors (details = the list). */
export function toValidationError(errors: FieldError[]): KengError {
  const summary = errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)).join('; ');
  return withDetails(Errors.VALIDATION(summary), errors);
}

// ---------------------------------------------------------------------------

interface Checks { timingChanged: boolean; atChanged: boolean }

function validate(input: unknown, opts: ValidateOptions, checks: Checks): Validation<ScheduleSpec> {
  const errors: FieldError[] = [];
  const err = (field: string, message: string) => { errors.push({ field, message }); };
  if (!isObject(input)) return { ok: false, errors: [{ field: '', message: 'must be a JSON object' }] };

  for (const k of Object.keys(input)) {
    if (!FIELDS.has(k) && !READ_ONLY.has(k)) err(k, 'unknown field');
  }

  // name
  const name = typeof input.name === 'string' ? input.name.trim() : '';
  if (typeof input.name !== 'string' || name.length === 0 || name.length > 200) err('name', 'required, 1-200 characters');

  const target = validateTarget(input.target, err);
  const content = validateContent(input.content, err);

  // timezone first: date-only startDate/endDate are read in it
  let timezone = opts.defaultTz;
  if (input.timezone !== undefined) {
    if (typeof input.timezone !== 'string' || !isValidTimeZone(input.timezone.trim())) {
      err('timezone', 'unknown time zone; use an IANA name such as Asia/Ho_Chi_Minh');
    } else {
      timezone = input.timezone.trim();
    }
  }

  // cron xor at
  let cron: string | undefined;
  let at: number | undefined;
  const hasCron = input.cron !== undefined;
  const hasAt = input.at !== undefined;
  if (hasCron === hasAt) {
    err(hasCron ? 'at' : 'cron', hasCron ? 'give either cron or at, not both' : 'one of cron (recurring) or at (one-off) is required');
  }
  if (hasCron) cron = validateCron(input.cron, timezone, err);
  if (hasAt) {
    at = readTime(input.at, 'at', timezone, 'start', err);
    if (at !== undefined && checks.atChanged && at < opts.now) err('at', 'is in the past');
  }

  const startDate = input.startDate === undefined ? undefined : readTime(input.startDate, 'startDate', timezone, 'start', err);
  const endDate = input.endDate === undefined ? undefined : readTime(input.endDate, 'endDate', timezone, 'end', err);
  if (startDate !== undefined && endDate !== undefined && endDate < startDate) err('endDate', 'is before startDate');
  if (at !== undefined && ((startDate !== undefined && at < startDate) || (endDate !== undefined && at > endDate))) {
    err('at', 'is outside startDate..endDate');
  }

  // volume, priority, duration, enabled
  let volume = DEFAULT_VOLUME;
  if (input.volume !== undefined) {
    if (typeof input.volume !== 'number' || !Number.isInteger(input.volume) || input.volume < 0 || input.volume > 100) {
      err('volume', 'must be an integer 0-100');
    } else volume = input.volume;
  }
  let priority: SchedulePriority = 'normal';
  if (input.priority !== undefined) {
    if (input.priority === 'emergency') err('priority', 'emergency is reserved for alerts (POST /api/v1/alerts)');
    else if (!SCHEDULE_PRIORITIES.includes(input.priority as SchedulePriority)) err('priority', 'must be "normal" or "priority"');
    else priority = input.priority as SchedulePriority;
  }
  let durationSec: number | undefined;
  if (input.durationSec !== undefined) {
    const d = input.durationSec;
    if (typeof d !== 'number' || !Number.isFinite(d) || d <= 0 || d > MAX_DURATION_SEC) {
      err('durationSec', `must be a number of seconds, > 0 and <= ${MAX_DURATION_SEC}`);
    } else durationSec = d;
  }
  if (content && 'streamUrl' in content && durationSec === undefined) {
    err('durationSec', 'is required for a stream (how long to relay it)');
  }
  let enabled = true;
  if (input.enabled !== undefined) {
    if (typeof input.enabled !== 'boolean') err('enabled', 'must be true or false');
    else enabled = input.enabled;
  }

  if (errors.length > 0 || !target || !content) return { ok: false, errors };

  const spec: ScheduleSpec = { name, target, content, timezone, volume, priority, enabled };
  if (cron !== undefined) spec.cron = cron;
  if (at !== undefined) spec.at = at;
  if (durationSec !== undefined) spec.durationSec = durationSec;
  if (startDate !== undefined) spec.startDate = startDate;
  if (endDate !== undefined) spec.endDate = endDate;

  if (checks.timingChanged && cron !== undefined) {
    const upcoming = nextRuns({ ...spec, enabled: true }, opts.now, SELF_OVERLAP_RUNS);
    if (upcoming.length === 0) {
      err('cron', 'never runs (no occurrence after now within startDate..endDate)');
    } else if (durationSec !== undefined) {
      for (let i = 1; i < upcoming.length; i++) {
        if (upcoming[i]! - upcoming[i - 1]! < durationSec * 1000) {
          err('durationSec', 'is longer than the time between two runs of this schedule');
          break;
        }
      }
    }
    if (errors.length > 0) return { ok: false, errors };
  }
  return { ok: true, value: spec };
}

function validateTarget(v: unknown, err: (f: string, m: string) => void): ScheduleTarget | undefined {
  if (!isObject(v)) {
    err('target', 'required: {"areas"?: [code], "devices"?: [id]}');
    return undefined;
  }
  const out: ScheduleTarget = {};
  let ok = true;
  for (const k of Object.keys(v)) {
    if (k !== 'areas' && k !== 'devices') { err(`target.${k}`, 'unknown field'); ok = false; }
  }
  for (const key of ['areas', 'devices'] as const) {
    const list = v[key];
    if (list === undefined) continue;
    if (!Array.isArray(list) || list.length > 10_000) { err(`target.${key}`, 'must be an array'); ok = false; continue; }
    const seen = new Set<string>();
    list.forEach((x, i) => {
      const bad = typeof x !== 'string' || x.length === 0 || x.length > 64
        || (key === 'devices' && !DEVICE_ID_RE.test(x));
      if (bad) { err(`target.${key}[${i}]`, key === 'devices' ? 'not a valid device id' : 'not a valid area code'); ok = false; } else seen.add(x);
    });
    if (seen.size > 0) out[key] = [...seen];
  }
  if (ok && !out.areas && !out.devices) {
    err('target', 'needs at least one area or device');
    ok = false;
  }
  return ok ? out : undefined;
}

function validateContent(v: unknown, err: (f: string, m: string) => void): ScheduleContent | undefined {
  const shape = 'exactly one of {"mediaId"}, {"streamUrl"} or {"ttsText"}';
  if (!isObject(v)) { err('content', `required: ${shape}`); return undefined; }
  const keys = Object.keys(v);
  if (keys.length !== 1) { err('content', shape); return undefined; }
  const key = keys[0]!;
  const val = v[key];
  switch (key) {
    case 'mediaId':
      if (typeof val !== 'string' || val.length === 0 || val.length > 128) { err('content.mediaId', 'must be a media id'); return undefined; }
      return { mediaId: val };
    case 'ttsText':
      if (typeof val !== 'string' || val.trim().length === 0 || val.length > 5000) { err('content.ttsText', 'must be 1-5000 characters'); return undefined; }
      return { ttsText: val };
    case 'streamUrl': {
      let url: URL | undefined;
      try { url = typeof val === 'string' && val.length <= 2048 ? new URL(val) : undefined; } catch { url = undefined; }
      if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
        err('content.streamUrl', 'must be an http:// or https:// URL');
        return undefined;
      }
      return { streamUrl: val as string };
    }
    default:
      err('content', shape);
      return undefined;
  }
}

function validateCron(v: unknown, tz: string, err: (f: string, m: string) => void): string | undefined {
  if (typeof v !== 'string') { err('cron', 'must be a string "m h dom mon dow"'); return undefined; }
  const fields = v.trim().split(/\s+/);
  if (fields.length !== 5) {
    err('cron', `needs exactly 5 fields "m h dom mon dow" (got ${fields.length}${fields.length === 6 ? '; seconds are not supported' : ''})`);
    return undefined;
  }
  const expr = fields.join(' ');
  try {
    cronFor(expr, isValidTimeZone(tz) ? tz : 'UTC');
  } catch (e) {
    err('cron', `invalid: ${(e as Error).message.replace(/^CronPattern: /, '')}`);
    return undefined;
  }
  return expr;
}

/**
 * ISO 8601 with offset or epoch ms (core/time.ts parseTime). A date alone
 * ("2026-01-05") is also accepted for startDate/endDate/at and read in the
 * schedule's zone: start of that day, or for `end` the last millisecond of it.
 */
function readTime(v: unknown, field: string, tz: string, edge: 'start' | 'end', err: (f: string, m: string) => void): number | undefined {
  if (typeof v === 'string') {
    const m = DATE_ONLY_RE.exec(v.trim());
    if (m) {
      const y = Number(m[1]), mo = Number(m[2]), d = Number(m[3]);
      const probe = new Date(Date.UTC(y, mo - 1, d));
      if (mo < 1 || mo > 12 || probe.getUTCDate() !== d || !isValidTimeZone(tz)) {
        err(field, 'invalid date');
        return undefined;
      }
      return edge === 'start' ? zonedDayStart(y, mo, d, tz) : zonedDayStart(y, mo, d + 1, tz) - 1;
    }
  }
  if (typeof v !== 'string' && typeof v !== 'number') {
    err(field, 'expected ISO 8601 with offset or epoch milliseconds');
    return undefined;
  }
  try {
    return parseTime(v, field);
  } catch {
    err(field, 'expected ISO 8601 with offset or epoch milliseconds');
    return undefined;
  }
}

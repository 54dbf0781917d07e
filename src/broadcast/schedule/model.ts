/**
 * The schedule model (`POST /api/v1/schedules`, OpenAPI at /docs) and its
 * validation. A schedule is either recurring (`cron`, 5 fields, read in the
 * schedule's `timezone`) or one-off (`at`). Times are epoch ms internally;
 * the API formats them as ISO 8601 with offset on output.
 *
 * A body is first checked against its TypeBox schema (schema.ts, the one the
 * API documents), then by the rules a schema cannot express. Validation never
 * throws on bad input: it returns every field error at once, so a client can
 * fix its form in one go. `toValidationError` turns the list into the
 * standard 400 KENG_ERR_VALIDATION error.
 */
import { randomUUID } from 'node:crypto';
import type { Validator } from 'typebox/compile';
import { parseTime } from '../../core/time.js';
import { Errors, withDetails, type KengError } from '../../core/errors.js';
import { shapeErrors, type FieldError } from '../../core/schema.js';
import { hasCredentials } from '../stream-url.js';
import { cronFor, nextRuns } from './occurrences.js';
import { isValidTimeZone, zonedDayStart } from '../../core/time.js';
import {
  DEFAULT_VOLUME, EMERGENCY_MESSAGE, MAX_DURATION_SEC, NewSchedule, NewScheduleShape, PlayNow, PlayNowShape, SCHEDULE_PRIORITIES,
  SchedulePatchShape, type NewScheduleBody,
} from './schema.js';

export { DEFAULT_VOLUME, MAX_DURATION_SEC, SCHEDULE_PRIORITIES, type FieldError };
export type SchedulePriority = (typeof SCHEDULE_PRIORITIES)[number];
/** Broadcast priorities (device-protocol.md); emergency is reserved for alerts. */
export type BroadcastPriority = SchedulePriority | 'emergency';
export const PRIORITY_RANK: Readonly<Record<BroadcastPriority, number>> = { normal: 0, priority: 1, emergency: 2 };

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

export type Validation<T> = { ok: true; value: T } | { ok: false; errors: FieldError[] };

export interface ValidateOptions {
  /** Current time (from the injected Clock). */
  now: number;
  /** The commune's zone, `config.tz`. */
  defaultTz: string;
}

/** The fields a client may set (the others in the schema are read-only: echoed back, ignored). */
const FIELDS: readonly string[] = Object.entries(NewSchedule.properties)
  .filter(([, schema]) => (schema as { readOnly?: boolean }).readOnly !== true).map(([k]) => k);
/** Form order of the fields, for listing errors the way the client lays them out. */
const FIELD_ORDER: readonly string[] = Object.keys(NewSchedule.properties);
const DATE_ONLY_RE = /^(\d{4})-(\d{2})-(\d{2})$/;
/** How many upcoming runs are checked against durationSec (a schedule must not overlap itself). */
const SELF_OVERLAP_RUNS = 100;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Validate a `POST /api/v1/schedules` body. */
export function validateSchedule(input: unknown, opts: ValidateOptions): Validation<ScheduleSpec> {
  return validate(input, opts, { timingChanged: true, atChanged: true, contentChanged: true });
}

/**
 * Validate a PATCH: `patch` fields replace those of `previous` (target and
 * content are replaced whole); a field set to null is removed, e.g.
 * `{"cron": "0 6 * * *", "at": null}` turns a one-off into a recurring
 * schedule. "At in the past" and "never runs" are only checked when a
 * timing field is in the patch, so an old schedule can still be renamed.
 */
export function validateSchedulePatch(previous: Schedule, patch: unknown, opts: ValidateOptions): Validation<ScheduleSpec> {
  if (!isObject(patch)) return { ok: false, errors: bodyShapeErrors(SchedulePatchShape, patch) };
  const merged: Record<string, unknown> = {};
  for (const k of FIELDS) {
    const v = (previous as unknown as Record<string, unknown>)[k];
    if (v !== undefined) merged[k] = v;
  }
  const changes: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete merged[k];
    else merged[k] = changes[k] = v;
  }
  const has = (k: string) => Object.prototype.hasOwnProperty.call(patch, k);
  // The patch's own shape (nulls are removals, not values), then the schedule it makes.
  return validate(merged, opts, {
    timingChanged: ['cron', 'at', 'timezone', 'startDate', 'endDate', 'enabled', 'durationSec'].some(has),
    atChanged: has('at'),
    contentChanged: has('content'),
  }, bodyShapeErrors(SchedulePatchShape, changes));
}

/**
 * Validate a "play now" body (`POST /api/v1/broadcasts`): its own schema,
 * then the rules of a schedule's target, content, volume, priority and
 * durationSec, as a one-off starting now.
 */
export function validatePlayNow(input: unknown, opts: ValidateOptions): Validation<ScheduleSpec> {
  const shape = bodyShapeErrors(PlayNowShape, input);
  if (!isObject(input)) return { ok: false, errors: shape };
  // Fields PlayNow does not have are already reported; kept out, they would read as a schedule's cron or name.
  const known = Object.fromEntries(Object.entries(input).filter(([k]) => Object.hasOwn(PlayNow.properties, k)));
  return validate({ ...known, name: 'play now', at: opts.now + 60_000 }, opts, { timingChanged: true, atChanged: true, contentChanged: true }, shape);
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

/**
 * What a patch changes. Rules added later (a stream URL without credentials) judge only what the
 * request sets: a schedule saved by an earlier version stays renamable, disableable and deletable.
 */
interface Checks { timingChanged: boolean; atChanged: boolean; contentChanged: boolean }

/** A body's mismatches with its schema, with the one message a schema cannot pick by itself. */
function bodyShapeErrors(shape: Validator, input: unknown): FieldError[] {
  const errors = shapeErrors(shape, input);
  if (isObject(input) && input.priority === 'emergency') {
    for (const e of errors) if (e.field === 'priority') e.message = EMERGENCY_MESSAGE;
  }
  return errors;
}

const topField = (field: string): string => /^[^.[]*/.exec(field)![0];

/** `errors` without repeats, in form order (unknown fields first, as the client sent them). */
function inFormOrder(errors: FieldError[]): FieldError[] {
  const seen = new Set<string>();
  const unique = errors.filter((e) => {
    const key = `${e.field}\u0000${e.message}`;
    return seen.has(key) ? false : (seen.add(key), true);
  });
  const rank = (e: FieldError) => FIELD_ORDER.indexOf(topField(e.field));
  return unique.map((e, i) => ({ e, i })).sort((x, y) => rank(x.e) - rank(y.e) || x.i - y.i).map((x) => x.e);
}

function validate(input: unknown, opts: ValidateOptions, checks: Checks, earlier: FieldError[] = []): Validation<ScheduleSpec> {
  const errors: FieldError[] = [...earlier, ...bodyShapeErrors(NewScheduleShape, input)];
  if (!isObject(input)) return { ok: false, errors: inFormOrder(errors) };
  // Past the shape check: a field without a shape error has its schema's type.
  const body = input as NewScheduleBody;
  const misshapen = new Set(errors.map((e) => topField(e.field)));
  const fits = (k: keyof NewScheduleBody) => body[k] !== undefined && !misshapen.has(k);
  const err = (field: string, message: string) => { errors.push({ field, message }); };

  const target = fits('target') ? normaliseTarget(body.target, err) : undefined;
  const content = fits('content') ? checkContent(body.content, err, checks.contentChanged) : undefined;

  // timezone first: date-only startDate/endDate are read in it
  let timezone = opts.defaultTz;
  if (fits('timezone')) {
    if (!isValidTimeZone(body.timezone!.trim())) err('timezone', 'unknown time zone; use an IANA name such as Asia/Ho_Chi_Minh');
    else timezone = body.timezone!.trim();
  }

  // cron xor at
  let cron: string | undefined;
  let at: number | undefined;
  const hasCron = body.cron !== undefined;
  const hasAt = body.at !== undefined;
  if (hasCron === hasAt) {
    err(hasCron ? 'at' : 'cron', hasCron ? 'give either cron or at, not both' : 'one of cron (recurring) or at (one-off) is required');
  }
  if (fits('cron')) cron = checkCron(body.cron!, timezone, err);
  if (fits('at')) {
    at = readTime(body.at!, 'at', timezone, 'start', err);
    if (at !== undefined && checks.atChanged && at < opts.now) err('at', 'is in the past');
  }

  const startDate = fits('startDate') ? readTime(body.startDate!, 'startDate', timezone, 'start', err) : undefined;
  const endDate = fits('endDate') ? readTime(body.endDate!, 'endDate', timezone, 'end', err) : undefined;
  if (startDate !== undefined && endDate !== undefined && endDate < startDate) err('endDate', 'is before startDate');
  if (at !== undefined && ((startDate !== undefined && at < startDate) || (endDate !== undefined && at > endDate))) {
    err('at', 'is outside startDate..endDate');
  }

  const durationSec = fits('durationSec') ? body.durationSec : undefined;
  if (content && 'streamUrl' in content && durationSec === undefined) {
    err('durationSec', 'is required for a stream (how long to relay it)');
  }

  if (errors.length > 0 || !target || !content) return { ok: false, errors: inFormOrder(errors) };

  const spec: ScheduleSpec = {
    name: body.name.trim(), target, content, timezone,
    volume: body.volume ?? DEFAULT_VOLUME, priority: body.priority ?? 'normal', enabled: body.enabled ?? true,
  };
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
    if (errors.length > 0) return { ok: false, errors: inFormOrder(errors) };
  }
  return { ok: true, value: spec };
}

/** Repeated codes and ids once each; an empty target is refused. */
function normaliseTarget(v: NewScheduleBody['target'], err: (f: string, m: string) => void): ScheduleTarget | undefined {
  const out: ScheduleTarget = {};
  for (const key of ['areas', 'devices'] as const) {
    const list = v[key];
    if (list && list.length > 0) out[key] = [...new Set(list)];
  }
  if (!out.areas && !out.devices) {
    err('target', 'needs at least one area or device');
    return undefined;
  }
  return out;
}

/** The one kind of content; a stream URL must also parse. */
function checkContent(v: NewScheduleBody['content'], err: (f: string, m: string) => void, isNew: boolean): ScheduleContent | undefined {
  if (v.mediaId !== undefined) return { mediaId: v.mediaId };
  if (v.ttsText !== undefined) return { ttsText: v.ttsText };
  let url: URL | undefined;
  try { url = new URL(v.streamUrl!); } catch { url = undefined; }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    err('content.streamUrl', 'must be an http:// or https:// URL');
    return undefined;
  }
  if (isNew && hasCredentials(url)) {
    // Refused, not stored and hidden: they would reach every operator, the audit log and every speaker (stream-url.ts).
    err('content.streamUrl', 'must not contain a user name or password (they would be shown to every operator and logged); use a stream that needs no login');
    return undefined;
  }
  return { streamUrl: v.streamUrl! };
}

function checkCron(v: string, tz: string, err: (f: string, m: string) => void): string | undefined {
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
function readTime(v: string | number, field: string, tz: string, edge: 'start' | 'end', err: (f: string, m: string) => void): number | undefined {
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
  try {
    return parseTime(v, field);
  } catch {
    err(field, 'expected ISO 8601 with offset or epoch milliseconds');
    return undefined;
  }
}

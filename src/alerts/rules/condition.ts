/**
 * Where each device of a rule stands, and what that means for the rule. Pure
 * functions over per-device tracks, so the timing rules can be read (and
 * tested) apart from timers and storage.
 *
 * A device is *in condition* from the reading whose value meets the threshold
 * until a reading whose value is past the clear threshold (hysteresis: values
 * in between change nothing, neither entering nor leaving, and do not restart
 * the duration). It *counts* once it has been in condition for forSec and
 * while it is not silent (a reading within staleAfter). A reading after a
 * silence longer than staleAfter starts the device afresh, as after a restart:
 * what happened meanwhile is unknown.
 *
 * A device without a track (new, back from silence, or after a restart) whose
 * first value lies between the two thresholds is taken to be in condition if
 * the rule is firing (the episode goes on) and out of it otherwise.
 */
import type { AlertRuleSpec, RuleOp } from './model.js';
import { staleAfterMs } from './model.js';

/** rate_per_hour sums the readings of this window. */
export const RATE_WINDOW_MS = 3_600_000;
/** Most readings kept for one device's hourly sum (one every ~0.4 s). */
const MAX_WINDOW = 10_000;

export interface DeviceTrack {
  lastTs: number;
  /** The value the rule judges: the reading, or the hourly sum. */
  value: number;
  inCondition: boolean;
  /** When it entered the condition (reading time). */
  since: number | null;
  /** rate_per_hour: the readings of the last hour, oldest first. */
  window: Array<{ ts: number; v: number }> | null;
}

export type Detection = Pick<AlertRuleSpec, 'op' | 'threshold' | 'clearThreshold' | 'aggregate' | 'forSec' | 'minDevices' | 'staleAfterSec'>;

export function meets(op: RuleOp, v: number, threshold: number): boolean {
  switch (op) {
    case '>': return v > threshold;
    case '>=': return v >= threshold;
    case '<': return v < threshold;
    case '<=': return v <= threshold;
  }
}

/** Past the clear threshold, on the side away from the condition. */
export function pastClear(op: RuleOp, v: number, clearThreshold: number): boolean {
  return op === '>' || op === '>=' ? v < clearThreshold : v > clearThreshold;
}

/**
 * Feeds one reading of a device to its track (created or replaced as needed).
 * Readings older than the last one are ignored (false); one of the same time
 * replaces it (a message sent again after a lost acknowledgement must not
 * count twice in an hourly sum).
 */
export function observe(tracks: Map<string, DeviceTrack>, deviceId: string, ts: number, reading: number, det: Detection, firing: boolean): boolean {
  let t = tracks.get(deviceId);
  if (t && ts < t.lastTs) return false;
  // The rain measured before a silence is still rain of the last hour: the hourly sum outlives the reset.
  const kept = t?.window ?? null;
  if (t && ts - t.lastTs > staleAfterMs(det)) t = undefined;
  let value = reading;
  let window: DeviceTrack['window'] = null;
  if (det.aggregate === 'rate_per_hour') {
    window = kept ?? [];
    const last = window[window.length - 1];
    if (last !== undefined && last.ts === ts) last.v = reading; else window.push({ ts, v: reading });
    let drop = 0;
    while (drop < window.length && window[drop]!.ts <= ts - RATE_WINDOW_MS) drop++;
    drop = Math.max(drop, window.length - MAX_WINDOW);
    if (drop > 0) window.splice(0, drop);
    value = 0;
    for (const r of window) value += r.v;
  }
  let inCondition: boolean;
  let since: number | null;
  if (!t) {
    inCondition = meets(det.op, value, det.threshold) || (firing && !pastClear(det.op, value, det.clearThreshold));
    since = inCondition ? ts : null;
  } else if (t.inCondition) {
    inCondition = !pastClear(det.op, value, det.clearThreshold);
    since = inCondition ? t.since : null;
  } else {
    inCondition = meets(det.op, value, det.threshold);
    since = inCondition ? ts : null;
  }
  tracks.set(deviceId, { lastTs: ts, value, inCondition, since, window });
  return true;
}

export interface Tally {
  /** Devices heard from within staleAfter. */
  fresh: number;
  /** Fresh devices in condition (for any time). */
  inCondition: string[];
  /** Fresh devices in condition for forSec: they count. */
  counting: string[];
  /** The next instant a fresh device in condition reaches forSec. */
  nextDue?: number;
  /** The next instant a fresh device falls silent. */
  nextStale?: number;
}

/** Where the rule's devices stand at `now`. */
export function tally(tracks: ReadonlyMap<string, DeviceTrack>, now: number, det: Detection): Tally {
  const staleMs = staleAfterMs(det);
  const forMs = det.forSec * 1000;
  const out: Tally = { fresh: 0, inCondition: [], counting: [] };
  for (const [id, t] of tracks) {
    const staleAt = t.lastTs + staleMs;
    if (staleAt <= now) continue;
    out.fresh++;
    if (out.nextStale === undefined || staleAt < out.nextStale) out.nextStale = staleAt;
    if (!t.inCondition || t.since === null) continue;
    out.inCondition.push(id);
    const dueAt = t.since + forMs;
    if (dueAt <= now) out.counting.push(id);
    else if (out.nextDue === undefined || dueAt < out.nextDue) out.nextDue = dueAt;
  }
  return out;
}

/** Drops the tracks of devices silent for longer than staleAfter (they would start afresh anyway) and than the hourly sum's window. */
export function forgetSilent(tracks: Map<string, DeviceTrack>, now: number, det: Detection): void {
  const keepMs = det.aggregate === 'rate_per_hour' ? Math.max(staleAfterMs(det), RATE_WINDOW_MS) : staleAfterMs(det);
  for (const [id, t] of tracks) if (t.lastTs + keepMs <= now) tracks.delete(id);
}

/**
 * Target resolution and area scoping for schedules and broadcasts
 * (OpenAPI at /docs, tags schedules and broadcasts; docs/roles.md).
 *
 * A target is `{"areas"?: [code], "devices"?: [id]}`; areas include their
 * villages' speakers. Operators act only within their areas:
 * an area outside them is 403; a device outside them is reported exactly like
 * an unknown device (422), so its existence does not leak.
 */
import { Errors, withDetails } from '../core/errors.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import type { Principal } from '../auth/types.js';
import type { ScheduleTarget } from './schedule/index.js';

export type TargetRegistry = Pick<DeviceRegistryApi, 'getArea' | 'getDevice' | 'listDevices'>;

/** Who is asking: the principal, its area scope, and the request IP (for the audit log). */
export interface Caller {
  principal: Principal;
  ip?: string;
  /** Whether an area lies within the caller's scope (policy.inScope). */
  inScope(area: string): boolean;
}

/** Speakers of a target as it is now; unknown areas and devices and non-speakers are skipped. */
export function resolveSpeakers(reg: TargetRegistry, t: ScheduleTarget): Set<string> {
  const ids = new Set<string>();
  for (const a of t.areas ?? []) {
    if (!reg.getArea(a)) continue;
    for (const d of reg.listDevices({ area: a, kind: 'speaker' })) ids.add(d.id);
  }
  for (const id of t.devices ?? []) {
    if (reg.getDevice(id)?.kind === 'speaker') ids.add(id);
  }
  return ids;
}

/**
 * Checks a target for a write by `c`: 403 for an area outside the caller's
 * areas, 422 naming every unknown area, unknown (or invisible) device and
 * non-speaker device. Returns the speakers, sorted.
 */
export function checkTarget(reg: TargetRegistry, t: ScheduleTarget, c: Caller): string[] {
  const problems: Array<{ field: string; message: string }> = [];
  for (const [i, a] of (t.areas ?? []).entries()) {
    if (!reg.getArea(a)) { problems.push({ field: `target.areas[${i}]`, message: `area "${a}" does not exist` }); continue; }
    if (!c.inScope(a)) throw withDetails(Errors.FORBIDDEN(`area "${a}" is outside your areas`), { field: `target.areas[${i}]` });
  }
  for (const [i, id] of (t.devices ?? []).entries()) {
    const d = reg.getDevice(id);
    if (!d || !c.inScope(d.area)) problems.push({ field: `target.devices[${i}]`, message: `device "${id}" does not exist` });
    else if (d.kind !== 'speaker') problems.push({ field: `target.devices[${i}]`, message: `device "${id}" is a ${d.kind}, not a speaker` });
  }
  if (problems.length > 0) {
    throw withDetails(Errors.UNPROCESSABLE(problems.map((p) => p.message).join('; ')), problems);
  }
  return [...resolveSpeakers(reg, t)].sort();
}

/** Whether every area and (still registered) device of a target is within the caller's scope. */
export function targetVisible(reg: TargetRegistry, t: ScheduleTarget, c: Pick<Caller, 'inScope'>): boolean {
  for (const a of t.areas ?? []) if (!c.inScope(a)) return false;
  for (const id of t.devices ?? []) {
    const d = reg.getDevice(id);
    if (d && !c.inScope(d.area)) return false;
  }
  return true;
}

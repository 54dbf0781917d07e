/**
 * `subscribe` / `unsubscribe` payloads: shape checks and the scope decision
 * (asked of the Policy, never decided here). All or nothing: one forbidden
 * item refuses the whole request.
 */
import type { Policy } from '../auth/policy.js';
import type { Principal } from '../auth/types.js';
import { AREA_CODE_RE, DEVICE_ID_RE } from '../devices/types.js';

export interface SubscribeRequest { devices: string[]; areas: string[] }
export interface LiveError { code: string; message: string }
export type Checked<T> = { ok: true; value: T } | { ok: false; error: LiveError };
/** The ack of a `subscribe` or `unsubscribe` request. */
export type SubscribeAck = { ok: true; devices: number } | { error: LiveError };

/** What the feed needs of the device registry. */
export interface LiveRegistry {
  getDevice(id: string): { id: string; area: string } | undefined;
  getArea(code: string): { parent: string | null } | undefined;
  listDevices(filter?: { area?: string }): Array<{ id: string }>;
}

/** Most items in one request (the per-client total is LiveFeedSettings.maxSubscriptions). */
export const MAX_ITEMS_PER_REQUEST = 1000;

const fail = (code: string, message: string): { ok: false; error: LiveError } => ({ ok: false, error: { code, message } });
export const validation = (message: string): { ok: false; error: LiveError } => fail('KENG_ERR_VALIDATION', `Invalid request: ${message}`);

function list(raw: unknown, field: string, re: RegExp): Checked<string[]> {
  if (raw === undefined || raw === null) return { ok: true, value: [] };
  if (!Array.isArray(raw)) return validation(`"${field}" must be an array of strings`);
  if (raw.length > MAX_ITEMS_PER_REQUEST) return validation(`"${field}" has more than ${MAX_ITEMS_PER_REQUEST} items`);
  for (const v of raw) {
    if (typeof v !== 'string' || !re.test(v)) return validation(`"${field}" items must match ${re.source}`);
  }
  return { ok: true, value: [...new Set(raw as string[])] };
}

/** Shape check of `{devices?: [id], areas?: [code]}`; at least one item. */
export function parseSubscribe(raw: unknown): Checked<SubscribeRequest> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return validation('expected an object {"devices"?: [id], "areas"?: [code]}');
  const extra = Object.keys(raw).filter((k) => k !== 'devices' && k !== 'areas');
  if (extra.length) return validation(`unknown field "${extra[0]!.slice(0, 32)}"`);
  const r = raw as { devices?: unknown; areas?: unknown };
  const devices = list(r.devices, 'devices', DEVICE_ID_RE);
  if (!devices.ok) return devices;
  const areas = list(r.areas, 'areas', AREA_CODE_RE);
  if (!areas.ok) return areas;
  if (devices.value.length + areas.value.length === 0) return validation('give at least one device or area');
  return { ok: true, value: { devices: devices.value, areas: areas.value } };
}

export interface ScopeDeps {
  policy: Policy;
  registry: {
    getDevice(id: string): { area: string } | undefined;
    getArea(code: string): unknown;
  };
}

/**
 * May the principal watch these devices and areas (telemetry.read in their
 * area)? Unknown items are refused like forbidden ones for a scoped principal
 * (so existence does not leak) and reported as not found to an admin.
 */
export function checkScope(p: Principal, req: SubscribeRequest, deps: ScopeDeps): Checked<SubscribeRequest> {
  const { policy, registry } = deps;
  if (!policy.can(p, 'telemetry.read')) return fail('KENG_ERR_FORBIDDEN', `Not allowed: role ${p.role} may not read telemetry`);
  const scope = policy.scope(p);
  const unknown = (what: string) => (scope === 'all' ? fail('KENG_ERR_NOT_FOUND', `${what} not found`) : fail('KENG_ERR_FORBIDDEN', `Not allowed: ${what} is outside your areas`));
  for (const code of req.areas) {
    if (!registry.getArea(code)) return unknown(`Area "${code}"`);
    if (!policy.inScope(p, code, scope)) return fail('KENG_ERR_FORBIDDEN', `Not allowed: area "${code}" is outside your areas`);
  }
  for (const id of req.devices) {
    const d = registry.getDevice(id);
    if (!d) return unknown(`Device "${id}"`);
    if (!policy.inScope(p, d.area, scope)) return fail('KENG_ERR_FORBIDDEN', `Not allowed: device "${id}" is outside your areas`);
  }
  return { ok: true, value: req };
}

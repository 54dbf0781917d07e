/** Registry objects → API replies (times as ISO 8601 in the configured zone). */
import type { Area, Device, DeviceView, LatestValue } from '../devices/types.js';
import type { DeviceCredentials } from '../devices/registry-types.js';
import type { Scalar } from '../core/events.js';
import { formatTime, formatTimeOrNull } from '../core/time.js';
import type { ModbusSettings } from '../modbus/types.js';

export interface AreaDto { code: string; name: string; level: Area['level']; parent: string | null; createdAt: string }
export interface DeviceDto {
  id: string; kind: Device['kind']; name: string; area: string;
  location: { lat: number; lon: number } | null; model: string | null;
  enabled: boolean; online: boolean; lastSeen: string | null;
  attributes: Record<string, unknown>;
  latest: Record<string, { ts: string; value: Scalar }>;
  /** A Modbus device's settings (src/modbus), as registered. */
  transport?: ModbusSettings['transport'];
  registerMap?: ModbusSettings['registerMap'];
  pollIntervalSec?: number;
  /** Cluster mode: the node polling a Modbus device now (null: none). */
  polledBy?: string | null;
  /** A gateway's setting and refused names; a sub-device's gateway (src/gateway). */
  createSubDevices?: boolean;
  refusedSubDevices?: Array<{ name: string; reason: string; count: number; firstAt: string; lastAt: string }>;
  gateway?: { id: string; name: string };
}

export function areaDto(a: Area, tz: string): AreaDto {
  return { code: a.code, name: a.name, level: a.level, parent: a.parent ?? null, createdAt: formatTime(a.createdAt, tz) };
}

export function latestDto(latest: Record<string, LatestValue>, tz: string): DeviceDto['latest'] {
  const out: DeviceDto['latest'] = {};
  for (const [field, v] of Object.entries(latest)) out[field] = { ts: formatTime(v.ts, tz), value: v.value };
  return out;
}

export function deviceDto(v: DeviceView, tz: string): DeviceDto {
  return {
    id: v.id, kind: v.kind, name: v.name, area: v.area,
    location: v.location ?? null, model: v.model ?? null,
    enabled: v.enabled, online: v.online, lastSeen: formatTimeOrNull(v.lastSeen, tz),
    attributes: v.attributes ?? {},
    latest: latestDto(v.latest ?? {}, tz),
  };
}

/** A just-registered device: its view plus the credentials, shown only in this reply. */
export function createdDeviceDto(view: DeviceView, creds: DeviceCredentials, tz: string): DeviceDto & DeviceCredentials {
  return { ...deviceDto(view, tz), secret: creds.secret, accessToken: creds.accessToken };
}

/** The view of a device the registry has no presence for yet. */
export function freshView(d: Device): DeviceView {
  return { ...d, online: false, lastSeen: null, attributes: {}, latest: {} };
}

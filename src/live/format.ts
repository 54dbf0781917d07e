/**
 * Event payloads as the client sees them. Times are ISO 8601 with the offset
 * of the configured zone, exactly as the REST API writes them (api/time.ts),
 * but the zone offset is cached per 15-minute UTC slot: every real zone's
 * offset is a multiple of 15 minutes and changes only on such a boundary, so
 * the hot path does not call Intl for every reading.
 */
import { tzOffsetMinutes } from '../api/time.js';
import type { KengEvents, Scalar } from '../core/events.js';

export interface TelemetryMsg { deviceId: string; ts: string; values: Record<string, Scalar> }
export interface StatusMsg { deviceId: string; online: boolean; at: string }
export interface BroadcastMsg { broadcastId: string; deviceId: string; state: string; at: string }

const SLOT_MS = 15 * 60_000;
const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n));
const pad3 = (n: number): string => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : String(n));

export type TimeFormatter = (ms: number) => string;

export function timeFormatter(tz: string): TimeFormatter {
  let slot = Number.NaN;
  let offset = 0;
  let suffix = '+00:00';
  return (ms: number): string => {
    const s = Math.floor(ms / SLOT_MS);
    if (s !== slot) {
      slot = s;
      offset = tzOffsetMinutes(ms, tz);
      const abs = Math.abs(offset);
      suffix = `${offset < 0 ? '-' : '+'}${pad2(Math.floor(abs / 60))}:${pad2(abs % 60)}`;
    }
    const d = new Date(ms + offset * 60_000);
    return `${String(d.getUTCFullYear()).padStart(4, '0')}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`
      + `T${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}.${pad3(d.getUTCMilliseconds())}${suffix}`;
  };
}

export function telemetryMsg(e: KengEvents['telemetry'], fmt: TimeFormatter): TelemetryMsg {
  return { deviceId: e.deviceId, ts: fmt(e.ts), values: e.values };
}

export function statusMsg(e: KengEvents['status'], fmt: TimeFormatter): StatusMsg {
  return { deviceId: e.deviceId, online: e.online, at: fmt(e.at) };
}

export function broadcastMsg(e: KengEvents['broadcast.state'], fmt: TimeFormatter): BroadcastMsg {
  return { broadcastId: e.broadcastId, deviceId: e.deviceId, state: e.state, at: fmt(e.at) };
}

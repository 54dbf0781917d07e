/**
 * Event payloads as the client sees them. Times are ISO 8601 with the offset
 * of the configured zone, exactly as the REST API writes them (core/time.ts
 * timeFormatter, which keeps the zone offset for the current 15-minute slot so
 * the hot path does not call Intl for every reading).
 */
import type { AlertEvent, AlertRuleEvent, KengEvents, Scalar } from '../core/events.js';
import type { TimeFormatter } from '../core/time.js';

export interface TelemetryMsg { deviceId: string; ts: string; values: Record<string, Scalar> }
export interface StatusMsg { deviceId: string; online: boolean; at: string }
export interface BroadcastMsg { broadcastId: string; deviceId: string; state: string; at: string }

export function telemetryMsg(e: KengEvents['telemetry'], fmt: TimeFormatter): TelemetryMsg {
  return { deviceId: e.deviceId, ts: fmt(e.ts), values: e.values };
}

export function statusMsg(e: KengEvents['status'], fmt: TimeFormatter): StatusMsg {
  return { deviceId: e.deviceId, online: e.online, at: fmt(e.at) };
}

export function broadcastMsg(e: KengEvents['broadcast.state'], fmt: TimeFormatter): BroadcastMsg {
  return { broadcastId: e.broadcastId, deviceId: e.deviceId, state: e.state, at: fmt(e.at) };
}

export interface AlertMsg extends Omit<AlertEvent, 'at'> { at: string }

export function alertMsg(e: AlertEvent, fmt: TimeFormatter): AlertMsg {
  return { ...e, at: fmt(e.at) };
}

export interface AlertRuleMsg extends Omit<AlertRuleEvent, 'at'> { at: string }

export function alertRuleMsg(e: AlertRuleEvent, fmt: TimeFormatter): AlertRuleMsg {
  return { ...e, at: fmt(e.at) };
}

import { EventEmitter } from 'node:events';

export type Scalar = number | boolean | string;

/** One reading time of one device: its values at ts. */
export interface TelemetryEvent { deviceId: string; area: string; kind: string; ts: number; values: Record<string, Scalar> }

/** Typed internal events. Services talk through these, not each other's internals. */
export interface KengEvents {
  /** Readings of one device message, after they are durable on disk. */
  telemetry: TelemetryEvent;
  /**
   * The same readings as soon as they are accepted (decoded, valid, handed to
   * the group commit), before they are durable: for views where latency
   * matters (the live feed). Each is followed by `telemetry` once on disk,
   * unless the store fails; the device then gets no PUBACK and sends it again.
   */
  'telemetry.accepted': TelemetryEvent;
  /** Presence change (connect, disconnect, keep-alive loss, status message). */
  status: { deviceId: string; area: string; online: boolean; at: number };
  /** Client attributes reported by a device (merged, latest only). */
  attributes: { deviceId: string; attributes: Record<string, unknown> };
  /** A structured device event from v1/devices/D/events (e.g. playback). */
  'device.event': { deviceId: string; payload: Record<string, unknown>; at: number };
  /** A device's answer to a server RPC (v1/devices/D/rpc/response/R). */
  'rpc.response': { deviceId: string; requestId: string; payload: Record<string, unknown>; at: number };
  /** Device registry changes (created, updated, deleted). */
  'device.changed': { deviceId: string; change: 'created' | 'updated' | 'deleted' };
  /** A broadcast's state on one speaker changed (queued, playing, done, failed …); emitted by the broadcast module. */
  'broadcast.state': { broadcastId: string; deviceId: string; area: string; state: string; at: number };
  /** An alert was raised, approved, played, cancelled, replaced, expired or rejected; emitted by the alerts module. */
  'alert.changed': AlertEvent;
  /** A sensor rule fired (raised its alert, or failed to), or its condition ended; emitted by the alert rules. */
  'alert.rule': AlertRuleEvent;
}

/** What the live feed tells operators and the IOC about an alert. */
export interface AlertEvent {
  alertId: string;
  identifier: string;
  state: string;
  /** What happened: created, approved, confirmed, rejected, cancelled, replaced, expired. */
  change: string;
  status: string;
  msgType: string;
  severity: string;
  urgency: string;
  event: string;
  headline: string;
  areas: string[];
  broadcastId?: string;
  /** Who caused the change (principal id), absent for expiry. */
  by?: string;
  at: number;
}

/** What the live feed tells operators and the IOC about a sensor rule (docs/alerts.md "Sensor-triggered warnings"). */
export interface AlertRuleEvent {
  ruleId: string;
  name: string;
  /** The area it watches and warns. */
  area: string;
  /** fired: it raised its alert; failed: it could not raise it; cleared: its condition ended. */
  change: 'fired' | 'failed' | 'cleared';
  field: string;
  /** The devices behind the change and their values (fired: those in condition; cleared: those back past the clear threshold). */
  readings: Array<{ deviceId: string; value: number }>;
  alertId?: string;
  /** The alert's state after the change (a pending alert is rejected when the condition ends). */
  alertState?: string;
  /** Why the alert could not be raised (failed). */
  error?: string;
  at: number;
}

export type EventName = keyof KengEvents;

export class EventBus {
  private readonly ee = new EventEmitter();
  constructor() { this.ee.setMaxListeners(100); }
  emit<K extends EventName>(name: K, payload: KengEvents[K]): void { this.ee.emit(name, payload); }
  on<K extends EventName>(name: K, fn: (payload: KengEvents[K]) => void): () => void {
    this.ee.on(name, fn);
    return () => this.ee.off(name, fn);
  }
}

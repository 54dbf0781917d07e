/**
 * The coalesced backlog of one backed-up client: the latest value per
 * (device, field), the latest status per device and the latest state per
 * (broadcast, device). Its size is counted in entries so the feed can drop a
 * client that holds too many.
 */
import type { KengEvents, Scalar } from '../core/events.js';
import type { TimeFormatter } from '../core/time.js';
import { broadcastMsg, statusMsg, type BroadcastMsg, type StatusMsg, type TelemetryMsg } from './format.js';

interface FieldValue { ts: number; value: Scalar }

export class Pending {
  private readonly telemetry = new Map<string, Map<string, FieldValue>>();
  private readonly status = new Map<string, KengEvents['status']>();
  private readonly broadcasts = new Map<string, KengEvents['broadcast.state']>();
  /** (device, field) + device statuses + (broadcast, device) states held. */
  entries = 0;

  addTelemetry(e: KengEvents['telemetry']): void {
    let fields = this.telemetry.get(e.deviceId);
    if (!fields) { fields = new Map(); this.telemetry.set(e.deviceId, fields); }
    for (const k in e.values) {
      const cur = fields.get(k);
      if (!cur) { fields.set(k, { ts: e.ts, value: e.values[k]! }); this.entries++; }
      else if (cur.ts <= e.ts) { cur.ts = e.ts; cur.value = e.values[k]!; }
    }
  }

  addStatus(e: KengEvents['status']): void {
    const cur = this.status.get(e.deviceId);
    if (!cur) this.entries++;
    if (!cur || cur.at <= e.at) this.status.set(e.deviceId, e);
  }

  addBroadcast(e: KengEvents['broadcast.state']): void {
    const key = `${e.broadcastId}\u0000${e.deviceId}`;
    const cur = this.broadcasts.get(key);
    if (!cur) this.entries++;
    if (!cur || cur.at <= e.at) this.broadcasts.set(key, e);
  }

  /** The held updates as client events: one telemetry event per (device, ts) with every field of that ts. */
  messages(fmt: TimeFormatter): { telemetry: TelemetryMsg[]; status: StatusMsg[]; broadcast: BroadcastMsg[] } {
    const telemetry: TelemetryMsg[] = [];
    for (const [deviceId, fields] of this.telemetry) {
      const byTs = new Map<number, Record<string, Scalar>>();
      for (const [k, v] of fields) {
        let values = byTs.get(v.ts);
        if (!values) { values = {}; byTs.set(v.ts, values); }
        values[k] = v.value;
      }
      for (const ts of [...byTs.keys()].sort((a, b) => a - b)) telemetry.push({ deviceId, ts: fmt(ts), values: byTs.get(ts)! });
    }
    return {
      telemetry,
      status: [...this.status.values()].map((e) => statusMsg(e, fmt)),
      broadcast: [...this.broadcasts.values()].map((e) => broadcastMsg(e, fmt)),
    };
  }
}

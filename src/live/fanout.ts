/**
 * Bus events to clients: the hot path (bench/live.ts: 10,000 readings/s to
 * 200 clients).
 *
 * Every single-event client is in one room per subscribed device ("d:ID") and
 * area ("a:CODE"); an event is serialized once and emitted once to the rooms
 * of its device and of its area's ancestor chain (cached), so the hot path has
 * no per-client code of ours. Batched and throttled clients are in group rooms
 * instead: their telemetry goes into each matching group's buffer (batch.ts,
 * throttle.ts). Backed-up clients get it coalesced (slow.ts).
 */
import type { Namespace } from 'socket.io';
import type { KengEvents } from '../core/events.js';
import type { BatchGroup, BatchGroups } from './batch.js';
import type { LiveClient } from './client.js';
import type { TimeFormatter } from '../core/time.js';
import { alertMsg, alertRuleMsg, broadcastMsg, statusMsg, telemetryMsg } from './format.js';
import type { EventCounts } from './metrics.js';
import { NO_BROADCAST_ROOM, deviceRoom, type AncestorCache } from './rooms.js';
import type { SlowClients } from './slow.js';
import type { Throttle } from './throttle.js';

export class FanOut {
  /** Set when the feed attaches to the HTTP server; events before that go nowhere. */
  private nsp: Namespace | null = null;
  /** The backed-up clients (slow.clients), checked for size on every event. */
  private readonly backedUp: ReadonlySet<LiveClient>;

  constructor(
    private readonly ancestors: AncestorCache,
    private readonly fmt: TimeFormatter,
    private readonly counts: EventCounts,
    private readonly batches: BatchGroups,
    private readonly throttle: Throttle,
    private readonly slow: SlowClients,
  ) {
    this.backedUp = slow.clients;
  }

  attach(nsp: Namespace): void { this.nsp = nsp; }

  readonly onTelemetry = (e: KengEvents['telemetry']): void => {
    if (!this.nsp) return;
    const areaRooms = this.ancestors.rooms(e.area);
    const targets = this.targets(e.deviceId, areaRooms);
    if (targets) {
      this.nsp.to(targets).emit('telemetry', telemetryMsg(e, this.fmt));
      this.counts.telemetry++;
      this.throttle.counted(targets);
    }
    if (this.batches.size) this.batches.forEvent(deviceRoom(e.deviceId), areaRooms, (g) => this.batches.push(g, e));
    const tg = this.throttle.groups;
    if (tg.size) tg.forEvent(deviceRoom(e.deviceId), areaRooms, (g) => tg.push(g, e));
    if (this.backedUp.size) this.slow.coalesce(e, (p) => p.addTelemetry(e));
  };

  readonly onStatus = (e: KengEvents['status']): void => {
    if (!this.nsp) return;
    const areaRooms = this.ancestors.rooms(e.area);
    // Plain clients' device/area rooms and batched clients' group rooms hold different sockets: one emit, one encode.
    const rooms = joinRooms(this.targets(e.deviceId, areaRooms), this.groupRooms(e.deviceId, areaRooms, false));
    if (rooms) {
      this.nsp.to(rooms).emit('status', statusMsg(e, this.fmt));
      this.counts.status++;
    }
    if (this.backedUp.size) this.slow.coalesce(e, (p) => p.addStatus(e));
  };

  readonly onBroadcast = (e: KengEvents['broadcast.state']): void => {
    if (!this.nsp) return;
    const areaRooms = this.ancestors.rooms(e.area);
    const rooms = joinRooms(this.targets(e.deviceId, areaRooms), this.groupRooms(e.deviceId, areaRooms, true));
    if (rooms) {
      this.nsp.to(rooms).except(NO_BROADCAST_ROOM).emit('broadcast', broadcastMsg(e, this.fmt));
      this.counts.broadcast++;
    }
    if (this.backedUp.size) this.slow.coalesce(e, (p) => p.addBroadcast(e), true);
  };

  /**
   * An alert to the clients of its areas (and of their ancestors) who may
   * read alerts: the roles with alerts.read are those with broadcasts.read
   * (docs/roles.md), so the room without broadcast rights is left out for both.
   * Rare events: not coalesced for backed-up clients.
   */
  readonly onAlert = (e: KengEvents['alert.changed']): void => {
    const rooms = this.staffRooms(e.areas);
    if (!rooms) return;
    this.nsp!.to(rooms).except(NO_BROADCAST_ROOM).emit('alert', alertMsg(e, this.fmt));
    this.counts.alert++;
  };

  /** A sensor rule fired or cleared: to the same clients as the alerts of its area. */
  readonly onAlertRule = (e: KengEvents['alert.rule']): void => {
    const rooms = this.staffRooms([e.area]);
    if (!rooms) return;
    this.nsp!.to(rooms).except(NO_BROADCAST_ROOM).emit('alert.rule', alertRuleMsg(e, this.fmt));
    this.counts.alertRule++;
  };

  /** Rooms (with members) of the areas and their ancestors, batch groups included; null when none. */
  private staffRooms(areas: readonly string[]): string[] | null {
    if (!this.nsp) return null;
    const rooms = new Set<string>();
    const present = this.nsp.adapter.rooms;
    for (const area of areas) {
      const chain = this.ancestors.rooms(area);
      for (const r of chain) if (present.has(r)) rooms.add(r);
      for (const g of this.groupRooms('', chain, true) ?? []) rooms.add(g);
    }
    return rooms.size === 0 ? null : [...rooms];
  }

  /** Rooms of a device event that have members, or null. */
  private targets(deviceId: string, areaRooms: readonly string[]): string[] | null {
    const rooms = this.nsp!.adapter.rooms;
    let out: string[] | null = null;
    const d = deviceRoom(deviceId);
    if (rooms.has(d)) out = [d];
    for (const r of areaRooms) if (rooms.has(r)) (out ??= []).push(r);
    return out;
  }

  /**
   * Rooms of the batch groups an event of this device targets (only those that
   * may see broadcasts, for broadcast events), each group's pending batch
   * flushed first so the single event does not overtake earlier readings.
   */
  private groupRooms(deviceId: string, areaRooms: readonly string[], broadcastsOnly: boolean): string[] | null {
    let out: string[] | null = null;
    for (const groups of [this.batches, this.throttle.groups]) {
      if (!groups.size) continue;
      groups.forEvent(deviceRoom(deviceId), areaRooms, (g: BatchGroup) => {
        if (broadcastsOnly && !g.canBroadcast) return;
        groups.flushGroup(g);
        (out ??= []).push(g.room);
      });
    }
    return out;
  }
}

function joinRooms(a: string[] | null, b: string[] | null): string[] | null {
  return a && b ? a.concat(b) : (a ?? b);
}

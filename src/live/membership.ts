/**
 * Which rooms a client is in. A single-event client is in one room per
 * subscribed device ("d:ID") and area ("a:CODE"); a batched or throttled one
 * is in its group's room instead (batch.ts, throttle.ts); a backed-up one is
 * in none until it recovers (slow.ts). Subscribing, unsubscribing, a device
 * leaving a client's scope and a token's changed rights all move clients
 * between rooms here.
 */
import type { Policy } from '../auth/policy.js';
import type { Principal } from '../auth/types.js';
import type { KengEvents } from '../core/events.js';
import type { BatchGroups } from './batch.js';
import type { LiveClient } from './client.js';
import type { LiveFeedSettings } from './options.js';
import { NO_BROADCAST_ROOM, areaRoom, deviceRoom, type AncestorCache } from './rooms.js';
import { checkScope, parseSubscribe, validation, type LiveRegistry, type SubscribeAck, type SubscribeRequest } from './subscriptions.js';
import type { Throttle } from './throttle.js';

export class Membership {
  constructor(
    private readonly settings: LiveFeedSettings,
    private readonly policy: Policy,
    private readonly registry: LiveRegistry,
    /** Every connected client, by socket id (the feed's). */
    private readonly clients: ReadonlyMap<string, LiveClient>,
    private readonly ancestors: AncestorCache,
    private readonly batches: BatchGroups,
    private readonly throttle: Throttle,
  ) {}

  subscribe(c: LiveClient, raw: unknown): SubscribeAck {
    const parsed = parseSubscribe(raw);
    if (!parsed.ok) return { error: parsed.error };
    const checked = checkScope(c.principal, parsed.value, { policy: this.policy, registry: this.registry });
    if (!checked.ok) return { error: checked.error };
    const req = checked.value;
    const added = req.devices.filter((d) => !c.devices.has(d)).length + req.areas.filter((a) => !c.areas.has(a)).length;
    if (c.subscriptionCount + added > this.settings.maxSubscriptions) {
      return { error: validation(`at most ${this.settings.maxSubscriptions} devices and areas per client`).error };
    }
    const rooms: string[] = [];
    for (const d of req.devices) if (!c.devices.has(d)) { c.devices.add(d); rooms.push(deviceRoom(d)); }
    for (const a of req.areas) if (!c.areas.has(a)) { c.areas.add(a); rooms.push(areaRoom(a)); }
    if (c.grouped) this.regroup(c);
    else if (!c.slow && rooms.length) void c.socket.join(rooms);
    return { ok: true, devices: this.deviceCount(c) };
  }

  unsubscribe(c: LiveClient, raw: unknown): SubscribeAck {
    const parsed = parseSubscribe(raw);
    if (!parsed.ok) return { error: parsed.error };
    this.remove(c, parsed.value);
    return { ok: true, devices: this.deviceCount(c) };
  }

  /** The client disconnected: out of its batched or throttled group. */
  release(c: LiveClient): void {
    if (c.throttled) this.throttle.forget(c);
    else this.batches.release(c);
  }

  /** The client's token now carries another role or other areas: follow its right to see broadcasts, drop what left its scope. */
  rescope(c: LiveClient, p: Principal): void {
    c.principal = p;
    const canBroadcast = this.policy.can(p, 'broadcasts.read');
    if (canBroadcast !== c.canBroadcast) {
      c.canBroadcast = canBroadcast;
      void (canBroadcast ? c.socket.leave(NO_BROADCAST_ROOM) : c.socket.join(NO_BROADCAST_ROOM));
      if (c.grouped) this.regroup(c);
    }
    const deps = { policy: this.policy, registry: this.registry };
    const gone: SubscribeRequest = {
      devices: [...c.devices].filter((d) => !checkScope(p, { devices: [d], areas: [] }, deps).ok),
      areas: [...c.areas].filter((a) => !checkScope(p, { devices: [], areas: [a] }, deps).ok),
    };
    this.remove(c, gone);
  }

  /** A deleted device, or one moved out of a client's scope, is no longer watched by id. */
  readonly onDeviceChanged = (e: KengEvents['device.changed']): void => {
    this.ancestors.clear();
    if (e.change === 'created') return;
    const device = this.registry.getDevice(e.deviceId);
    for (const c of this.clients.values()) {
      if (!c.devices.has(e.deviceId)) continue;
      if (!device || !this.policy.can(c.principal, 'telemetry.read', device.area)) this.remove(c, { devices: [e.deviceId], areas: [] });
    }
  };

  private remove(c: LiveClient, req: SubscribeRequest): void {
    if (c.grouped) {
      for (const d of req.devices) c.devices.delete(d);
      for (const a of req.areas) c.areas.delete(a);
      this.regroup(c);
      return;
    }
    for (const d of req.devices) if (c.devices.delete(d)) void c.socket.leave(deviceRoom(d));
    for (const a of req.areas) if (c.areas.delete(a)) void c.socket.leave(areaRoom(a));
  }

  /** The group set a client is delivered through: batched, throttled, or none (device and area rooms). */
  private groupsOf(c: LiveClient): BatchGroups | null {
    return c.batch ? this.batches : c.throttled ? this.throttle.groups : null;
  }

  /** A batched or throttled client's subscriptions (or right to see broadcasts) changed: move it to the matching group's room. */
  private regroup(c: LiveClient): void {
    const [old, next] = this.groupsOf(c)!.assign(c);
    if (old === next || c.slow) return; // a backed-up client joins c.rooms() when it recovers
    if (old) void c.socket.leave(old.room);
    if (next) void c.socket.join(next.room);
  }

  /** Distinct devices the client's subscriptions currently cover. */
  private deviceCount(c: LiveClient): number {
    const ids = new Set(c.devices);
    for (const a of c.areas) for (const d of this.registry.listDevices({ area: a })) ids.add(d.id);
    return ids.size;
  }
}

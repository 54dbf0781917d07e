/**
 * Shared attributes: server-side settings (reporting intervals, thresholds,
 * speaker settings, the firmware a device must run) that devices read the
 * ThingsBoard way (firmware-protocols/device-protocol.md, ThingsBoard
 * compatibility):
 *
 * - Set per device or per area. A device's effective set is, key by key, the
 *   nearest owner's value: the device itself, else the nearest area above it
 *   (village, then commune, then province); layers added by other modules
 *   (firmware assignments: fw_*) come last and win.
 * - Pushed when they change: every connected device whose effective set
 *   changed gets `{"key": value, ..., "deleted": ["key", ...]}` on
 *   `v1/devices/D/attributes` (the broker delivers it on
 *   `v1/devices/me/attributes` to a device that subscribed that way). Only
 *   the keys that changed for that device are sent, as ThingsBoard does;
 *   also when staff move the device to another area.
 * - On (re)connect: ThingsBoard pushes nothing then, and firmware commonly
 *   requests its attributes at start; a device that was offline during a
 *   change would otherwise miss it until it asks. So when a device
 *   subscribes to its `attributes` topic (and when it comes online, which
 *   reaches persistent sessions whose subscription was kept), Keng pushes its
 *   whole effective set but the fw_* keys (nothing when it is empty): see pushAll(). Values are settings, so
 *   receiving one twice is harmless; keys deleted while it was offline are
 *   not listed (a request returns the authoritative set).
 * - Returned under `shared` in attribute responses (sharedAttributes()).
 */
import type { BrokerPort } from '../broker/types.js';
import type { Clock } from '../core/clock.js';
import type { EventBus } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import { Errors } from '../core/errors.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import type { SqliteDatabase } from '../storage/state/index.js';
import { SharedAttributesRepo, type Owner } from './repo.js';
import { MAX_KEYS, RESERVED_PREFIX, type SharedPatch } from './validate.js';

export type { Owner } from './repo.js';

/** Values another module contributes to a device's effective set (firmware assignments). */
export interface SharedLayer {
  /** Its name, shown as the source of its keys. */
  readonly name: string;
  values(deviceId: string): Record<string, unknown> | undefined;
}

/** An effective set and where each key comes from: `device`, `area:<code>` or a layer's name. */
export interface SharedView { shared: Record<string, unknown>; sources: Record<string, string> }

export interface SharedAttributesDeps {
  db: () => SqliteDatabase;
  registry: Pick<DeviceRegistryApi, 'getDevice' | 'getArea' | 'listDevices'>;
  broker: Pick<BrokerPort, 'publish' | 'isConnected'>;
  bus: Pick<EventBus, 'on'>;
  logger: Logger;
  clock: Clock;
}

export const attributesTopic = (deviceId: string): string => `v1/devices/${deviceId}/attributes`;

export class SharedAttributes implements Component {
  readonly name = 'shared-attributes';
  private readonly repo: SharedAttributesRepo;
  private devices = new Map<string, Map<string, unknown>>();
  private areas = new Map<string, Map<string, unknown>>();
  private readonly layers: SharedLayer[] = [];
  private readonly off: Array<() => void> = [];
  /** Each device's area as last seen: a device moved to another area inherits other values. */
  private readonly areaOf = new Map<string, string>();

  constructor(private readonly deps: SharedAttributesDeps) {
    this.repo = new SharedAttributesRepo(deps.db);
  }

  async start(): Promise<void> {
    this.devices = this.repo.load('device');
    this.areas = this.repo.load('area');
    this.off.push(this.deps.bus.on('status', (e) => { if (e.online) this.pushAll(e.deviceId); }));
    for (const d of this.deps.registry.listDevices()) this.areaOf.set(d.id, d.area);
    this.off.push(this.deps.bus.on('device.changed', (e) => {
      if (e.change === 'deleted') { this.devices.delete(e.deviceId); this.areaOf.delete(e.deviceId); return; }
      const d = this.deps.registry.getDevice(e.deviceId);
      if (!d) return;
      const was = this.areaOf.get(d.id);
      this.areaOf.set(d.id, d.area);
      // Moved to another area: it inherits other values (the registry already has the new area).
      if (was !== undefined && was !== d.area && this.deps.broker.isConnected(d.id)) {
        this.pushDiff(d.id, this.effective(d.id, was).shared, this.effective(d.id).shared);
      }
    }));
  }

  async stop(): Promise<void> {
    for (const f of this.off.splice(0)) f();
  }

  addLayer(layer: SharedLayer): void { this.layers.push(layer); }

  /** The areas from the top of the tree down to `code` (unknown codes: none). */
  private chain(code: string): string[] {
    const out: string[] = [];
    for (let a = this.deps.registry.getArea(code); a && out.length < 8; a = a.parent ? this.deps.registry.getArea(a.parent) : undefined) out.unshift(a.code);
    return out;
  }

  private mergeAreas(code: string, view: SharedView): void {
    for (const c of this.chain(code)) {
      for (const [k, v] of this.areas.get(c) ?? []) { view.shared[k] = v; view.sources[k] = `area:${c}`; }
    }
  }

  /** A device's effective set (empty for an unknown device); `area` in place of its own (a move). */
  effective(deviceId: string, area?: string): SharedView {
    const view: SharedView = { shared: {}, sources: {} };
    const d = this.deps.registry.getDevice(deviceId);
    if (!d) return view;
    this.mergeAreas(area ?? d.area, view);
    for (const [k, v] of this.devices.get(deviceId) ?? []) { view.shared[k] = v; view.sources[k] = 'device'; }
    for (const l of this.layers) {
      for (const [k, v] of Object.entries(l.values(deviceId) ?? {})) { view.shared[k] = v; view.sources[k] = l.name; }
    }
    return view;
  }

  /** What devices directly in `code` inherit from it and the areas above (layers and device values aside). */
  areaView(code: string): SharedView {
    const view: SharedView = { shared: {}, sources: {} };
    this.mergeAreas(code, view);
    return view;
  }

  /** ThingsBoard attribute requests (ingest's SharedAttributesSource): the effective values among `keys` (all when undefined). */
  sharedAttributes(deviceId: string, keys: string[] | undefined): Record<string, unknown> {
    const all = this.effective(deviceId).shared;
    if (!keys) return all;
    const out: Record<string, unknown> = {};
    for (const k of keys) if (Object.hasOwn(all, k)) out[k] = all[k];
    return out;
  }

  /** The values the owner itself set. */
  own(owner: Owner): Record<string, unknown> {
    return Object.fromEntries((owner.kind === 'device' ? this.devices : this.areas).get(owner.id) ?? []);
  }

  /**
   * Merges a checked patch (validate.ts: null deletes) into the owner's
   * values, stores it, and pushes what changed to the connected devices it
   * reaches. Returns the owner's values before and after. Throws
   * UNPROCESSABLE when the owner would hold more than MAX_KEYS keys.
   */
  update(owner: Owner, patch: SharedPatch): { before: Record<string, unknown>; after: Record<string, unknown> } {
    const before = this.own(owner);
    const next = new Map(Object.entries(before));
    for (const [k, v] of Object.entries(patch)) { if (v === null) next.delete(k); else next.set(k, v); }
    if (next.size > MAX_KEYS) throw Errors.UNPROCESSABLE(`at most ${MAX_KEYS} shared attributes per ${owner.kind}`);
    const reached = owner.kind === 'device' ? [owner.id] : this.deps.registry.listDevices({ area: owner.id }).map((d) => d.id);
    this.changing(reached, () => {
      this.repo.apply(owner, patch, this.deps.clock.now());
      const map = owner.kind === 'device' ? this.devices : this.areas;
      if (next.size) map.set(owner.id, next); else map.delete(owner.id);
    });
    return { before, after: this.own(owner) };
  }

  /**
   * Runs `change` and pushes, to each connected device among `deviceIds`, the
   * keys whose effective value it changed. Layers call it around their own
   * changes (a firmware assignment).
   */
  changing(deviceIds: string[], change: () => void): void {
    const online = deviceIds.filter((id) => this.deps.broker.isConnected(id));
    const before = new Map(online.map((id) => [id, this.effective(id).shared]));
    change();
    for (const id of online) this.pushDiff(id, before.get(id)!, this.effective(id).shared);
  }

  /**
   * ThingsBoard's update form: the keys whose value differs, `deleted` for
   * those gone; nothing when equal. The fw_* keys go together: ThingsBoard
   * saves all of them on every assignment, and the Arduino SDK's OTA treats
   * an update without all five as "no firmware" (a new version of the same
   * title and size changes only two of them).
   */
  private pushDiff(deviceId: string, was: Record<string, unknown>, now: Record<string, unknown>): void {
    const update: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(now)) if (!Object.hasOwn(was, k) || JSON.stringify(was[k]) !== JSON.stringify(v)) update[k] = v;
    if (Object.keys(update).some((k) => k.startsWith(RESERVED_PREFIX))) {
      for (const [k, v] of Object.entries(now)) if (k.startsWith(RESERVED_PREFIX)) update[k] = v;
    }
    const deleted = Object.keys(was).filter((k) => !Object.hasOwn(now, k));
    if (deleted.length) update.deleted = deleted;
    if (Object.keys(update).length) this.push(deviceId, update);
  }

  /** The broker reports a device's subscriptions: its `attributes` topic gets the whole effective set. */
  subscribed(deviceId: string, topics: readonly string[]): void {
    if (topics.includes(attributesTopic(deviceId))) this.pushAll(deviceId);
  }

  /**
   * The whole set but the fw_* keys: ThingsBoard pushes nothing at connect,
   * and its SDKs start an update from any message carrying a new fw_version
   * (the Python SDK even before get_firmware_update()); they ask for the fw_*
   * keys themselves at start (Start_Firmware_Update, get_firmware_update), so
   * pushing them here would start every download twice.
   */
  private pushAll(deviceId: string): void {
    const all = this.effective(deviceId).shared;
    for (const k of Object.keys(all)) if (k.startsWith(RESERVED_PREFIX)) delete all[k];
    if (Object.keys(all).length) this.push(deviceId, all);
  }

  private push(deviceId: string, body: Record<string, unknown>): void {
    const topic = attributesTopic(deviceId);
    const onError = (err: unknown): void => { this.deps.logger.warn({ err, deviceId }, 'shared attributes push failed'); };
    try {
      this.deps.broker.publish(topic, JSON.stringify(body), { qos: 1 }).catch(onError);
    } catch (err) {
      onError(err);
    }
  }
}

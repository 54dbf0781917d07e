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
 *
 * Storage: the state store through the `Db` port (repo.ts). Devices read
 * their values on hot paths (MQTT subscribe, attribute requests), so every
 * value is kept in memory: loaded at start, updated by this node's changes
 * from what the database returns, and, in cluster mode (PostgreSQL), reloaded
 * every few seconds so changes made on another node reach this node's
 * devices (pushed like a local change) within one reload interval.
 * Changes and reloads run one at a time, so the memory always matches the
 * last state read or written.
 */
import type { BrokerPort } from '../broker/types.js';
import type { Clock } from '../core/clock.js';
import type { EventBus } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import type { Transaction } from 'kysely';
import type { Db } from '../storage/sql/index.js';
import { SharedAttributesRepo, type OwnChange, type Owner } from './repo.js';
import { MAX_KEYS, RESERVED_PREFIX, type SharedPatch } from './validate.js';

export type { Owner, OwnChange } from './repo.js';

/** Values another module contributes to a device's effective set (firmware assignments). */
export interface SharedLayer {
  /** Its name, shown as the source of its keys. */
  readonly name: string;
  values(deviceId: string): Record<string, unknown> | undefined;
}

/** An effective set and where each key comes from: `device`, `area:<code>` or a layer's name. */
export interface SharedView { shared: Record<string, unknown>; sources: Record<string, string> }

export interface SharedAttributesDeps {
  /** The state store (embedded SQLite, or PostgreSQL in cluster mode). */
  db: Db<unknown>;
  registry: Pick<DeviceRegistryApi, 'getDevice' | 'getArea' | 'listDevices'>;
  broker: Pick<BrokerPort, 'publish' | 'isConnected'>;
  bus: Pick<EventBus, 'on'>;
  logger: Logger;
  clock: Clock;
  /**
   * How often the values are re-read from the database for changes made by
   * other nodes; 0: never. Default: 5 s on PostgreSQL (cluster mode), never
   * on the embedded store (only this process changes them there).
   */
  reloadIntervalMs?: number;
}

/** Default reload interval in cluster mode. */
export const CLUSTER_RELOAD_INTERVAL_MS = 5_000;

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
  /** The tail of the changes and reloads, which run one at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  private reloadTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: SharedAttributesDeps) {
    this.repo = new SharedAttributesRepo(deps.db);
  }

  async start(): Promise<void> {
    this.devices = await this.repo.load('device');
    this.areas = await this.repo.load('area');
    this.off.push(this.deps.bus.on('status', (e) => { if (e.online) this.pushAll(e.deviceId); }));
    for (const d of this.deps.registry.listDevices()) this.areaOf.set(d.id, d.area);
    this.off.push(this.deps.bus.on('device.changed', (e) => {
      if (e.change === 'deleted') { this.deviceDeleted(e.deviceId); return; }
      const d = this.deps.registry.getDevice(e.deviceId);
      if (!d) return;
      const was = this.areaOf.get(d.id);
      this.areaOf.set(d.id, d.area);
      // Moved to another area: it inherits other values (the registry already has the new area).
      if (was !== undefined && was !== d.area && this.deps.broker.isConnected(d.id)) {
        this.pushDiff(d.id, this.effective(d.id, was).shared, this.effective(d.id).shared);
      }
    }));
    const every = this.deps.reloadIntervalMs ?? (this.deps.db.dialect === 'postgres' ? CLUSTER_RELOAD_INTERVAL_MS : 0);
    if (every > 0) {
      this.reloadTimer = setInterval(() => {
        this.reload().catch((err: unknown) => this.deps.logger.warn({ err }, 'could not reload the shared attributes; keeping the current values'));
      }, every);
      this.reloadTimer.unref();
    }
  }

  async stop(): Promise<void> {
    for (const f of this.off.splice(0)) f();
    if (this.reloadTimer) clearInterval(this.reloadTimer);
    this.reloadTimer = undefined;
    await this.queue.catch(() => undefined);
  }

  /** Runs `fn` after every change or reload queued before it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Re-reads every value from the database (changes made on other nodes) and
   * pushes what changed to the connected devices it reaches, as a local
   * change would.
   */
  reload(): Promise<void> {
    return this.serial(async () => {
      const devices = await this.repo.load('device');
      const areas = await this.repo.load('area');
      const reached = new Set<string>();
      for (const id of changedOwners(this.devices, devices)) reached.add(id);
      for (const code of changedOwners(this.areas, areas)) {
        for (const d of this.deps.registry.listDevices({ area: code })) reached.add(d.id);
      }
      this.changing([...reached], () => { this.devices = devices; this.areas = areas; });
    });
  }

  /** A deleted device: its values go (on PostgreSQL no foreign key removes them). */
  private deviceDeleted(deviceId: string): void {
    this.devices.delete(deviceId);
    this.areaOf.delete(deviceId);
    this.serial(async () => {
      await this.repo.remove({ kind: 'device', id: deviceId });
      this.devices.delete(deviceId); // a reload may have read them back meanwhile
    }).catch((err: unknown) => this.deps.logger.warn({ err, deviceId }, 'could not remove a deleted device\'s shared attributes'));
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
   * reaches. Returns the owner's values before and after, as stored. Throws
   * UNPROCESSABLE, nothing stored, when the owner would hold more than
   * MAX_KEYS keys. `within` runs inside the write transaction (the caller's
   * audit entry: the change and its entry are stored together or not at all).
   */
  update(owner: Owner, patch: SharedPatch, within?: (change: OwnChange, trx: Transaction<unknown>) => Promise<unknown>): Promise<OwnChange> {
    return this.serial(async () => {
      const change = await this.repo.apply(owner, patch, this.deps.clock.now(), MAX_KEYS, within);
      const reached = owner.kind === 'device' ? [owner.id] : this.deps.registry.listDevices({ area: owner.id }).map((d) => d.id);
      this.changing(reached, () => {
        const map = owner.kind === 'device' ? this.devices : this.areas;
        const next = new Map(Object.entries(change.after));
        if (next.size) map.set(owner.id, next); else map.delete(owner.id);
      });
      return change;
    });
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

/** Owners whose values differ between two loads. */
function changedOwners(was: Map<string, Map<string, unknown>>, now: Map<string, Map<string, unknown>>): string[] {
  const text = (m: Map<string, unknown> | undefined): string => JSON.stringify([...(m ?? [])].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return [...new Set([...was.keys(), ...now.keys()])].filter((id) => text(was.get(id)) !== text(now.get(id)));
}

/**
 * Gateways: devices of kind `gateway` that speak ThingsBoard's gateway MQTT
 * API (`v1/gateway/...`) for the devices behind them, as ThingsBoard IoT
 * Gateway does when it bridges Modbus sensors to MQTT
 * (firmware-protocols/gateway.md).
 *
 * This part keeps, for the broker's ingest handlers and for server → device
 * traffic:
 *  - which Keng device each sub-device name is (gateway_sub_devices; names
 *    are unique across gateways, as ThingsBoard device names are per
 *    tenant). A gateway only ever reaches its own sub-devices: a name owned
 *    by another gateway is refused, and a new sub-device gets an id derived
 *    from its name (names.ts), never an existing device's;
 *  - whether a gateway may create sub-devices on first sight (an operator's
 *    setting, default no). Refused names are counted
 *    (keng_gateway_sub_devices_refused_total{reason}) and listed per gateway
 *    with their counts since the server started;
 *  - which sub-devices are connected: `v1/gateway/connect` or any data for
 *    one marks it online, `v1/gateway/disconnect` or its gateway going
 *    offline marks it offline;
 *  - the integer RPC ids a gateway sees (ThingsBoard gateways answer
 *    `{"device", "id": <int>, "data"}`) and the Keng request ids they stand for.
 *
 * The sub-devices and settings are stored through the state store's `Db`
 * port and read on the MQTT ingest path, so they are kept in memory: loaded at
 * start, updated by this node's writes, and in cluster mode (PostgreSQL)
 * reloaded every few seconds for what other nodes wrote. Which sub-devices
 * are connected, refused names and RPC ids are this node's own.
 */
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import type { Component } from '../core/lifecycle.js';
import type { EventBus } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import type { DeviceIdentity } from '../devices/types.js';
import type { Db } from '../storage/sql/index.js';
import { gatewayMetrics, type GatewayMetrics } from './metrics.js';
import { subDeviceId, validSubDeviceName } from './names.js';
import { GatewayRepo, type SubDeviceRow } from './repo.js';

export type SubDeviceResolution = { ok: true; deviceId: string } | { ok: false; reason: SubDeviceRefusal };
export type SubDeviceRefusal = 'not_allowed' | 'other_gateway' | 'id_taken' | 'disabled' | 'create_failed';

/** A refused sub-device name of one gateway, as the operator sees it. */
export interface RefusedName { name: string; reason: SubDeviceRefusal; count: number; firstAt: number; lastAt: number }

export interface GatewaysDeps {
  /** The state store (embedded SQLite, or PostgreSQL in cluster mode). */
  db: Db<unknown>;
  registry: Pick<DeviceRegistryApi, 'getDevice' | 'createDevice' | 'setOnline' | 'touch'>;
  bus: EventBus;
  logger: Logger;
  metrics?: Pick<Metrics, 'registry'>;
  clock: Clock;
  /**
   * How often the sub-devices and settings are re-read for changes made by
   * other nodes; 0: never. Default: 5 s on PostgreSQL (cluster mode), never
   * on the embedded store (only this process changes them there).
   */
  reloadIntervalMs?: number;
}

/** Default reload interval in cluster mode. */
export const CLUSTER_RELOAD_INTERVAL_MS = 5_000;

/** Refused names remembered per gateway (the least recently seen go first). */
const MAX_REFUSED_NAMES = 100;
/** Outstanding RPC ids remembered per gateway (the oldest go first). */
const MAX_RPC_IDS = 10_000;

interface RpcIds { next: number; byId: Map<number, { deviceId: string; requestId: string }>; byRequest: Map<string, number> }

export class Gateways implements Component {
  readonly name = 'gateways';
  private readonly repo: GatewayRepo;
  private readonly m: GatewayMetrics;
  private byName = new Map<string, SubDeviceRow>();
  private byDevice = new Map<string, SubDeviceRow>();
  private creators = new Set<string>();
  /** gateway id → its connected sub-devices. */
  private readonly online = new Map<string, Set<string>>();
  private readonly refusals = new Map<string, Map<string, RefusedName>>();
  /** Creations in progress by name: a second message for the same new name waits for the first. */
  private readonly creating = new Map<string, Promise<SubDeviceResolution>>();
  private readonly rpcIds = new Map<string, RpcIds>();
  private offs: Array<() => void> = [];
  /** Counts this node's changes of the cached rows: a reload that overlapped one is dropped (the next one catches up). */
  private version = 0;
  private reloadTimer: NodeJS.Timeout | undefined;
  private reloading = false;

  constructor(private readonly deps: GatewaysDeps) {
    this.repo = new GatewayRepo(deps.db);
    this.m = gatewayMetrics(deps.metrics?.registry);
  }

  async start(): Promise<void> {
    await this.load();
    const bus = this.deps.bus;
    this.offs = [
      bus.on('status', (e) => { if (!e.online) this.gatewayOffline(e.deviceId, e.at); }),
      bus.on('device.changed', (e) => { if (e.change === 'deleted') this.deleted(e.deviceId); }),
    ];
    const every = this.deps.reloadIntervalMs ?? (this.deps.db.dialect === 'postgres' ? CLUSTER_RELOAD_INTERVAL_MS : 0);
    if (every > 0) {
      this.reloadTimer = setInterval(() => { void this.reload(); }, every);
      this.reloadTimer.unref();
    }
  }

  async stop(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    if (this.reloadTimer) clearInterval(this.reloadTimer);
    this.reloadTimer = undefined;
  }

  /**
   * Re-reads the sub-devices and settings (changes made on other nodes).
   * Returns false when it kept the current ones: the read failed, another
   * reload was under way, or this node changed them meanwhile.
   */
  async reload(): Promise<boolean> {
    if (this.reloading) return false;
    this.reloading = true;
    try {
      return await this.load();
    } catch (err) {
      this.deps.logger.warn({ err }, 'could not reload the gateway sub-devices; keeping the current ones');
      return false;
    } finally {
      this.reloading = false;
    }
  }

  private async load(): Promise<boolean> {
    const v = this.version;
    const subs = await this.repo.subDevices();
    const creators = await this.repo.creators();
    if (v !== this.version) return false;
    this.byName = new Map();
    this.byDevice = new Map();
    for (const r of subs) this.cache(r);
    this.creators = creators;
    return true;
  }

  // ------------------------------------------------------------ operator

  /** May this gateway create sub-devices on first sight? */
  mayCreate(gatewayId: string): boolean { return this.creators.has(gatewayId); }

  /** Sets the gateway's creation setting (audited by the caller). On the embedded store throws when the gateway does not exist. */
  async setMayCreate(gatewayId: string, create: boolean): Promise<void> {
    await this.repo.putSetting(gatewayId, create, this.deps.clock.now());
    this.version++;
    if (create) this.creators.add(gatewayId);
    else this.creators.delete(gatewayId);
  }

  /** The names this gateway published for and Keng refused, most recent first. */
  refused(gatewayId: string): RefusedName[] {
    return [...(this.refusals.get(gatewayId)?.values() ?? [])].sort((a, b) => b.lastAt - a.lastAt);
  }

  /** The gateway of a sub-device and the name it goes by there. */
  gatewayOf(deviceId: string): { id: string; name: string } | undefined {
    const r = this.byDevice.get(deviceId);
    return r ? { id: r.gateway_id, name: r.name } : undefined;
  }

  /**
   * An operator registering a device behind a gateway under the name the
   * gateway calls it (instead of letting the gateway create it): throws 422
   * for an unusable name, 409 for a name that already has a device.
   */
  checkLink(name: string): void {
    if (!validSubDeviceName(name)) throw Errors.UNPROCESSABLE('gateway.name must be 1 to 200 characters without control characters');
    if (this.byName.has(name)) throw Errors.CONFLICT(`the name "${name}" already has a device (${this.byName.get(name)!.device_id})`);
  }

  /** Links a just-registered device to its gateway under `name` (checkLink first). Throws on a name taken meanwhile. */
  async link(deviceId: string, gatewayId: string, name: string): Promise<void> {
    this.checkLink(name);
    const row: SubDeviceRow = { device_id: deviceId, gateway_id: gatewayId, name, created_at: this.deps.clock.now() };
    await this.repo.insertSub(row);
    this.cache(row);
    this.refusals.get(gatewayId)?.delete(name);
  }

  // ------------------------------------------------------------ ingest (GatewayIngest)

  /**
   * The Keng device of sub-device `name` of `gateway`, created on first sight
   * when the gateway may (in the gateway's area, kind sensor, the ThingsBoard
   * device type as its model). Refusals are counted and listed here.
   */
  resolve(gateway: DeviceIdentity, name: string, type: string | undefined, at: number): SubDeviceResolution | Promise<SubDeviceResolution> {
    const known = this.known(gateway.deviceId, name, at);
    if (known !== null) return known;
    const gw = gateway.deviceId;
    if (!this.creators.has(gw)) return this.refuse(gw, name, 'not_allowed', at);
    let p = this.creating.get(name);
    if (p === undefined) {
      p = this.create(gateway, name, type, at).finally(() => this.creating.delete(name));
      this.creating.set(name, p);
    }
    // Two gateways may race for one new name: whoever created it owns it.
    return p.then((r) => (r.ok ? this.known(gw, name, at) ?? this.refuse(gw, name, 'create_failed', at) : r));
  }

  /** A sub-device of this gateway is connected (its connect message, or data from it). */
  connected(gatewayId: string, deviceId: string, at: number): void {
    let set = this.online.get(gatewayId);
    if (set === undefined) this.online.set(gatewayId, set = new Set());
    this.deps.registry.touch(deviceId, at);
    if (set.has(deviceId)) return;
    set.add(deviceId);
    this.countConnected(1);
    this.deps.registry.setOnline(deviceId, true, at);
  }

  /** `v1/gateway/disconnect` for `name`: offline, if it is this gateway's connected sub-device. */
  disconnected(gatewayId: string, name: string, at: number): void {
    const r = this.byName.get(name);
    const set = this.online.get(gatewayId);
    if (r === undefined || r.gateway_id !== gatewayId || !set?.delete(r.device_id)) return;
    this.countConnected(-1);
    this.deps.registry.setOnline(r.device_id, false, at);
  }

  /** The Keng request a gateway's RPC answer `{"device": name, "id": id}` is for (only this gateway's own requests). */
  rpcAnswer(gatewayId: string, name: string, id: number): { deviceId: string; requestId: string } | undefined {
    const hit = this.rpcIds.get(gatewayId)?.byId.get(id);
    if (hit === undefined || this.byDevice.get(hit.deviceId)?.name !== name) return undefined;
    return hit;
  }

  // ------------------------------------------------------------ server → device (GatewayAwareBroker)

  /** Connected through its gateway (the gateway's own connection is the broker's to tell). */
  subConnected(deviceId: string): string | undefined {
    const r = this.byDevice.get(deviceId);
    return r !== undefined && this.online.get(r.gateway_id)?.has(deviceId) === true ? r.gateway_id : undefined;
  }

  /**
   * A server → device publish for a sub-device, as its gateway gets it:
   * `v1/devices/D/rpc/request/R` `{"method","params",...}` → the gateway's
   * `v1/gateway/rpc` `{"device": name, "data": {"id": n, "method", "params"}}`
   * (ThingsBoard JsonConverter.toGatewayJson). null: not a sub-device's RPC.
   */
  toGateway(topic: string, payload: string | Buffer): { topic: string; payload: string } | null {
    if (!topic.startsWith('v1/devices/')) return null;
    const slash = topic.indexOf('/', 11);
    if (slash < 0) return null;
    const r = this.byDevice.get(topic.slice(11, slash));
    if (r === undefined || !topic.startsWith('/rpc/request/', slash)) return null;
    const requestId = topic.slice(slash + 13);
    let body: { method?: unknown; params?: unknown };
    try { body = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8')) as typeof body; } catch { return null; }
    const id = this.rpcId(r.gateway_id, r.device_id, requestId);
    return {
      topic: `v1/devices/${r.gateway_id}/gateway/rpc`,
      payload: JSON.stringify({ device: r.name, data: { id, method: body.method, params: body.params ?? {} } }),
    };
  }

  // ------------------------------------------------------------ internals

  /** The resolution of a name already linked to a device, or null when it has none. */
  private known(gatewayId: string, name: string, at: number): SubDeviceResolution | null {
    const r = this.byName.get(name);
    if (r === undefined) return null;
    if (r.gateway_id !== gatewayId) return this.refuse(gatewayId, name, 'other_gateway', at);
    const d = this.deps.registry.getDevice(r.device_id);
    if (d === undefined) { this.uncache(r); return null; }
    if (!d.enabled) return this.refuse(gatewayId, name, 'disabled', at);
    return { ok: true, deviceId: d.id };
  }

  private async create(gateway: DeviceIdentity, name: string, type: string | undefined, at: number): Promise<SubDeviceResolution> {
    const gw = gateway.deviceId;
    const id = subDeviceId(name);
    const { registry, logger, clock } = this.deps;
    if (registry.getDevice(id)) return this.refuse(gw, name, 'id_taken', at);
    const area = registry.getDevice(gw)?.area ?? gateway.area;
    const model = type !== undefined && type !== 'default' && type.trim().length > 0 ? type.slice(0, 200) : null;
    try {
      await registry.createDevice({ id, kind: 'sensor', name, area, model });
    } catch (err) {
      if ((err as { code?: string }).code === 'KENG_ERR_DEVICE_EXISTS') return this.refuse(gw, name, 'id_taken', at);
      logger.error({ err, gatewayId: gw, name, deviceId: id }, 'could not create a sub-device');
      return this.refuse(gw, name, 'create_failed', at);
    }
    const row: SubDeviceRow = { device_id: id, gateway_id: gw, name, created_at: clock.now() };
    try {
      await this.repo.insertSub(row);
    } catch (err) {
      logger.error({ err, gatewayId: gw, name, deviceId: id }, 'could not link a new sub-device to its gateway');
      return this.refuse(gw, name, 'create_failed', at);
    }
    this.cache(row);
    this.refusals.get(gw)?.delete(name);
    this.m.created.inc();
    logger.info({ gatewayId: gw, name, deviceId: id, area }, 'sub-device created on first sight');
    return { ok: true, deviceId: id };
  }

  private refuse(gatewayId: string, name: string, reason: SubDeviceRefusal, at: number): SubDeviceResolution {
    this.m.refused.labels(reason).inc();
    let list = this.refusals.get(gatewayId);
    if (list === undefined) this.refusals.set(gatewayId, list = new Map());
    const seen = list.get(name);
    if (seen !== undefined) {
      list.delete(name); // re-inserted last: the map's order is least recently seen first
      seen.count++;
      seen.lastAt = at;
      seen.reason = reason;
      list.set(name, seen);
      this.deps.logger.debug({ gatewayId, name, reason }, 'sub-device refused');
    } else {
      if (list.size >= MAX_REFUSED_NAMES) list.delete(list.keys().next().value!);
      list.set(name, { name, reason, count: 1, firstAt: at, lastAt: at });
      this.deps.logger.warn({ gatewayId, name, reason }, 'sub-device refused (repeats of this name at debug)');
    }
    return { ok: false, reason };
  }

  private rpcId(gatewayId: string, deviceId: string, requestId: string): number {
    let ids = this.rpcIds.get(gatewayId);
    if (ids === undefined) this.rpcIds.set(gatewayId, ids = { next: 1, byId: new Map(), byRequest: new Map() });
    const key = deviceId + '\u0000' + requestId;
    const had = ids.byRequest.get(key);
    if (had !== undefined) return had; // a resend keeps its id: the gateway may de-duplicate
    const id = ids.next;
    ids.next = id >= 2_147_483_647 ? 1 : id + 1; // a Java int on ThingsBoard's side
    if (ids.byId.size >= MAX_RPC_IDS) {
      const [oldId, old] = ids.byId.entries().next().value!;
      ids.byId.delete(oldId);
      ids.byRequest.delete(old.deviceId + '\u0000' + old.requestId);
    }
    ids.byId.set(id, { deviceId, requestId });
    ids.byRequest.set(key, id);
    return id;
  }

  private gatewayOffline(deviceId: string, at: number): void {
    const set = this.online.get(deviceId);
    if (set === undefined) return;
    this.online.delete(deviceId);
    this.countConnected(-set.size);
    for (const sub of set) this.deps.registry.setOnline(sub, false, at);
  }

  private deleted(deviceId: string): void {
    const r = this.byDevice.get(deviceId);
    if (r !== undefined) {
      this.uncache(r);
      if (this.online.get(r.gateway_id)?.delete(deviceId)) this.countConnected(-1);
    }
    // A deleted gateway: its sub-devices stay devices, without a gateway (the rows went with it).
    for (const s of [...this.byDevice.values()]) if (s.gateway_id === deviceId) this.uncache(s);
    this.gatewayOffline(deviceId, this.deps.clock.now());
    this.creators.delete(deviceId);
    this.refusals.delete(deviceId);
    this.rpcIds.delete(deviceId);
    this.version++;
    this.repo.removeDevice(deviceId).then(
      () => { this.version++; }, // a reload that read the rows before they went must not bring them back
      (err: unknown) => this.deps.logger.warn({ err, deviceId }, 'could not remove a deleted device\'s gateway rows'),
    );
  }

  private connectedCount = 0;
  private countConnected(delta: number): void {
    this.connectedCount += delta;
    this.m.connected.set(this.connectedCount);
  }

  private cache(r: SubDeviceRow): void {
    this.version++;
    this.byName.set(r.name, r);
    this.byDevice.set(r.device_id, r);
  }

  private uncache(r: SubDeviceRow): void {
    this.version++;
    this.byName.delete(r.name);
    this.byDevice.delete(r.device_id);
  }
}

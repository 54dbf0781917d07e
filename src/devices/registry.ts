/**
 * The device registry: areas, devices and their credentials (SQLite state
 * store), presence, attributes and latest values (in memory, flushed to
 * device_state every 2 s and at stop).
 *
 * Other processes (the `keng` CLI) may change areas and devices while the
 * server runs. SQLite's `PRAGMA data_version` tells when another connection
 * committed; the registry then reloads its caches: at once on a cache miss
 * (getDevice, getArea), before every authentication and list, and every 2 s.
 */
import type { Clock, Component, EventBus, Logger, Metrics, Scalar } from '../core/index.js';
import { Errors, withDetails } from '../core/errors.js';
import type { StateDb, SqliteDatabase } from '../storage/state/index.js';
import { MAX_NAME_LENGTH } from './area-tree.js';
import { Areas } from './areas.js';
import { DeviceStatus } from './status.js';
import {
  CredentialVerifier, generateAccessToken, generateSecret, hashSecret, tokenLookup, MAX_CREDENTIAL_LENGTH,
} from './secrets.js';
import { DEVICE_ID_RE, type Area, type Device, type DeviceAuthenticator, type DeviceKind, type DeviceView, type LatestValue } from './types.js';
import type { DeviceCredentials, DeviceFilter, DeviceRegistryApi, NewArea, NewDevice } from './registry-types.js';

export interface DeviceRegistryOptions {
  db: StateDb;
  bus: EventBus;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  /** Flush period of presence and latest values (ms). */
  flushIntervalMs?: number;
  /**
   * true (the server): presence starts offline and is written to disk.
   * false (CLI tools): presence is read as last flushed by the server and never written.
   */
  ownsPresence?: boolean;
  verifier?: CredentialVerifier;
}

type AuthResult = Awaited<ReturnType<DeviceAuthenticator['authenticate']>>;

const KINDS: readonly DeviceKind[] = ['sensor', 'speaker', 'gateway'];

interface DeviceRow {
  id: string; kind: DeviceKind; name: string; area: string; lat: number | null; lon: number | null;
  model: string | null; enabled: number; secret_hash: string; token_lookup: string; token_hash: string; created_at: number;
}
interface Cached { device: Device; row: DeviceRow }

function toDevice(r: DeviceRow): Device {
  return Object.freeze({
    id: r.id, kind: r.kind, name: r.name, area: r.area,
    location: r.lat !== null && r.lon !== null ? Object.freeze({ lat: r.lat, lon: r.lon }) : null,
    model: r.model, enabled: r.enabled === 1, createdAt: r.created_at,
  });
}

function sameRow(a: DeviceRow, b: DeviceRow): boolean {
  return (Object.keys(a) as (keyof DeviceRow)[]).every((k) => a[k] === b[k]);
}

function invalid(field: string, message: string): Error {
  return withDetails(Errors.VALIDATION(message), { field });
}

function inRange(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max;
}

/** Shape checks of a new device (400). */
export function validateNewDevice(d: NewDevice): void {
  if (typeof d !== 'object' || d === null) throw invalid('', 'device must be an object');
  if (typeof d.id !== 'string' || !DEVICE_ID_RE.test(d.id)) throw invalid('id', `id must match ${DEVICE_ID_RE.source}`);
  if (!KINDS.includes(d.kind)) throw invalid('kind', `kind must be one of ${KINDS.join(', ')}`);
  if (typeof d.name !== 'string' || d.name.trim().length === 0 || d.name.length > MAX_NAME_LENGTH) {
    throw invalid('name', `name must be 1 to ${MAX_NAME_LENGTH} characters`);
  }
  if (typeof d.area !== 'string' || d.area.length === 0) throw invalid('area', 'area is required');
  if (d.location !== undefined && d.location !== null) {
    if (typeof d.location !== 'object') throw invalid('location', 'location must be {lat, lon}');
    if (!inRange(d.location.lat, -90, 90)) throw invalid('location.lat', 'location.lat must be a number in [-90, 90]');
    if (!inRange(d.location.lon, -180, 180)) throw invalid('location.lon', 'location.lon must be a number in [-180, 180]');
  }
  if (d.model !== undefined && d.model !== null && (typeof d.model !== 'string' || d.model.length > MAX_NAME_LENGTH)) {
    throw invalid('model', `model must be a string of at most ${MAX_NAME_LENGTH} characters`);
  }
}

export class DeviceRegistry implements DeviceRegistryApi, DeviceAuthenticator, Component {
  readonly name = 'devices';
  private readonly opts: DeviceRegistryOptions;
  private readonly verifier: CredentialVerifier;
  private readonly areas: Areas;
  private devices = new Map<string, Cached>();
  /** token_lookup → device id. */
  private tokens = new Map<string, string>();
  private readonly status: DeviceStatus;
  private sql: ReturnType<typeof prepare> | undefined;
  private dataVersion = -1;
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: DeviceRegistryOptions) {
    this.opts = opts;
    this.verifier = opts.verifier ?? new CredentialVerifier();
    this.areas = new Areas({ clock: opts.clock, sync: () => this.sync() });
    const { bus, metrics, clock, logger } = opts;
    this.status = new DeviceStatus({
      bus, metrics, clock, logger, ownsPresence: this.ownsPresence, areaOf: (id) => this.devices.get(id)?.device.area,
    });
  }

  private get q(): ReturnType<typeof prepare> {
    if (!this.sql) throw Errors.NOT_READY('device registry is not started');
    return this.sql;
  }

  private get ownsPresence(): boolean { return this.opts.ownsPresence !== false; }

  async start(): Promise<void> {
    const db = this.opts.db.db;
    this.sql = prepare(db);
    this.dataVersion = this.q.dataVersion.get() as number;
    this.devices = new Map();
    this.tokens = new Map();
    this.status.open(db);
    this.areas.open(db);
    this.reloadDevices(false);
    this.status.restore();
    if (this.ownsPresence) {
      this.timer = setInterval(() => this.tick(), this.opts.flushIntervalMs ?? 2000);
      this.timer.unref();
    }
    this.opts.logger.info({ areas: this.areas.size, devices: this.devices.size }, 'device registry loaded');
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.status.close();
    this.areas.close();
    this.sql = undefined;
  }

  // ---- areas -------------------------------------------------------------

  createArea(input: NewArea): Area { return this.areas.createArea(input); }
  listAreas(): Area[] { return this.areas.listAreas(); }
  getArea(code: string): Area | undefined { return this.areas.getArea(code); }
  subtree(code: string): string[] { return this.areas.subtree(code); }

  // ---- devices -----------------------------------------------------------

  /**
   * Registers a device and makes its credentials. The two scrypt hashes run in
   * libuv's thread pool (a few ms of CPU each): registering thousands of devices
   * does not stall MQTT ingest or the live feed. A concurrent registration of
   * the same id loses at the insert (DEVICE_EXISTS).
   */
  async createDevice(d: NewDevice): Promise<{ device: Device; credentials: DeviceCredentials }> {
    validateNewDevice(d);
    this.sync();
    if (!this.getArea(d.area)) throw Errors.NOT_FOUND(`Area "${d.area}"`);
    if (this.devices.has(d.id)) throw Errors.DEVICE_EXISTS(d.id);
    // Spec device-protocol.md "Connection": secret and token shown once, stored hashed.
    const credentials: DeviceCredentials = { secret: generateSecret(), accessToken: generateAccessToken() };
    const [secretHash, tokenHash] = await Promise.all([hashSecret(credentials.secret), hashSecret(credentials.accessToken)]);
    const row: DeviceRow = {
      id: d.id, kind: d.kind, name: d.name, area: d.area,
      lat: d.location?.lat ?? null, lon: d.location?.lon ?? null, model: d.model ?? null, enabled: 1,
      secret_hash: secretHash,
      token_lookup: tokenLookup(credentials.accessToken),
      token_hash: tokenHash,
      created_at: this.opts.clock.now(),
    };
    try {
      this.q.db.transaction(() => {
        this.q.insertDevice.run(row);
        this.q.insertState.run(row.id);
      })();
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw Errors.DEVICE_EXISTS(d.id);
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw Errors.NOT_FOUND(`Area "${d.area}"`);
      throw err;
    }
    const device = this.cache(row);
    this.opts.bus.emit('device.changed', { deviceId: d.id, change: 'created' });
    return { device, credentials };
  }

  /** O(1) on a hit; a miss checks whether another process added the device. */
  getDevice(id: string): Device | undefined {
    const c = this.devices.get(id);
    if (c) return c.device;
    this.sync();
    return this.devices.get(id)?.device;
  }

  listDevices(filter: DeviceFilter = {}): Device[] {
    this.sync();
    const areaSet = filter.area !== undefined ? this.areas.subtreeSet(filter.area) : undefined;
    const out: Device[] = [];
    for (const { device } of this.devices.values()) {
      if (areaSet && !areaSet.has(device.area)) continue;
      if (filter.kind !== undefined && device.kind !== filter.kind) continue;
      if (filter.online !== undefined && this.isOnline(device.id) !== filter.online) continue;
      out.push(device);
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  deleteDevice(id: string): boolean {
    const removed = this.q.deleteDevice.run(id).changes > 0; // device_state goes with it (ON DELETE CASCADE)
    if (this.devices.has(id)) this.uncache(id); // emits 'device.changed'
    else if (removed) this.opts.bus.emit('device.changed', { deviceId: id, change: 'deleted' });
    return removed;
  }

  /** Enables or disables a device (a disabled device is refused at CONNECT). Not in DeviceRegistryApi. */
  setEnabled(id: string, enabled: boolean): Device | undefined {
    if (this.q.setEnabled.run(enabled ? 1 : 0, id).changes === 0) return undefined;
    const row = this.q.getDevice.get(id) as DeviceRow;
    this.forgetCredentials(id);
    const device = this.cache(row);
    this.opts.bus.emit('device.changed', { deviceId: id, change: 'updated' });
    return device;
  }

  view(id: string): DeviceView | undefined {
    const device = this.getDevice(id);
    return device ? this.status.view(device) : undefined;
  }

  views(filter: DeviceFilter = {}): DeviceView[] {
    return this.listDevices(filter).map((d) => this.status.view(d));
  }

  // ---- presence and data (hot path: memory only) -------------------------

  setOnline(deviceId: string, online: boolean, at: number): void { this.status.setOnline(deviceId, online, at); }
  touch(deviceId: string, at: number): void { this.status.touch(deviceId, at); }
  isOnline(deviceId: string): boolean { return this.status.isOnline(deviceId); }
  lastSeen(deviceId: string): number | null { return this.status.lastSeen(deviceId); }
  mergeAttributes(deviceId: string, attrs: Record<string, unknown>): void { this.status.mergeAttributes(deviceId, attrs); }
  attributes(deviceId: string): Record<string, unknown> { return this.status.attributes(deviceId); }
  updateLatest(deviceId: string, ts: number, values: Record<string, Scalar>): void { this.status.updateLatest(deviceId, ts, values); }
  latest(deviceId: string): Record<string, LatestValue> { return this.status.latest(deviceId); }

  // ---- authentication (spec device-protocol.md "Connection") -------------

  isDevice(id: string): boolean {
    return this.devices.has(id);
  }

  async authenticate(username: string, password: Buffer | undefined): Promise<AuthResult> {
    if (typeof username !== 'string' || username.length === 0 || username.length > MAX_CREDENTIAL_LENGTH) {
      return { ok: false, reason: 'bad_credentials' };
    }
    this.sync(); // a device added, disabled or deleted by the CLI counts at once
    const looksLikeId = DEVICE_ID_RE.test(username);
    const byId = looksLikeId ? this.devices.get(username) : undefined;
    if (byId) {
      // username = device id, password = device secret
      if (byId.row.enabled !== 1) return { ok: false, reason: 'disabled' };
      const secret = password?.toString('utf8') ?? '';
      const good = await this.verifier.verify(username, secret, byId.row.secret_hash);
      return this.settle(username, good, false, 'bad_secret');
    }
    // ThingsBoard style: username = access token, password ignored.
    const id = this.tokens.get(tokenLookup(username));
    const byToken = id !== undefined ? this.devices.get(id) : undefined;
    if (!byToken) return { ok: false, reason: looksLikeId ? 'unknown_device' : 'bad_credentials' };
    if (byToken.row.enabled !== 1) return { ok: false, reason: 'disabled' };
    const good = await this.verifier.verify(`token:${byToken.row.id}`, username, byToken.row.token_hash);
    return this.settle(byToken.row.id, good, true, 'bad_credentials');
  }

  /** Re-checks the device after the (async) hash check: it may have been deleted or disabled meanwhile. */
  private settle(id: string, good: boolean, viaToken: boolean, failure: 'bad_secret' | 'bad_credentials'): AuthResult {
    if (!good) return { ok: false, reason: failure };
    const c = this.devices.get(id);
    if (!c) return { ok: false, reason: 'unknown_device' };
    if (c.row.enabled !== 1) return { ok: false, reason: 'disabled' };
    return { ok: true, identity: { deviceId: id, kind: c.device.kind, area: c.device.area, viaToken } };
  }

  // ---- persistence -------------------------------------------------------

  /** Writes dirty presence/latest rows in one transaction. Returns the number of rows written. */
  flush(): number { return this.status.flush(); }

  private tick(): void {
    try {
      this.sync();
    } catch (err) {
      this.opts.logger.warn({ err }, 'could not reload devices changed by another process');
    }
    this.flush();
  }

  /** Reloads areas and devices when another connection committed since we last looked. */
  private sync(): void {
    if (!this.sql) return;
    const v = this.q.dataVersion.get() as number;
    if (v === this.dataVersion) return;
    this.dataVersion = v;
    this.areas.reload();
    this.reloadDevices(true);
  }

  private reloadDevices(emit: boolean): void {
    const rows = this.q.allDevices.all() as DeviceRow[];
    const seen = new Set<string>();
    for (const row of rows) {
      seen.add(row.id);
      const old = this.devices.get(row.id);
      if (old && sameRow(old.row, row)) continue;
      if (old && old.row.created_at !== row.created_at) this.uncache(row.id, emit); // deleted and re-created
      const existed = this.devices.has(row.id);
      if (existed) this.forgetCredentials(row.id);
      this.cache(row);
      if (emit) this.opts.bus.emit('device.changed', { deviceId: row.id, change: existed ? 'updated' : 'created' });
    }
    for (const id of [...this.devices.keys()]) if (!seen.has(id)) this.uncache(id, emit);
  }

  private cache(row: DeviceRow): Device {
    const old = this.devices.get(row.id);
    if (old) this.tokens.delete(old.row.token_lookup);
    const device = toDevice(row);
    this.devices.set(row.id, { device, row });
    this.tokens.set(row.token_lookup, row.id);
    this.status.track(row.id);
    return device;
  }

  private uncache(id: string, emit = true): void {
    const c = this.devices.get(id);
    if (!c) return;
    this.devices.delete(id);
    this.tokens.delete(c.row.token_lookup);
    this.forgetCredentials(id);
    this.status.untrack(id, c.device.area, emit);
    if (emit) this.opts.bus.emit('device.changed', { deviceId: id, change: 'deleted' });
  }

  /** Drops cached verifications of the device's secret and token. */
  private forgetCredentials(id: string): void {
    this.verifier.invalidate(id);
    this.verifier.invalidate(`token:${id}`);
  }
}

function prepare(db: SqliteDatabase) {
  const s = (sql: string) => db.prepare(sql);
  return {
    db,
    dataVersion: db.prepare('PRAGMA data_version').pluck(),
    allDevices: s('SELECT * FROM devices'),
    getDevice: s('SELECT * FROM devices WHERE id = ?'),
    insertDevice: s(`INSERT INTO devices (id, kind, name, area, lat, lon, model, enabled, secret_hash, token_lookup, token_hash, created_at)
      VALUES (@id, @kind, @name, @area, @lat, @lon, @model, @enabled, @secret_hash, @token_lookup, @token_hash, @created_at)`),
    deleteDevice: s('DELETE FROM devices WHERE id = ?'),
    setEnabled: s('UPDATE devices SET enabled = ? WHERE id = ?'),
    insertState: s('INSERT INTO device_state (device_id) VALUES (?)'),
  };
}

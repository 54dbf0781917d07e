/**
 * Devices: the `devices` table and its cache (by id, and by token_lookup for
 * access-token logins). Another process (the `keng` CLI) may add, disable or
 * delete devices while the server runs: a miss asks the registry to reload
 * (`sync`), which calls reload() here.
 */
import type { Clock, EventBus } from '../core/index.js';
import { Errors, withDetails } from '../core/errors.js';
import type { SqliteDatabase } from '../storage/state/index.js';
import { MAX_NAME_LENGTH } from './area-tree.js';
import type { Areas } from './areas.js';
import { forgetVerifications, issueCredential, issueCredentials, type CredentialLookup, type StoredCredentials } from './credentials.js';
import { MAX_CREDENTIAL_LENGTH, tokenLookup, type CredentialVerifier } from './secrets.js';
import { PurgeJobs } from './purge-jobs.js';
import { Statements } from './statements.js';
import { DEVICE_ID_RE, type Device, type DeviceKind } from './types.js';
import type { CredentialKind, DeviceChanges, DeviceCredentials, DeviceFilter, DevicesApi, NewDevice } from './registry-types.js';

/** What the device cache needs of the device status. */
export interface DeviceTracker {
  track(deviceId: string): void;
  untrack(deviceId: string, area: string, emit: boolean): void;
  isOnline(deviceId: string): boolean;
}

export interface DevicesDeps {
  bus: EventBus;
  clock: Clock;
  areas: Pick<Areas, 'getArea' | 'subtreeSet'>;
  status: DeviceTracker;
  verifier: CredentialVerifier;
  /** Reloads areas and devices when another connection committed (the registry's). */
  sync: () => void;
  /** telemetry.onDeviceDelete: 'purge' records a purge of the readings with each deletion (purger.ts runs it). */
  onDelete: 'keep' | 'purge';
}

const KINDS: readonly DeviceKind[] = ['sensor', 'speaker', 'gateway'];

interface DeviceRow extends StoredCredentials {
  id: string; kind: DeviceKind; name: string; area: string; lat: number | null; lon: number | null;
  model: string | null; enabled: number; created_at: number; history_from: number | null;
}
interface Cached { device: Device; row: DeviceRow }

function toDevice(r: DeviceRow): Device {
  return Object.freeze({
    id: r.id, kind: r.kind, name: r.name, area: r.area,
    location: r.lat !== null && r.lon !== null ? Object.freeze({ lat: r.lat, lon: r.lon }) : null,
    model: r.model, enabled: r.enabled === 1, createdAt: r.created_at, historyFrom: r.history_from,
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
  if (d.accessToken !== undefined && (typeof d.accessToken !== 'string' || d.accessToken.length === 0 || d.accessToken.length > MAX_CREDENTIAL_LENGTH)) {
    throw invalid('accessToken', `accessToken must be 1 to ${MAX_CREDENTIAL_LENGTH} characters`);
  }
}

const CHANGE_KEYS: ReadonlySet<string> = new Set(['name', 'area', 'location', 'model', 'enabled']);

/** Shape checks of a device change (400): the same rules as at registration. */
export function validateDeviceChanges(c: DeviceChanges): void {
  if (typeof c !== 'object' || c === null) throw invalid('', 'changes must be an object');
  for (const k of Object.keys(c)) if (!CHANGE_KEYS.has(k)) throw invalid(k, `unknown field "${k}"`);
  const probe: NewDevice = { id: 'probe', kind: 'sensor', name: c.name ?? 'probe', area: c.area ?? 'probe', location: c.location, model: c.model };
  validateNewDevice(probe);
  if (c.enabled !== undefined && typeof c.enabled !== 'boolean') throw invalid('enabled', 'enabled must be true or false');
}

function prepare(db: SqliteDatabase) {
  const s = (sql: string) => db.prepare(sql);
  return {
    db,
    allDevices: s('SELECT * FROM devices'),
    getDevice: s('SELECT * FROM devices WHERE id = ?'),
    insertDevice: s(`INSERT INTO devices (id, kind, name, area, lat, lon, model, enabled, secret_hash, token_lookup, token_hash, created_at, history_from)
      VALUES (@id, @kind, @name, @area, @lat, @lon, @model, @enabled, @secret_hash, @token_lookup, @token_hash, @created_at, @history_from)`),
    tombstone: s('SELECT deleted_at FROM device_tombstones WHERE id = ?'),
    bury: s(`INSERT INTO device_tombstones (id, deleted_at) VALUES (?, ?)
      ON CONFLICT (id) DO UPDATE SET deleted_at = excluded.deleted_at`),
    deleteDevice: s('DELETE FROM devices WHERE id = ?'),
    setEnabled: s('UPDATE devices SET enabled = ? WHERE id = ?'),
    updateDevice: s(`UPDATE devices SET name = @name, area = @area, lat = @lat, lon = @lon, model = @model, enabled = @enabled
      WHERE id = @id`),
    setSecret: s('UPDATE devices SET secret_hash = @secret_hash WHERE id = @id'),
    setToken: s('UPDATE devices SET token_lookup = @token_lookup, token_hash = @token_hash WHERE id = @id'),
    insertState: s('INSERT INTO device_state (device_id) VALUES (?)'),
    purges: new PurgeJobs(db),
  };
}

export class Devices implements DevicesApi, CredentialLookup {
  private devices = new Map<string, Cached>();
  /** token_lookup → device id. */
  private tokens = new Map<string, string>();
  private readonly sql = new Statements(prepare);

  constructor(private readonly deps: DevicesDeps) {}

  /** Prepares the statements and loads the devices (no events). */
  open(db: SqliteDatabase): void {
    this.sql.open(db);
    this.devices = new Map();
    this.tokens = new Map();
    this.reload(false);
  }

  close(): void { this.sql.close(); }

  get size(): number { return this.devices.size; }

  /**
   * Registers a device and makes its credentials (hashed off the event loop,
   * see issueCredentials). A concurrent registration of the same id loses at
   * the insert (DEVICE_EXISTS).
   */
  async createDevice(d: NewDevice): Promise<{ device: Device; credentials: DeviceCredentials }> {
    validateNewDevice(d);
    this.deps.sync();
    if (!this.deps.areas.getArea(d.area)) throw Errors.NOT_FOUND(`Area "${d.area}"`);
    if (this.devices.has(d.id)) throw Errors.DEVICE_EXISTS(d.id);
    const tokenInUse = (): Error => Errors.CONFLICT('this access token is in use by another device');
    if (d.accessToken !== undefined && this.tokens.has(tokenLookup(d.accessToken))) throw tokenInUse();
    const { credentials, stored } = await issueCredentials(d.accessToken);
    // An id that belonged to a deleted device: what that device stored stays in the telemetry store
    // (unless purged) but is never shown under the new one (history starts where the old one ended).
    const buried = this.sql.q.tombstone.get(d.id) as { deleted_at: number } | undefined;
    const row: DeviceRow = {
      id: d.id, kind: d.kind, name: d.name, area: d.area,
      lat: d.location?.lat ?? null, lon: d.location?.lon ?? null, model: d.model ?? null, enabled: 1,
      ...stored,
      created_at: this.deps.clock.now(),
      history_from: buried ? buried.deleted_at + 1 : null,
    };
    const q = this.sql.q;
    try {
      q.db.transaction(() => {
        q.insertDevice.run(row);
        q.insertState.run(row.id);
      })();
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw Errors.DEVICE_EXISTS(d.id);
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw Errors.NOT_FOUND(`Area "${d.area}"`);
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE' && d.accessToken !== undefined) throw tokenInUse();
      throw err;
    }
    const device = this.cache(row);
    this.deps.bus.emit('device.changed', { deviceId: d.id, change: 'created' });
    return { device, credentials };
  }

  /** O(1) on a hit; a miss checks whether another process added the device. */
  getDevice(id: string): Device | undefined {
    const c = this.devices.get(id);
    if (c) return c.device;
    this.deps.sync();
    return this.devices.get(id)?.device;
  }

  listDevices(filter: DeviceFilter = {}): Device[] {
    this.deps.sync();
    const areaSet = filter.area !== undefined ? this.deps.areas.subtreeSet(filter.area) : undefined;
    const { status } = this.deps;
    const out: Device[] = [];
    for (const { device } of this.devices.values()) {
      if (areaSet && !areaSet.has(device.area)) continue;
      if (filter.kind !== undefined && device.kind !== filter.kind) continue;
      if (filter.online !== undefined && status.isOnline(device.id) !== filter.online) continue;
      out.push(device);
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * Deletes the device; `by` (the actor, e.g. "user:alice") is recorded with the purge of its readings
   * when telemetry.onDeviceDelete is 'purge': in the same transaction as the tombstone, so a deletion
   * whose purge is lost cannot happen (purge-jobs.ts).
   */
  deleteDevice(id: string, by = 'unknown'): boolean {
    const q = this.sql.q;
    // device_state goes with it (ON DELETE CASCADE); the tombstone keeps a later device of the same id from its history.
    const removed = q.db.transaction(() => {
      const gone = q.deleteDevice.run(id).changes > 0;
      if (gone) {
        const now = this.deps.clock.now();
        q.bury.run(id, now);
        if (this.deps.onDelete === 'purge') q.purges.request(id, now, now, by);
      }
      return gone;
    })();
    if (this.devices.has(id)) this.uncache(id); // emits 'device.changed'
    else if (removed) this.deps.bus.emit('device.changed', { deviceId: id, change: 'deleted' });
    return removed;
  }

  /**
   * Purges what a device deleted earlier (under 'keep') stored: the readings
   * from before its tombstone, also when the id was registered again since.
   * false when no device of this id was ever deleted.
   */
  requestPurge(id: string, by: string): boolean {
    const q = this.sql.q;
    return q.db.transaction(() => {
      const buried = q.tombstone.get(id) as { deleted_at: number } | undefined;
      if (!buried) return false;
      const now = this.deps.clock.now();
      q.purges.request(id, buried.deleted_at, now, by, now);
      return true;
    })();
  }

  /** Enables or disables a device (a disabled device is refused at CONNECT). */
  setEnabled(id: string, enabled: boolean): Device | undefined {
    const q = this.sql.q;
    if (q.setEnabled.run(enabled ? 1 : 0, id).changes === 0) return undefined;
    const row = q.getDevice.get(id) as DeviceRow;
    forgetVerifications(this.deps.verifier, id);
    const device = this.cache(row);
    this.deps.bus.emit('device.changed', { deviceId: id, change: 'updated' });
    return device;
  }

  /**
   * Changes the keys present in `changes`. A move to another area, or a
   * disable, counts for the next CONNECT and reading at once (cache and
   * verifications renewed); the app closes the connection of a device that
   * became disabled ('device.changed').
   */
  updateDevice(id: string, changes: DeviceChanges): Device | undefined {
    validateDeviceChanges(changes);
    const cur = this.getDevice(id);
    if (!cur) return undefined;
    if (changes.area !== undefined && changes.area !== cur.area && !this.deps.areas.getArea(changes.area)) {
      throw Errors.NOT_FOUND(`Area "${changes.area}"`);
    }
    const q = this.sql.q;
    const old = q.getDevice.get(id) as DeviceRow | undefined;
    if (!old) return undefined;
    const loc = changes.location === undefined ? (old.lat !== null && old.lon !== null ? { lat: old.lat, lon: old.lon } : null) : changes.location;
    const next = {
      id, name: changes.name ?? old.name, area: changes.area ?? old.area, lat: loc?.lat ?? null, lon: loc?.lon ?? null,
      model: changes.model === undefined ? old.model : changes.model,
      enabled: changes.enabled === undefined ? old.enabled : changes.enabled ? 1 : 0,
    };
    try {
      if (q.updateDevice.run(next).changes === 0) return undefined;
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw Errors.NOT_FOUND(`Area "${next.area}"`);
      throw err;
    }
    return this.recache(id);
  }

  /**
   * A new secret or access token, hashed off the event loop like at
   * registration; the old one stops working with this call (its cached
   * verifications are dropped). Closing a connection made with the old one is
   * the caller's (the broker's kick).
   */
  async rotateCredential(id: string, kind: CredentialKind): Promise<string | undefined> {
    if (!this.getDevice(id)) return undefined;
    const { value, stored } = await issueCredential(kind);
    const q = this.sql.q;
    const stmt = kind === 'secret' ? q.setSecret : q.setToken;
    if (stmt.run({ id, ...stored }).changes === 0) return undefined;
    return this.recache(id) ? value : undefined;
  }

  /** Re-reads a changed row into the cache and tells the rest of the app ('device.changed'). */
  private recache(id: string): Device | undefined {
    const row = this.sql.q.getDevice.get(id) as DeviceRow | undefined;
    if (!row) return undefined;
    forgetVerifications(this.deps.verifier, id);
    const device = this.cache(row);
    this.deps.bus.emit('device.changed', { deviceId: id, change: 'updated' });
    return device;
  }

  // ---- lookups without reload (hot path and authentication) --------------

  record(id: string): Cached | undefined {
    return this.devices.get(id);
  }

  idByToken(lookup: string): string | undefined {
    return this.tokens.get(lookup);
  }

  areaOf(id: string): string | undefined {
    return this.devices.get(id)?.device.area;
  }

  // ---- cache -------------------------------------------------------------

  /** Brings the cache in line with the table; `emit`: 'device.changed' (and 'status') for each difference. */
  reload(emit: boolean): void {
    const rows = this.sql.q.allDevices.all() as DeviceRow[];
    const seen = new Set<string>();
    for (const row of rows) {
      seen.add(row.id);
      const old = this.devices.get(row.id);
      if (old && sameRow(old.row, row)) continue;
      if (old && old.row.created_at !== row.created_at) this.uncache(row.id, emit); // deleted and re-created
      const existed = this.devices.has(row.id);
      if (existed) forgetVerifications(this.deps.verifier, row.id);
      this.cache(row);
      if (emit) this.deps.bus.emit('device.changed', { deviceId: row.id, change: existed ? 'updated' : 'created' });
    }
    for (const id of [...this.devices.keys()]) if (!seen.has(id)) this.uncache(id, emit);
  }

  private cache(row: DeviceRow): Device {
    const old = this.devices.get(row.id);
    if (old) this.tokens.delete(old.row.token_lookup);
    const device = toDevice(row);
    this.devices.set(row.id, { device, row });
    this.tokens.set(row.token_lookup, row.id);
    this.deps.status.track(row.id);
    return device;
  }

  private uncache(id: string, emit = true): void {
    const c = this.devices.get(id);
    if (!c) return;
    this.devices.delete(id);
    this.tokens.delete(c.row.token_lookup);
    forgetVerifications(this.deps.verifier, id);
    this.deps.status.untrack(id, c.device.area, emit);
    if (emit) this.deps.bus.emit('device.changed', { deviceId: id, change: 'deleted' });
  }
}

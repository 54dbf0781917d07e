/**
 * Devices: the `devices` table and its cache (by id, and by token_lookup for
 * access-token logins), written through the `Db` port. Another process (the
 * `keng` CLI) or, in cluster mode, another node may add, disable or delete
 * devices while the server runs: the registry reloads the cache (load() here;
 * registry.ts says when); on the embedded store a miss asks it to look at once
 * (`sync`).
 */
import type { Clock, EventBus } from '../core/index.js';
import { Errors, withDetails } from '../core/errors.js';
import { sql } from 'kysely';
import type { SqliteDatabase } from '../storage/state/index.js';
import { MAX_NAME_LENGTH } from './area-tree.js';
import type { Areas } from './areas.js';
import { forgetVerifications, issueCredential, issueCredentials, type CredentialLookup, type StoredCredentials } from './credentials.js';
import { MAX_CREDENTIAL_LENGTH, tokenLookup, type CredentialVerifier } from './secrets.js';
import { PurgeJobs } from './purge-jobs.js';
import { Statements, constraintOf, type RegistryWrite, type Trx } from './statements.js';
import { DEVICE_ID_RE, type Device, type DeviceKind } from './types.js';
import type { CredentialKind, DeviceChanges, DeviceCredentials, DeviceFilter, DevicesApi, NewDevice } from './registry-types.js';

/** What the device cache needs of the device status. */
export interface DeviceTracker {
  track(deviceId: string): void;
  untrack(deviceId: string, area: string, emit: boolean): void;
  /** Online here or, in cluster mode, on another node (as the device list filters). */
  isOnlineAnywhere(deviceId: string): boolean;
}

export interface DevicesDeps {
  bus: EventBus;
  clock: Clock;
  areas: Pick<Areas, 'getArea' | 'subtreeSet'>;
  status: DeviceTracker;
  verifier: CredentialVerifier;
  /** Reloads areas and devices when another connection committed (the registry's; embedded store). */
  sync: () => void;
  write: RegistryWrite;
  /** Brings the caches up to date before a change that checks them (the registry's: sync(), or the cluster version check). */
  refresh: () => Promise<void>;
  /** telemetry.onDeviceDelete: 'purge' records a purge of the readings with each deletion (purger.ts runs it). */
  onDelete: 'keep' | 'purge';
}

const KINDS: readonly DeviceKind[] = ['sensor', 'speaker', 'gateway'];

export interface DeviceRow extends StoredCredentials {
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
  return { allDevices: db.prepare('SELECT * FROM devices') };
}

/** Every device row, in one statement of `k` (a snapshot on the reload path). */
export async function readDevices(k: Trx): Promise<DeviceRow[]> {
  return (await sql<DeviceRow>`SELECT * FROM devices ORDER BY id`.execute(k)).rows;
}

async function readDevice(k: Trx, id: string): Promise<DeviceRow | undefined> {
  return (await sql<DeviceRow>`SELECT * FROM devices WHERE id = ${id}`.execute(k)).rows[0];
}

async function tombstone(k: Trx, id: string): Promise<number | undefined> {
  return (await sql<{ deleted_at: number }>`SELECT deleted_at FROM device_tombstones WHERE id = ${id}`.execute(k)).rows[0]?.deleted_at;
}

function affected(r: { numAffectedRows?: bigint }): number {
  return Number(r.numAffectedRows ?? 0);
}

export class Devices implements DevicesApi, CredentialLookup {
  private devices = new Map<string, Cached>();
  /** token_lookup → device id. */
  private tokens = new Map<string, string>();
  private readonly sql = new Statements(prepare);

  constructor(private readonly deps: DevicesDeps) {}

  /** Embedded store: prepares the statement of the synchronous reload. */
  open(db: SqliteDatabase): void { this.sql.open(db); }

  /** Starts from an empty cache (start()). */
  clear(): void {
    this.devices = new Map();
    this.tokens = new Map();
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
    await this.deps.refresh();
    if (!this.deps.areas.getArea(d.area)) throw Errors.NOT_FOUND(`Area "${d.area}"`);
    if (this.devices.has(d.id)) throw Errors.DEVICE_EXISTS(d.id);
    const tokenInUse = (): Error => Errors.CONFLICT('this access token is in use by another device');
    if (d.accessToken !== undefined && this.tokens.has(tokenLookup(d.accessToken))) throw tokenInUse();
    const { credentials, stored } = await issueCredentials(d.accessToken);
    const createdAt = this.deps.clock.now();
    let row: DeviceRow;
    try {
      row = await this.deps.write(async (trx) => {
        // An id that belonged to a deleted device: what that device stored stays in the telemetry store
        // (unless purged) but is never shown under the new one (history starts where the old one ended).
        const buried = await tombstone(trx, d.id);
        const r: DeviceRow = {
          id: d.id, kind: d.kind, name: d.name, area: d.area,
          lat: d.location?.lat ?? null, lon: d.location?.lon ?? null, model: d.model ?? null, enabled: 1,
          ...stored,
          created_at: createdAt,
          history_from: buried !== undefined ? buried + 1 : null,
        };
        await sql`INSERT INTO devices (id, kind, name, area, lat, lon, model, enabled, secret_hash, token_lookup, token_hash, created_at, history_from)
          VALUES (${r.id}, ${r.kind}, ${r.name}, ${r.area}, ${r.lat}, ${r.lon}, ${r.model}, ${r.enabled}, ${r.secret_hash}, ${r.token_lookup},
            ${r.token_hash}, ${r.created_at}, ${r.history_from})`.execute(trx);
        await sql`INSERT INTO device_state (device_id) VALUES (${r.id})`.execute(trx);
        return r;
      });
    } catch (err) {
      const c = constraintOf(err);
      if (c === 'primary') throw Errors.DEVICE_EXISTS(d.id);
      if (c === 'foreign') throw Errors.NOT_FOUND(`Area "${d.area}"`);
      if (c === 'unique' && d.accessToken !== undefined) throw tokenInUse();
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
      if (filter.online !== undefined && status.isOnlineAnywhere(device.id) !== filter.online) continue;
      out.push(device);
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * Deletes the device; `by` (the actor, e.g. "user:alice") is recorded with the purge of its readings
   * when telemetry.onDeviceDelete is 'purge': in the same transaction as the tombstone, so a deletion
   * whose purge is lost cannot happen (purge-jobs.ts).
   */
  async deleteDevice(id: string, by = 'unknown'): Promise<boolean> {
    // device_state goes with it (ON DELETE CASCADE); the tombstone keeps a later device of the same id from its history.
    const removed = await this.deps.write(async (trx) => {
      const gone = affected(await sql`DELETE FROM devices WHERE id = ${id}`.execute(trx)) > 0;
      if (gone) {
        const now = this.deps.clock.now();
        await sql`INSERT INTO device_tombstones (id, deleted_at) VALUES (${id}, ${now})
          ON CONFLICT (id) DO UPDATE SET deleted_at = excluded.deleted_at`.execute(trx);
        if (this.deps.onDelete === 'purge') await PurgeJobs.request(trx, id, now, now, by);
      }
      return gone;
    });
    if (this.devices.has(id)) this.uncache(id); // emits 'device.changed'
    else if (removed) {
      this.deps.bus.emit('device.changed', { deviceId: id, change: 'deleted' });
    }
    return removed;
  }

  /**
   * Purges what a device deleted earlier (under 'keep') stored: the readings
   * from before its tombstone, also when the id was registered again since.
   * false when no device of this id was ever deleted.
   */
  requestPurge(id: string, by: string, alsoInTx?: (trx: Trx) => Promise<unknown>): Promise<boolean> {
    return this.deps.write(async (trx) => {
      const buried = await tombstone(trx, id);
      if (buried === undefined) return false;
      const now = this.deps.clock.now();
      await PurgeJobs.request(trx, id, buried, now, by, now);
      await alsoInTx?.(trx); // its audit entry
      return true;
    });
  }

  /** Enables or disables a device (a disabled device is refused at CONNECT). */
  async setEnabled(id: string, enabled: boolean): Promise<Device | undefined> {
    const row = await this.deps.write(async (trx) => {
      if (affected(await sql`UPDATE devices SET enabled = ${enabled ? 1 : 0} WHERE id = ${id}`.execute(trx)) === 0) return undefined;
      return readDevice(trx, id);
    });
    return row ? this.recache(row) : undefined;
  }

  /**
   * Changes the keys present in `changes`. A move to another area, or a
   * disable, counts for the next CONNECT and reading at once (cache and
   * verifications renewed); the app closes the connection of a device that
   * became disabled ('device.changed').
   */
  async updateDevice(id: string, changes: DeviceChanges): Promise<Device | undefined> {
    validateDeviceChanges(changes);
    await this.deps.refresh();
    const cur = this.getDevice(id);
    if (!cur) return undefined;
    if (changes.area !== undefined && changes.area !== cur.area && !this.deps.areas.getArea(changes.area)) {
      throw Errors.NOT_FOUND(`Area "${changes.area}"`);
    }
    let row: DeviceRow | undefined;
    try {
      row = await this.deps.write(async (trx) => {
        const old = await readDevice(trx, id);
        if (!old) return undefined;
        const loc = changes.location === undefined ? (old.lat !== null && old.lon !== null ? { lat: old.lat, lon: old.lon } : null) : changes.location;
        const next = {
          name: changes.name ?? old.name, area: changes.area ?? old.area, lat: loc?.lat ?? null, lon: loc?.lon ?? null,
          model: changes.model === undefined ? old.model : changes.model,
          enabled: changes.enabled === undefined ? old.enabled : changes.enabled ? 1 : 0,
        };
        if (affected(await sql`UPDATE devices SET name = ${next.name}, area = ${next.area}, lat = ${next.lat}, lon = ${next.lon},
          model = ${next.model}, enabled = ${next.enabled} WHERE id = ${id}`.execute(trx)) === 0) return undefined;
        return readDevice(trx, id);
      });
    } catch (err) {
      if (constraintOf(err) === 'foreign') throw Errors.NOT_FOUND(`Area "${changes.area ?? cur.area}"`);
      throw err;
    }
    return row ? this.recache(row) : undefined;
  }

  /**
   * A new secret or access token, hashed off the event loop like at
   * registration; the old one stops working with this call (its cached
   * verifications are dropped). Closing a connection made with the old one is
   * the caller's (the broker's kick).
   */
  async rotateCredential(id: string, kind: CredentialKind): Promise<string | undefined> {
    await this.deps.refresh();
    if (!this.getDevice(id)) return undefined;
    const { value, stored } = await issueCredential(kind);
    const row = await this.deps.write(async (trx) => {
      const n = kind === 'secret'
        ? affected(await sql`UPDATE devices SET secret_hash = ${stored.secret_hash} WHERE id = ${id}`.execute(trx))
        : affected(await sql`UPDATE devices SET token_lookup = ${stored.token_lookup}, token_hash = ${stored.token_hash} WHERE id = ${id}`.execute(trx));
      return n === 0 ? undefined : readDevice(trx, id);
    });
    return row && this.recache(row) ? value : undefined;
  }

  /** Puts a changed row into the cache and tells the rest of the app ('device.changed'). */
  private recache(row: DeviceRow): Device {
    forgetVerifications(this.deps.verifier, row.id);
    const device = this.cache(row);
    this.deps.bus.emit('device.changed', { deviceId: row.id, change: 'updated' });
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

  /** Embedded store: reload() with the table's rows, synchronously (nothing when not open). */
  reload(emit: boolean): void {
    if (this.sql.isOpen) this.load(this.sql.q.allDevices.all() as DeviceRow[], emit);
  }

  /** Brings the cache in line with these rows (the whole table); `emit`: 'device.changed' (and 'status') for each difference. */
  load(rows: readonly DeviceRow[], emit: boolean): void {
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

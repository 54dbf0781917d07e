/**
 * The device registry: one face over the parts that own each concept: areas
 * (areas.ts), devices (devices.ts), their credentials and authentication
 * (credentials.ts), and presence, attributes and latest values (status.ts,
 * in memory, flushed to device_state every 2 s and at stop).
 *
 * Other processes (the `keng` CLI) may change areas and devices while the
 * server runs. SQLite's `PRAGMA data_version` tells when another connection
 * committed; the registry then reloads its caches: at once on a cache miss
 * (getDevice, getArea), before every authentication and list, and every 2 s.
 */
import type { Clock, Component, EventBus, Logger, Metrics, Scalar } from '../core/index.js';
import type { StateDb, SqliteDatabase } from '../storage/state/index.js';
import { Areas } from './areas.js';
import { DeviceAuthentication } from './credentials.js';
import { Devices } from './devices.js';
import { CredentialVerifier } from './secrets.js';
import { Statements } from './statements.js';
import { DeviceStatus } from './status.js';
import type { Area, Device, DeviceAuthenticator, DeviceView, LatestValue } from './types.js';
import type {
  CredentialKind, DeviceChanges, DeviceCredentials, DeviceFilter, DeviceRegistryApi, NewArea, NewDevice,
} from './registry-types.js';

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
  /** telemetry.onDeviceDelete (default 'keep'): whether a deletion also purges the device's readings. */
  onDelete?: 'keep' | 'purge';
}

type AuthResult = Awaited<ReturnType<DeviceAuthenticator['authenticate']>>;

function prepare(db: SqliteDatabase) {
  return { dataVersion: db.prepare('PRAGMA data_version').pluck() };
}

export class DeviceRegistry implements DeviceRegistryApi, DeviceAuthenticator, Component {
  readonly name = 'devices';
  private readonly opts: DeviceRegistryOptions;
  private readonly areas: Areas;
  private readonly devices: Devices;
  private readonly auth: DeviceAuthentication;
  private readonly status: DeviceStatus;
  private readonly sql = new Statements(prepare);
  private dataVersion = -1;
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: DeviceRegistryOptions) {
    this.opts = opts;
    const { bus, clock, logger, metrics } = opts;
    const verifier = opts.verifier ?? new CredentialVerifier();
    const sync = (): void => this.sync();
    this.areas = new Areas({ clock, sync });
    this.status = new DeviceStatus({
      bus, metrics, clock, logger, ownsPresence: this.ownsPresence, areaOf: (id) => this.devices.areaOf(id),
    });
    this.devices = new Devices({ bus, clock, areas: this.areas, status: this.status, verifier, sync, onDelete: opts.onDelete ?? 'keep' });
    this.auth = new DeviceAuthentication({ devices: this.devices, verifier, sync });
  }

  private get ownsPresence(): boolean { return this.opts.ownsPresence !== false; }

  async start(): Promise<void> {
    const db = this.opts.db.db;
    this.sql.open(db);
    this.dataVersion = this.sql.q.dataVersion.get() as number;
    this.status.open(db);
    this.areas.open(db);
    this.devices.open(db);
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
    this.devices.close();
    this.areas.close();
    this.sql.close();
  }

  // ---- areas -------------------------------------------------------------

  createArea(input: NewArea): Area { return this.areas.createArea(input); }
  listAreas(): Area[] { return this.areas.listAreas(); }
  getArea(code: string): Area | undefined { return this.areas.getArea(code); }
  subtree(code: string): string[] { return this.areas.subtree(code); }

  // ---- devices -----------------------------------------------------------

  createDevice(d: NewDevice): Promise<{ device: Device; credentials: DeviceCredentials }> { return this.devices.createDevice(d); }
  getDevice(id: string): Device | undefined { return this.devices.getDevice(id); }
  listDevices(filter: DeviceFilter = {}): Device[] { return this.devices.listDevices(filter); }
  deleteDevice(id: string, by?: string): boolean { return this.devices.deleteDevice(id, by); }
  /** Not in DeviceRegistryApi: purge the readings of a device deleted earlier (false: no such deletion). */
  requestPurge(id: string, by: string): boolean { return this.devices.requestPurge(id, by); }
  updateDevice(id: string, changes: DeviceChanges): Device | undefined { return this.devices.updateDevice(id, changes); }
  rotateCredential(id: string, kind: CredentialKind): Promise<string | undefined> { return this.devices.rotateCredential(id, kind); }
  /** Not in DeviceRegistryApi. */
  setEnabled(id: string, enabled: boolean): Device | undefined { return this.devices.setEnabled(id, enabled); }

  view(id: string): DeviceView | undefined {
    const device = this.devices.getDevice(id);
    return device ? this.status.view(device) : undefined;
  }

  views(filter: DeviceFilter = {}): DeviceView[] {
    return this.devices.listDevices(filter).map((d) => this.status.view(d));
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

  // ---- authentication (firmware-protocols/device-protocol.md §1) -------------

  isDevice(id: string): boolean { return this.auth.isDevice(id); }
  authenticate(username: string, password: Buffer | undefined): Promise<AuthResult> { return this.auth.authenticate(username, password); }

  // ---- persistence -------------------------------------------------------

  /** Writes dirty presence/latest rows in one transaction. Returns the number of rows written. */
  flush(): number { return this.status.flush(); }

  private tick(): void {
    try {
      this.sync();
    } catch (err) {
      this.opts.logger.warn({ err }, 'could not reload devices changed by another process');
    }
    this.status.flush();
  }

  /** Reloads areas and devices when another connection committed since we last looked. */
  private sync(): void {
    if (!this.sql.isOpen) return;
    const v = this.sql.q.dataVersion.get() as number;
    if (v === this.dataVersion) return;
    this.dataVersion = v;
    this.areas.reload();
    this.devices.reload(true);
  }
}

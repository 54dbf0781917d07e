/**
 * The device registry: one face over the parts that own each concept: areas
 * (areas.ts), devices (devices.ts), their credentials and authentication
 * (credentials.ts), and presence, attributes and latest values (status.ts,
 * in memory, flushed to device_state every 2 s and at stop).
 *
 * Devices and areas are kept in memory: ingest, broker authorisation and area
 * lookups read them synchronously. Every change goes through the `Db` port
 * (one write transaction each) and updates the cache of this process at once.
 *
 * Embedded store: other processes (the `keng` CLI) may change areas and devices
 * while the server runs. SQLite's `PRAGMA data_version` tells when another
 * connection committed; the registry then reloads its caches: at once on a
 * cache miss (getDevice, getArea), before every authentication and list, and
 * every 2 s.
 *
 * Cluster mode (PostgreSQL): every registry write transaction bumps the one row
 * of `registry_version`. Each node reads it every second (REGISTRY_POLL_MS, one
 * SELECT) and before every device login, and reloads areas and devices in one
 * snapshot when it moved: a change made on another node reaches this node's
 * cache within about a second (at once for a login), with the same
 * 'device.changed' events as a local change (the app then closes the
 * connection of a device disabled or deleted elsewhere).
 */
import type { Clock, Component, EventBus, KengEvents, Logger, Metrics, Scalar } from '../core/index.js';
import { sql } from 'kysely';
import { settleWithin, withTimeout } from '../core/async.js';
import type { Db } from '../storage/sql/index.js';
import { stateSqlitePort, type StateDb, type SqliteDatabase } from '../storage/state/index.js';
import { Areas, readAreas } from './areas.js';
import { DeviceAuthentication } from './credentials.js';
import { Devices, readDevices } from './devices.js';
import { CredentialVerifier } from './secrets.js';
import { Statements, type Trx } from './statements.js';
import { DeviceStatus } from './status.js';
import type { Area, Device, DeviceAuthenticator, DeviceView, LatestValue } from './types.js';
import type {
  CredentialKind, DeviceChanges, DeviceCredentials, DeviceFilter, DeviceRegistryApi, NewArea, NewDevice,
} from './registry-types.js';

/** Cluster mode: how often each node looks at registry_version (ms). */
export const REGISTRY_POLL_MS = 1_000;
/**
 * Cluster mode: how long a device login waits for the version check. PostgreSQL slow or cut off:
 * the login goes on with the cache (as it is at most one period old plus the outage).
 */
const LOGIN_CHECK_MS = 500;

export interface DeviceRegistryOptions {
  /** The embedded store: its `PRAGMA data_version` and synchronous reloads. Not used in cluster mode. */
  db?: StateDb;
  /** Where the registry's rows live: PostgreSQL in cluster mode; absent: `db` through the port. */
  sql?: Db<unknown>;
  /** Cluster mode: period of the registry_version check (default REGISTRY_POLL_MS). */
  pollMs?: number;
  /** Cluster mode: this node's id, as in `device_sessions` (presence of devices taken over by another node, status.ts). */
  nodeId?: string;
  /** Cluster mode: presence changes of devices connected to other nodes, for this node's live views (status.ts). */
  remoteStatus?: (e: KengEvents['status']) => void;
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
  private readonly db: Db<unknown>;
  private dataVersion = -1;
  /** Cluster mode: the registry_version the caches reflect. */
  private version = -1;
  /** Cluster mode: bumped by each of this node's commits, so a reload read before one is not applied over it. */
  private commits = 0;
  private polling: Promise<void> | null = null;
  private pollFailing = false;
  private timer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;

  constructor(opts: DeviceRegistryOptions) {
    this.opts = opts;
    const { bus, clock, logger, metrics } = opts;
    if (!opts.sql && !opts.db) throw new Error('DeviceRegistry needs a StateDb or a Db');
    this.db = opts.sql ?? stateSqlitePort(opts.db!);
    const verifier = opts.verifier ?? new CredentialVerifier();
    const sync = (): void => this.sync();
    const write = <T>(fn: (trx: Trx) => Promise<T>): Promise<T> => this.write(fn);
    const refresh = (): Promise<void> => this.refresh();
    this.areas = new Areas({ clock, sync, write, refresh });
    this.status = new DeviceStatus({
      bus, metrics, clock, logger, ownsPresence: this.ownsPresence, areaOf: (id) => this.devices.areaOf(id), db: this.db, nodeId: opts.nodeId,
      ...(opts.remoteStatus ? { remoteStatus: opts.remoteStatus } : {}),
    });
    this.devices = new Devices({ bus, clock, areas: this.areas, status: this.status, verifier, sync, write, refresh, onDelete: opts.onDelete ?? 'keep' });
    this.auth = new DeviceAuthentication({ devices: this.devices, verifier, refresh: () => this.refresh() });
  }

  private get ownsPresence(): boolean { return this.opts.ownsPresence !== false; }
  private get cluster(): boolean { return this.db.dialect === 'postgres'; }

  /** The registry's write transaction: on PostgreSQL it also bumps registry_version (other nodes reload). */
  private async write<T>(fn: (trx: Trx) => Promise<T>): Promise<T> {
    if (!this.cluster) return this.db.write(fn);
    let v = -1;
    const out = await this.db.write(async (trx) => {
      const r = await fn(trx);
      v = (await sql<{ v: number }>`UPDATE registry_version SET v = v + 1 WHERE id = 1 RETURNING v`.execute(trx)).rows[0]!.v;
      return r;
    });
    this.commits++;
    // Nothing else committed in between: the cache (which the caller updates now) is that version.
    if (v === this.version + 1) this.version = v;
    return out;
  }

  async start(): Promise<void> {
    this.status.reset();
    this.devices.clear();
    if (this.cluster) {
      await this.reload(false);
    } else {
      const db = this.opts.db!.db;
      this.sql.open(db);
      this.dataVersion = this.sql.q.dataVersion.get() as number;
      this.areas.open(db);
      this.devices.open(db);
      this.areas.reload();
      this.devices.reload(false);
    }
    await this.status.restore();
    if (this.ownsPresence) {
      this.timer = setInterval(() => void this.tick(), this.opts.flushIntervalMs ?? 2000);
      this.timer.unref();
    }
    if (this.cluster) {
      this.pollTimer = setInterval(() => void this.poll().then(() => {
        if (this.pollFailing) this.opts.logger.info('device registry: changes made on other nodes are seen again');
        this.pollFailing = false;
      }, (err: unknown) => {
        // Once per outage: the check runs every second.
        if (!this.pollFailing) this.opts.logger.warn({ err }, 'could not check for device registry changes made on other nodes; serving the cache');
        this.pollFailing = true;
      }), this.opts.pollMs ?? REGISTRY_POLL_MS);
      this.pollTimer.unref();
    }
    this.opts.logger.info({ areas: this.areas.size, devices: this.devices.size }, 'device registry loaded');
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.timer = undefined;
    this.pollTimer = undefined;
    if (this.polling) await settleWithin(this.polling, 2_000); // a check hung on a cut-off database does not hold the stop
    await this.status.close();
    this.devices.close();
    this.areas.close();
    this.sql.close();
  }

  // ---- areas -------------------------------------------------------------

  createArea(input: NewArea): Promise<Area> { return this.areas.createArea(input); }
  listAreas(): Area[] { return this.areas.listAreas(); }
  getArea(code: string): Area | undefined { return this.areas.getArea(code); }
  subtree(code: string): string[] { return this.areas.subtree(code); }

  // ---- devices -----------------------------------------------------------

  createDevice(d: NewDevice): Promise<{ device: Device; credentials: DeviceCredentials }> { return this.devices.createDevice(d); }
  getDevice(id: string): Device | undefined { return this.devices.getDevice(id); }
  listDevices(filter: DeviceFilter = {}): Device[] { return this.devices.listDevices(filter); }
  deleteDevice(id: string, by?: string): Promise<boolean> { return this.devices.deleteDevice(id, by); }
  /** Not in DeviceRegistryApi: purge the readings of a device deleted earlier (false: no such deletion). */
  requestPurge(id: string, by: string, alsoInTx?: (trx: Trx) => Promise<unknown>): Promise<boolean> { return this.devices.requestPurge(id, by, alsoInTx); }
  updateDevice(id: string, changes: DeviceChanges): Promise<Device | undefined> { return this.devices.updateDevice(id, changes); }
  rotateCredential(id: string, kind: CredentialKind): Promise<string | undefined> { return this.devices.rotateCredential(id, kind); }
  /** Not in DeviceRegistryApi. */
  setEnabled(id: string, enabled: boolean): Promise<Device | undefined> { return this.devices.setEnabled(id, enabled); }

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
  isOnlineAnywhere(deviceId: string): boolean { return this.status.isOnlineAnywhere(deviceId); }
  lastSeen(deviceId: string): number | null { return this.status.lastSeen(deviceId); }
  mergeAttributes(deviceId: string, attrs: Record<string, unknown>): void { this.status.mergeAttributes(deviceId, attrs); }
  attributes(deviceId: string): Record<string, unknown> { return this.status.attributes(deviceId); }
  updateLatest(deviceId: string, ts: number, values: Record<string, Scalar>): void { this.status.updateLatest(deviceId, ts, values); }
  latest(deviceId: string): Record<string, LatestValue> { return this.status.latest(deviceId); }
  /** Not in DeviceRegistryApi. Cluster mode: devices a node-lease sweep wrote offline (src/cluster/node-leases.ts). */
  presenceExpired(deviceIds: readonly string[]): void { this.status.presenceExpired(deviceIds, this.opts.clock.now()); }

  // ---- authentication (firmware-protocols/device-protocol.md §1) -------------

  isDevice(id: string): boolean { return this.auth.isDevice(id); }
  authenticate(username: string, password: Buffer | undefined): Promise<AuthResult> { return this.auth.authenticate(username, password); }

  // ---- persistence -------------------------------------------------------

  /** Writes dirty presence/latest rows in one transaction. Returns the number of rows written. */
  flush(): Promise<number> { return this.status.flush(); }

  private async tick(): Promise<void> {
    try {
      this.sync();
    } catch (err) {
      this.opts.logger.warn({ err }, 'could not reload devices changed by another process');
    }
    await this.status.flush();
  }

  /** Embedded store: reloads areas and devices when another connection committed since we last looked. */
  private sync(): void {
    if (!this.sql.isOpen) return;
    const v = this.sql.q.dataVersion.get() as number;
    if (v === this.dataVersion) return;
    this.dataVersion = v;
    this.areas.reload();
    this.devices.reload(true);
  }

  /** Before a login or a change: the embedded store's sync(), or a version check in cluster mode (failing or slow: the cache). */
  private async refresh(): Promise<void> {
    if (!this.cluster) { this.sync(); return; }
    await withTimeout(this.poll(), LOGIN_CHECK_MS).catch(() => undefined); // the periodic check logs failures
  }

  /** Cluster mode: one SELECT of registry_version; a reload when it moved. One at a time (callers share it). */
  private poll(): Promise<void> {
    this.polling ??= (async () => {
      try {
        const r = await sql<{ v: number }>`SELECT v FROM registry_version WHERE id = 1`.execute(this.db.kysely);
        if (r.rows[0]?.v !== this.version) await this.reload(true);
      } finally {
        this.polling = null;
      }
    })();
    return this.polling;
  }

  /** Cluster mode: areas, devices and the version in one snapshot, applied unless this node committed meanwhile. */
  private async reload(emit: boolean): Promise<void> {
    const commits = this.commits;
    const snap = await this.db.snapshot(async (trx) => {
      const v = (await sql<{ v: number }>`SELECT v FROM registry_version WHERE id = 1`.execute(trx)).rows[0]?.v ?? 0;
      return { v, areas: await readAreas(trx), devices: await readDevices(trx) };
    });
    // A commit of ours after the snapshot began is in the cache but maybe not in the snapshot: the next poll reloads.
    if (commits !== this.commits && emit) return;
    this.areas.load(snap.areas);
    this.devices.load(snap.devices, emit);
    this.version = snap.v;
  }
}

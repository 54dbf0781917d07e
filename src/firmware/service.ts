/**
 * Firmware updates over the air, the ThingsBoard way (firmware-protocols/
 * device-protocol.md §13.6), so ThingsBoard SDK firmware (Arduino/ESP32 OTA,
 * the Python SDK's get_firmware_update) updates unchanged:
 *
 * - Packages: a binary for a device model, with the title and version
 *   firmware compares with its own and a checksum (SHA256, SHA384, SHA512,
 *   MD5 or CRC32) it verifies; stored as <dataDir>/firmware/<id>.bin (0600).
 * - Assignment: a device's package shows in its shared attributes (a layer
 *   of src/attributes) as fw_title, fw_version, fw_checksum,
 *   fw_checksum_algorithm, fw_size: pushed to it when assigned, and in
 *   answers to its attribute requests.
 * - Download: `v2/fw/request/{n}/chunk/{k}` with the chunk size as payload
 *   (chunk()), answered on `v2/fw/response/{n}/chunk/{k}`; also over a signed
 *   HTTP link (signedPath()).
 * - Staged rollout: a package for a set of devices goes first to `percent`
 *   of them (a stable pseudo-random pick: sha256 of rollout id and device
 *   id), then, when staff continue it, to the rest.
 * - State: what the device reports (`fw_state`, `fw_error`,
 *   `current_fw_title`, `current_fw_version`, as telemetry or attributes) is
 *   kept per device; a rollout's progress counts its devices by state.
 *
 * Storage: the state `Db` port (repo.ts), so in cluster mode every node shares
 * the packages, rollouts, assignments and device states (PostgreSQL). What the
 * API shows is read from the database. The synchronous paths (the fw_* layer of
 * the shared attributes, chunk downloads) read an in-memory copy of the
 * packages and assignments, updated by this node's own writes and, in cluster
 * mode, reloaded every `reloadMs` (5 s): a rollout made on another node reaches
 * this node's copy, and its connected devices get the fw_* push, within that
 * interval (docs/cluster.md).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import path from 'node:path';
import type { Transaction } from 'kysely';
import type { Registry } from 'prom-client';
import type { SharedAttributes } from '../attributes/index.js';
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import type { EventBus, KengEvents } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import { tightenMode } from '../core/private-files.js';
import { randomBase62 } from '../core/random.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import { UrlSigner, loadOrCreateKey, sharedSigningKey } from '../media/signing.js';
import type { SharedSecrets } from '../storage/secrets/index.js';
import type { Db } from '../storage/sql/index.js';
import { CHECKSUM_ALGORITHMS, checksum, type ChecksumAlgorithm } from './checksum.js';
import { PackageFiles } from './files.js';
import { FirmwareRepo, type StateReport } from './repo.js';
import type { Assignment, FirmwarePackage, Rollout } from './types.js';
import { FirmwareView, deviceFirmwareOf, type DeviceFirmware } from './view.js';

export type { DeviceFirmware };

export const MAX_PACKAGE_BYTES = 16 * 1024 * 1024;
export const SIGNED_URL_TTL_SEC = 3600;
/** Cluster mode: how often a node reloads packages and assignments written by the others. */
export const CLUSTER_RELOAD_MS = 5_000;
const TITLE_RE = /^[\p{L}\p{N}][\p{L}\p{N} ._+-]{0,63}$/u;

export interface NewPackage {
  title: string; version: string; model?: string | null;
  checksumAlgorithm?: ChecksumAlgorithm;
  /** When given, what the upload must hash to (catches a corrupted upload). */
  checksum?: string;
}

/** Runs inside the write transaction of a change, with what it made (an audit entry: committed with it or not at all). */
export type InTransaction<T> = (trx: Transaction<unknown>, value: T) => Promise<unknown>;

export interface FirmwareDeps {
  /** The state store: the embedded state.db, or PostgreSQL in cluster mode. */
  db: Db<unknown>;
  dataDir: string;
  registry: Pick<DeviceRegistryApi, 'getDevice'>;
  attributes: Pick<SharedAttributes, 'addLayer' | 'changing'>;
  bus: Pick<EventBus, 'on'>;
  logger: Logger;
  clock: Clock;
  metrics?: Registry;
  /** Reload of packages and assignments written by other nodes; 0: never. Default: CLUSTER_RELOAD_MS on PostgreSQL, 0 on SQLite (one writer). */
  reloadMs?: number;
  /** Cluster mode: the link-signing key is the cluster's (sealed in PostgreSQL), not <dataDir>/firmware-signing.key. */
  secrets?: SharedSecrets;
}

/** The firmware link-signing key's file under the data directory (embedded mode), and its row in `cluster_secrets` (cluster mode). */
export const FIRMWARE_SIGNING_KEY_FILE = 'firmware-signing.key';
export const FIRMWARE_SIGNING_SECRET = 'firmware-signing';

/** What chunk() answers: bytes to send, or a ThingsBoard error word for `v2/fw/error`. */
export type ChunkAnswer = { ok: true; payload: Buffer } | { ok: false; error: string };

/** SQLite's and PostgreSQL's words for a broken unique key or foreign key. */
function constraint(err: unknown): 'unique' | 'foreign-key' | undefined {
  const code = (err as { code?: unknown }).code;
  if (code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') return 'unique';
  if (code === '23503' || code === 'SQLITE_CONSTRAINT_FOREIGNKEY') return 'foreign-key';
  return undefined;
}

export class Firmware implements Component {
  readonly name = 'firmware';
  private readonly repo: FirmwareRepo;
  private readonly files: PackageFiles;
  /** The synchronous paths' copy (see the header). */
  private assignments = new Map<string, Assignment>();
  private packages = new Map<string, FirmwarePackage>();
  /** Bumped by every change of the copy made here: a reload that began before it is out of date and is dropped. */
  private changes = 0;
  private reloadTimer: NodeJS.Timeout | undefined;
  private reloading: Promise<void> | undefined;
  private reloadFailing = false;
  private signer: UrlSigner | undefined;
  private readonly off: Array<() => void> = [];
  /** Reports being stored, per device: one device's reports are stored in the order they came. */
  private readonly reporting = new Map<string, Promise<void>>();
  /** Chunk size last asked per device and request id (ThingsBoard: an empty payload repeats it). */
  private readonly chunkSizes = new Map<string, number>();

  constructor(private readonly deps: FirmwareDeps) {
    this.repo = new FirmwareRepo(deps.db);
    this.files = new PackageFiles(deps.dataDir, deps.logger, deps.metrics);
  }

  async start(): Promise<void> {
    this.files.start();
    const keyFile = path.join(this.deps.dataDir, FIRMWARE_SIGNING_KEY_FILE);
    tightenMode(keyFile); // 0600 whatever a copy or a restore left
    // Cluster mode: a link made by one node is checked by whichever node the download reaches.
    this.signer = new UrlSigner(this.deps.secrets
      ? await sharedSigningKey(this.deps.secrets, FIRMWARE_SIGNING_SECRET, 'firmware link-signing key', keyFile, this.deps.logger)
      : loadOrCreateKey(keyFile));
    const [packages, assignments] = await Promise.all([this.repo.packages(), this.repo.assignments()]);
    this.packages = new Map(packages.map((p) => [p.id, p]));
    this.assignments = new Map(assignments.map((a) => [a.deviceId, a]));
    this.deps.attributes.addLayer({ name: 'firmware', values: (id) => this.sharedValues(id) });
    this.off.push(this.deps.bus.on('telemetry', (e) => this.report(e.deviceId, e.values)));
    this.off.push(this.deps.bus.on('attributes', (e: KengEvents['attributes']) => this.report(e.deviceId, e.attributes)));
    this.off.push(this.deps.bus.on('device.changed', (e) => {
      if (e.change !== 'deleted') return;
      this.changes++;
      this.assignments.delete(e.deviceId);
      // SQLite's foreign keys deleted its rows with the device; PostgreSQL has none to the devices.
      if (this.deps.db.dialect === 'postgres') {
        (this.reporting.get(e.deviceId) ?? Promise.resolve()).then(() => this.repo.forgetDevice(e.deviceId)).catch((err: unknown) => this.deps.logger.warn({ err, deviceId: e.deviceId }, 'firmware rows of a deleted device not deleted'));
      }
    }));
    const every = this.deps.reloadMs ?? (this.deps.db.dialect === 'postgres' ? CLUSTER_RELOAD_MS : 0);
    if (every > 0) {
      this.reloadTimer = setInterval(() => { this.reloading ??= this.reload().finally(() => { this.reloading = undefined; }); }, every);
      this.reloadTimer.unref();
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.reloadTimer);
    this.reloadTimer = undefined;
    for (const f of this.off.splice(0)) f();
    await this.reloading;
    await Promise.all(this.reporting.values());
    this.files.stop();
  }

  /**
   * Packages and assignments as the database has them now (other nodes'
   * changes); the devices connected here whose fw_* changed get the push.
   */
  async reload(): Promise<void> {
    const mark = this.changes;
    let packages: FirmwarePackage[];
    let assignments: Assignment[];
    try {
      [packages, assignments] = await Promise.all([this.repo.packages(), this.repo.assignments()]);
    } catch (err) {
      if (!this.reloadFailing) this.deps.logger.warn({ err }, 'firmware: reloading packages and assignments failed; retrying');
      this.reloadFailing = true;
      return;
    }
    if (this.reloadFailing) this.deps.logger.info('firmware: reloading packages and assignments works again');
    this.reloadFailing = false;
    if (mark !== this.changes) return; // a change made here meanwhile: the next reload sees it too
    const nextPackages = new Map(packages.map((p) => [p.id, p]));
    const nextAssignments = new Map(assignments.map((a) => [a.deviceId, a]));
    const fw = (a: Assignment | undefined, pk: Map<string, FirmwarePackage>): string => {
      const p = a && pk.get(a.packageId);
      return a ? `${a.rolloutId}\n${a.assignedAt}\n${p ? JSON.stringify(p) : ''}` : '';
    };
    const changed = [...new Set([...this.assignments.keys(), ...nextAssignments.keys()])]
      .filter((d) => fw(this.assignments.get(d), this.packages) !== fw(nextAssignments.get(d), nextPackages));
    this.deps.attributes.changing(changed, () => {
      this.packages = nextPackages;
      this.assignments = nextAssignments;
    });
  }

  // ---------------------------------------------------------------- packages

  listPackages(): Promise<FirmwarePackage[]> { return this.repo.packages(); }
  getPackage(id: string): Promise<FirmwarePackage | undefined> { return this.repo.package(id); }

  /**
   * Stores an uploaded binary (the file first, then its row). Throws VALIDATION (400), CONFLICT (409: same
   * title and version), UNPROCESSABLE (422: checksum mismatch).
   */
  async addPackage(input: NewPackage, data: Buffer, createdBy: string | null, also?: InTransaction<FirmwarePackage>): Promise<FirmwarePackage> {
    const title = input.title.trim();
    const version = input.version.trim();
    if (!TITLE_RE.test(title)) throw Errors.VALIDATION('title: 1 to 64 letters, digits, spaces and . _ + -');
    if (!TITLE_RE.test(version)) throw Errors.VALIDATION('version: 1 to 64 letters, digits, spaces and . _ + -');
    const alg = input.checksumAlgorithm ?? 'SHA256';
    if (!CHECKSUM_ALGORITHMS.includes(alg)) throw Errors.VALIDATION(`checksumAlgorithm: one of ${CHECKSUM_ALGORITHMS.join(', ')}`);
    if (data.length === 0) throw Errors.VALIDATION('the package is empty');
    if (data.length > MAX_PACKAGE_BYTES) throw Errors.PAYLOAD_TOO_LARGE(`a firmware package is at most ${MAX_PACKAGE_BYTES} bytes`);
    const sum = checksum(data, alg);
    if (input.checksum !== undefined && input.checksum.trim().toLowerCase() !== sum) {
      throw Errors.UNPROCESSABLE(`the upload's ${alg} is ${sum}, not ${input.checksum}: it was corrupted or is another file`);
    }
    const exists = (): Error => Errors.CONFLICT(`a package "${title}" version "${version}" exists`);
    if (await this.repo.packageByTitle(title, version)) throw exists();
    const p: FirmwarePackage = {
      id: `fw_${randomBase62(16)}`, title, version, model: input.model?.trim() || null, size: data.length,
      checksumAlgorithm: alg, checksum: sum, sha256: createHash('sha256').update(data).digest('hex'),
      createdAt: this.deps.clock.now(), createdBy,
    };
    this.files.write(p.id, data);
    try {
      await this.repo.insertPackage(p, also && ((trx) => also(trx, p)));
    } catch (err) {
      void this.files.remove(p.id);
      if (constraint(err) === 'unique') throw exists(); // the same title and version uploaded meanwhile (another node)
      throw err;
    }
    this.changes++;
    this.packages.set(p.id, p);
    return p;
  }

  /** False when there is no such package. Throws CONFLICT while a rollout or a device assignment names it. */
  async deletePackage(id: string, also?: InTransaction<string>): Promise<boolean> {
    const done = await this.repo.deletePackage(id, also && ((trx) => also(trx, id)));
    if (done === 'missing') return false;
    if (done === 'in-use') throw Errors.CONFLICT('the package is part of a rollout: it stays while devices may still download it');
    this.changes++;
    this.packages.delete(id);
    await this.files.remove(id);
    return true;
  }

  /** The package's bytes. Throws FIRMWARE_FILE_MISSING (503) when this node has no file for it (cluster mode, files.ts). */
  read(id: string): Promise<Buffer> { return this.files.read(id); }

  /** `/firmware/<id>/file?exp=&sig=`: a link to the binary valid for `ttlSec` (no bearer token needed). */
  signedPath(id: string, ttlSec = SIGNED_URL_TTL_SEC): { path: string; expiresAt: number } {
    const exp = Math.floor(this.deps.clock.now() / 1000) + ttlSec;
    return { path: `/firmware/${encodeURIComponent(id)}/file?exp=${exp}&sig=${this.signer!.sign(id, exp)}`, expiresAt: exp * 1000 };
  }

  verifyLink(id: string, exp: number, sig: string): 'ok' | 'bad-signature' | 'expired' {
    const want = Buffer.from(this.signer!.sign(id, exp));
    const got = Buffer.from(sig);
    if (got.length !== want.length || !timingSafeEqual(got, want)) return 'bad-signature';
    return exp * 1000 < this.deps.clock.now() ? 'expired' : 'ok';
  }

  // ---------------------------------------------------------------- assignment

  private sharedValues(deviceId: string): Record<string, unknown> | undefined {
    const a = this.assignments.get(deviceId);
    const p = a && this.packages.get(a.packageId);
    if (!p) return undefined;
    return { fw_title: p.title, fw_version: p.version, fw_checksum: p.checksum, fw_checksum_algorithm: p.checksumAlgorithm, fw_size: p.size };
  }

  /** The device's assignment as this node's copy has it (what its fw_* attributes say here). */
  assignmentOf(deviceId: string): Assignment | undefined { return this.assignments.get(deviceId); }

  /** Puts assignments made here into the copy; the connected devices among them get the fw_* push. */
  private assigned(devices: string[], packageId: string, rolloutId: string, at: number, pkg: FirmwarePackage): void {
    this.changes++;
    this.deps.attributes.changing(devices, () => {
      this.packages.set(pkg.id, pkg);
      for (const d of devices) this.assignments.set(d, { deviceId: d, packageId, rolloutId, assignedAt: at });
    });
  }

  /**
   * Makes a rollout of a package to `deviceIds` (already checked by the
   * caller: registered, in scope): the first `percent` of them, picked
   * stably, get it now (fw_* pushed), the rest when continueRollout() runs.
   */
  async createRollout(packageId: string, deviceIds: string[], percent: number, createdBy: string | null, also?: InTransaction<Rollout>): Promise<Rollout> {
    const pkg = await this.repo.package(packageId);
    const gone = (): Error => Errors.UNPROCESSABLE(`package "${packageId}" does not exist`);
    if (!pkg) throw gone();
    if (!Number.isInteger(percent) || percent < 1 || percent > 100) throw Errors.VALIDATION('percent: an integer from 1 to 100');
    const unique = [...new Set(deviceIds)];
    if (unique.length === 0) throw Errors.UNPROCESSABLE('the target has no devices');
    const id = `ro_${randomBase62(16)}`;
    const order = (d: string): string => createHash('sha256').update(`${id}:${d}`).digest('hex');
    const devices = unique.map((d) => [order(d), d] as const).sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([, d]) => d);
    const firstCount = Math.min(devices.length, Math.max(1, Math.ceil((devices.length * percent) / 100)));
    const at = this.deps.clock.now();
    const areas = [...new Set(devices.map((d) => this.deps.registry.getDevice(d)?.area).filter((a): a is string => !!a))];
    const r: Rollout = {
      id, packageId, percent, devices, firstCount, areas, stage: percent === 100 ? 'all' : 'first', createdAt: at, createdBy, completedAt: percent === 100 ? at : null,
    };
    try {
      await this.repo.insertRollout(r, at, also && ((trx) => also(trx, r)));
    } catch (err) {
      if (constraint(err) === 'foreign-key') throw gone(); // deleted meanwhile (another node)
      throw err;
    }
    this.assigned(r.stage === 'all' ? devices : devices.slice(0, firstCount), packageId, id, at, pkg);
    return r;
  }

  /** The second stage: the rest of the rollout's devices get the package. CONFLICT when it was complete. */
  async continueRollout(id: string, also?: InTransaction<Rollout>): Promise<Rollout> {
    const r = await this.repo.rollout(id);
    if (!r) throw Errors.NOT_FOUND(`Rollout "${id}"`);
    const complete = (): Error => Errors.CONFLICT('the rollout already reached all its devices');
    if (r.stage === 'all') throw complete();
    const pkg = await this.repo.package(r.packageId);
    const rest = r.devices.slice(r.firstCount).filter((d) => this.deps.registry.getDevice(d));
    const at = this.deps.clock.now();
    const done = await this.repo.completeRollout(r, rest, at, also && ((trx) => also(trx, r)));
    if (!done) throw complete(); // continued meanwhile (another request or node)
    if (pkg) this.assigned(rest, r.packageId, id, at, pkg);
    return done;
  }

  listRollouts(): Promise<Rollout[]> { return this.repo.rollouts(); }
  getRollout(id: string): Promise<Rollout | undefined> { return this.repo.rollout(id); }

  // ---------------------------------------------------------------- state

  /** A device's update: its assignment and what it last reported (from the database: every node's reports). */
  async deviceFirmware(deviceId: string): Promise<DeviceFirmware> {
    const { assignment, state } = await this.repo.device(deviceId);
    const pkg = assignment && await this.repo.package(assignment.packageId);
    return deviceFirmwareOf(deviceId, assignment, state, new Map(pkg ? [[pkg.id, pkg]] : []));
  }

  /** Every device's update at once (rollout progress). */
  async view(): Promise<FirmwareView> {
    const [assignments, states, packages] = await Promise.all([this.repo.assignments(), this.repo.states(), this.repo.packages()]);
    return new FirmwareView(new Map(assignments.map((a) => [a.deviceId, a])), new Map(states.map((s) => [s.deviceId, s])), new Map(packages.map((p) => [p.id, p])));
  }

  /** Telemetry or attributes of a device: the firmware keys ThingsBoard firmware reports. */
  private report(deviceId: string, values: Record<string, unknown>): void {
    // Runs for every telemetry event: the common case (no firmware field) allocates nothing. The rest
    // is a method of its own because its closures would make V8 allocate their context on every
    // call, before this test (measured: ~80 bytes per telemetry message).
    if (!Object.hasOwn(values, 'fw_state') && !Object.hasOwn(values, 'current_fw_title')
      && !Object.hasOwn(values, 'current_fw_version') && !Object.hasOwn(values, 'fw_error')) return;
    this.reportState(deviceId, values);
  }

  private reportState(deviceId: string, values: Record<string, unknown>): void {
    const has = (k: string): boolean => Object.hasOwn(values, k);
    const str = (k: string): string | null | undefined => (has(k) ? (values[k] === null ? null : String(values[k]).slice(0, 256)) : undefined);
    const s: StateReport = {
      deviceId, state: str('fw_state'), error: str('fw_error'), currentTitle: str('current_fw_title'), currentVersion: str('current_fw_version'),
      at: this.deps.clock.now(),
    };
    const before = this.reporting.get(deviceId) ?? Promise.resolve();
    const stored: Promise<void> = before.then(() => this.repo.putState(s)).then(() => undefined, (err: unknown) => {
      // A device deleted meanwhile (embedded store: foreign key): nothing to keep. Otherwise the database failed.
      if (constraint(err) === 'foreign-key') this.deps.logger.debug({ err, deviceId }, 'firmware state not stored');
      else this.deps.logger.warn({ err, deviceId }, 'firmware state not stored');
    }).finally(() => { if (this.reporting.get(deviceId) === stored) this.reporting.delete(deviceId); });
    this.reporting.set(deviceId, stored);
  }

  /** Resolves when every report received so far is stored (or given up). */
  async settled(): Promise<void> { await Promise.all(this.reporting.values()); }

  // ---------------------------------------------------------------- MQTT download

  /**
   * One chunk of the device's assigned package, as ThingsBoard serves it:
   * `size` is the request's payload (the chunk size as decimal text; empty
   * or 0: the size this request id asked before, else the whole file),
   * `index` the chunk number; past the end, an empty payload. No package
   * assigned: the error word `NOT_FOUND`; a size above `maxBytes`:
   * `PAYLOAD_TOO_LARGE` (ThingsBoard's words on `v2/fw/error`).
   */
  async chunk(deviceId: string, requestId: string, payload: Buffer, index: number, maxBytes: number): Promise<ChunkAnswer> {
    const a = this.assignments.get(deviceId);
    const p = a && this.packages.get(a.packageId);
    if (!p) return { ok: false, error: 'NOT_FOUND' };
    // The Python SDK JSON-encodes its payload ("4096", or "" for the whole file): accept both forms.
    const text = payload.toString('utf8').trim().replace(/^"(.*)"$/, '$1').trim();
    let size = /^\d{1,9}$/.test(text) ? Number(text) : 0;
    const key = `${deviceId}\n${requestId}`;
    if (size > 0) {
      this.chunkSizes.set(key, size);
      if (this.chunkSizes.size > 10_000) this.chunkSizes.delete(this.chunkSizes.keys().next().value!);
    } else {
      size = this.chunkSizes.get(key) ?? 0;
    }
    if (size > maxBytes) return { ok: false, error: 'PAYLOAD_TOO_LARGE' };
    let data: Buffer;
    try {
      data = await this.files.read(p.id);
    } catch (err) {
      // Counted and logged by files.ts; the device may try again (on another node, which may have the file).
      if ((err as { code?: string }).code === 'KENG_ERR_FIRMWARE_FILE_MISSING') return { ok: false, error: 'FAILURE' };
      throw err;
    }
    if (size === 0) return { ok: true, payload: index === 0 ? data : Buffer.alloc(0) };
    const start = index * size;
    return { ok: true, payload: start >= data.length ? Buffer.alloc(0) : data.subarray(start, Math.min(data.length, start + size)) };
  }
}

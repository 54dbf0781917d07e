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
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { SharedAttributes } from '../attributes/index.js';
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import type { EventBus, KengEvents } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import { tightenMode, writePrivateFileAtomic } from '../core/private-files.js';
import { randomBase62 } from '../core/random.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import { UrlSigner, loadOrCreateKey } from '../media/signing.js';
import type { SqliteDatabase } from '../storage/state/index.js';
import { CHECKSUM_ALGORITHMS, checksum, type ChecksumAlgorithm } from './checksum.js';
import { FirmwareRepo } from './repo.js';
import type { Assignment, DeviceFwState, FirmwarePackage, Rollout } from './types.js';

export const MAX_PACKAGE_BYTES = 16 * 1024 * 1024;
export const SIGNED_URL_TTL_SEC = 3600;
const TITLE_RE = /^[\p{L}\p{N}][\p{L}\p{N} ._+-]{0,63}$/u;
const CACHE_BYTES = 64 * 1024 * 1024;

export interface NewPackage {
  title: string; version: string; model?: string | null;
  checksumAlgorithm?: ChecksumAlgorithm;
  /** When given, what the upload must hash to (catches a corrupted upload). */
  checksum?: string;
}

export interface FirmwareDeps {
  db: () => SqliteDatabase;
  dataDir: string;
  registry: Pick<DeviceRegistryApi, 'getDevice'>;
  attributes: Pick<SharedAttributes, 'addLayer' | 'changing'>;
  bus: Pick<EventBus, 'on'>;
  logger: Logger;
  clock: Clock;
}

/** A device's update as the API shows it. */
export interface DeviceFirmware {
  deviceId: string;
  /** The package assigned (null: none). */
  packageId: string | null;
  rolloutId: string | null;
  /** `PENDING` until the device reports after its assignment; then its fw_state (UPDATED when it runs the package). */
  state: string;
  error: string | null;
  currentTitle: string | null;
  currentVersion: string | null;
  reportedAt: number | null;
}

/** What chunk() answers: bytes to send, or a ThingsBoard error word for `v2/fw/error`. */
export type ChunkAnswer = { ok: true; payload: Buffer } | { ok: false; error: string };

export class Firmware implements Component {
  readonly name = 'firmware';
  private readonly repo: FirmwareRepo;
  private readonly dir: string;
  private assignments = new Map<string, Assignment>();
  private states = new Map<string, DeviceFwState>();
  private packages = new Map<string, FirmwarePackage>();
  private readonly cache = new Map<string, Buffer>();
  private signer: UrlSigner | undefined;
  private readonly off: Array<() => void> = [];
  /** Chunk size last asked per device and request id (ThingsBoard: an empty payload repeats it). */
  private readonly chunkSizes = new Map<string, number>();

  constructor(private readonly deps: FirmwareDeps) {
    this.repo = new FirmwareRepo(deps.db);
    this.dir = path.join(deps.dataDir, 'firmware');
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const keyFile = path.join(this.deps.dataDir, 'firmware-signing.key');
    tightenMode(keyFile); // 0600 whatever a copy or a restore left
    this.signer = new UrlSigner(loadOrCreateKey(keyFile));
    this.packages = new Map(this.repo.packages().map((p) => [p.id, p]));
    this.assignments = new Map(this.repo.assignments().map((a) => [a.deviceId, a]));
    this.states = new Map(this.repo.states().map((s) => [s.deviceId, s]));
    this.deps.attributes.addLayer({ name: 'firmware', values: (id) => this.sharedValues(id) });
    this.off.push(this.deps.bus.on('telemetry', (e) => this.report(e.deviceId, e.values)));
    this.off.push(this.deps.bus.on('attributes', (e: KengEvents['attributes']) => this.report(e.deviceId, e.attributes)));
    this.off.push(this.deps.bus.on('device.changed', (e) => {
      if (e.change !== 'deleted') return;
      this.assignments.delete(e.deviceId);
      this.states.delete(e.deviceId);
    }));
  }

  async stop(): Promise<void> {
    for (const f of this.off.splice(0)) f();
    this.cache.clear();
  }

  // ---------------------------------------------------------------- packages

  listPackages(): FirmwarePackage[] { return [...this.packages.values()].sort((a, b) => b.createdAt - a.createdAt || a.id.localeCompare(b.id)); }
  getPackage(id: string): FirmwarePackage | undefined { return this.packages.get(id); }

  /** Stores an uploaded binary. Throws VALIDATION (400), CONFLICT (409: same title and version), UNPROCESSABLE (422: checksum mismatch). */
  addPackage(input: NewPackage, data: Buffer, createdBy: string | null): FirmwarePackage {
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
    if (this.repo.packageByTitle(title, version)) throw Errors.CONFLICT(`a package "${title}" version "${version}" exists`);
    const p: FirmwarePackage = {
      id: `fw_${randomBase62(16)}`, title, version, model: input.model?.trim() || null, size: data.length,
      checksumAlgorithm: alg, checksum: sum, sha256: createHash('sha256').update(data).digest('hex'),
      createdAt: this.deps.clock.now(), createdBy,
    };
    writePrivateFileAtomic(this.file(p.id), data);
    try {
      this.repo.insertPackage(p);
    } catch (err) {
      void rm(this.file(p.id), { force: true });
      throw err;
    }
    this.packages.set(p.id, p);
    return p;
  }

  /** Throws CONFLICT while a rollout or a device assignment names it. */
  async deletePackage(id: string): Promise<boolean> {
    if (!this.packages.has(id)) return false;
    if (!this.repo.deletePackage(id)) throw Errors.CONFLICT('the package is part of a rollout: it stays while devices may still download it');
    this.packages.delete(id);
    this.cache.delete(id);
    await rm(this.file(id), { force: true });
    return true;
  }

  private file(id: string): string { return path.join(this.dir, `${id}.bin`); }

  /** The package's bytes (kept in memory while a rollout downloads it). */
  async read(id: string): Promise<Buffer> {
    const hit = this.cache.get(id);
    if (hit) return hit;
    const data = await readFile(this.file(id));
    let total = data.length;
    for (const b of this.cache.values()) total += b.length;
    while (total > CACHE_BYTES && this.cache.size) {
      const [k, b] = this.cache.entries().next().value as [string, Buffer];
      this.cache.delete(k);
      total -= b.length;
    }
    this.cache.set(id, data);
    return data;
  }

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

  assignmentOf(deviceId: string): Assignment | undefined { return this.assignments.get(deviceId); }

  /**
   * Makes a rollout of a package to `deviceIds` (already checked by the
   * caller: registered, in scope): the first `percent` of them, picked
   * stably, get it now (fw_* pushed), the rest when continueRollout() runs.
   */
  createRollout(packageId: string, deviceIds: string[], percent: number, createdBy: string | null): Rollout {
    if (!this.packages.has(packageId)) throw Errors.UNPROCESSABLE(`package "${packageId}" does not exist`);
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
    const now = r.stage === 'all' ? devices : devices.slice(0, firstCount);
    this.deps.attributes.changing(now, () => {
      this.repo.insertRollout(r, at);
      for (const d of now) this.assignments.set(d, { deviceId: d, packageId, rolloutId: id, assignedAt: at });
    });
    return r;
  }

  /** The second stage: the rest of the rollout's devices get the package. CONFLICT when it was complete. */
  continueRollout(id: string): Rollout {
    const r = this.repo.rollout(id);
    if (!r) throw Errors.NOT_FOUND(`Rollout "${id}"`);
    if (r.stage === 'all') throw Errors.CONFLICT('the rollout already reached all its devices');
    const rest = r.devices.slice(r.firstCount).filter((d) => this.deps.registry.getDevice(d));
    const at = this.deps.clock.now();
    this.deps.attributes.changing(rest, () => {
      if (!this.repo.completeRollout(r, rest, at)) throw Errors.CONFLICT('the rollout already reached all its devices');
      for (const d of rest) this.assignments.set(d, { deviceId: d, packageId: r.packageId, rolloutId: id, assignedAt: at });
    });
    return this.repo.rollout(id)!;
  }

  listRollouts(): Rollout[] { return this.repo.rollouts(); }
  getRollout(id: string): Rollout | undefined { return this.repo.rollout(id); }

  // ---------------------------------------------------------------- state

  /** A device's update: its assignment and what it last reported. */
  deviceFirmware(deviceId: string): DeviceFirmware {
    const a = this.assignments.get(deviceId);
    const s = this.states.get(deviceId);
    const p = a && this.packages.get(a.packageId);
    let state = 'NONE';
    if (p) {
      if (s?.currentTitle === p.title && s.currentVersion === p.version) state = 'UPDATED';
      else if (s && s.updatedAt >= a.assignedAt && s.state) state = s.state;
      else state = 'PENDING';
    } else if (s?.state) {
      state = s.state;
    }
    return {
      deviceId, packageId: a?.packageId ?? null, rolloutId: a?.rolloutId ?? null, state, error: s?.error || null,
      currentTitle: s?.currentTitle ?? null, currentVersion: s?.currentVersion ?? null, reportedAt: s?.updatedAt ?? null,
    };
  }

  /** Telemetry or attributes of a device: the firmware keys ThingsBoard firmware reports. */
  private report(deviceId: string, values: Record<string, unknown>): void {
    const has = (k: string): boolean => Object.hasOwn(values, k);
    if (!has('fw_state') && !has('current_fw_title') && !has('current_fw_version') && !has('fw_error')) return;
    const str = (k: string, keep: string | null): string | null => (has(k) ? (values[k] === null ? null : String(values[k]).slice(0, 256)) : keep);
    const prev = this.states.get(deviceId);
    const s: DeviceFwState = {
      deviceId,
      state: str('fw_state', prev?.state ?? null),
      error: str('fw_error', has('fw_state') ? null : prev?.error ?? null),
      currentTitle: str('current_fw_title', prev?.currentTitle ?? null),
      currentVersion: str('current_fw_version', prev?.currentVersion ?? null),
      updatedAt: this.deps.clock.now(),
    };
    try {
      this.repo.putState(s);
      this.states.set(deviceId, s);
    } catch (err) {
      // A device deleted meanwhile (foreign key): nothing to keep.
      this.deps.logger.debug({ err, deviceId }, 'firmware state not stored');
    }
  }

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
    const data = await this.read(p.id);
    if (size === 0) return { ok: true, payload: index === 0 ? data : Buffer.alloc(0) };
    const start = index * size;
    return { ok: true, payload: start >= data.length ? Buffer.alloc(0) : data.subarray(start, Math.min(data.length, start + size)) };
  }
}

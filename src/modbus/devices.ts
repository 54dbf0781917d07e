/**
 * Modbus devices in the registry: a registered device (devices table, via the
 * device registry) plus its transport, register map and poll interval (the
 * modbus_devices side table). The API and the CLI register and change them
 * here; the poller reads them.
 *
 * Rules beyond the shapes (map-schema.ts):
 *  - a shipped map must exist (422);
 *  - a loudspeaker is not polled over Modbus (422);
 *  - devices on one serial line share its baud rate and parity, and two
 *    devices never share one unit id on one line or gateway (409): either
 *    would make the bus answer for the wrong device.
 */
import { Type } from 'typebox';
import { Compile } from 'typebox/compile';
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import { shapeErrors, type FieldError } from '../core/schema.js';
import type { Device, DeviceCredentials, DevicesApi, NewDevice } from '../devices/index.js';
import type { Db } from '../storage/sql/index.js';
import { PollIntervalSec, RegisterMapRef, Transport, checkMap, validationError } from './map-schema.js';
import type { MapCatalog } from './maps.js';
import { ModbusRepo } from './repo.js';
import { lineKey, type ModbusSettings, type ModbusTransport, type RegisterMap } from './types.js';

/** Poll interval when a device is registered without one. */
export const DEFAULT_POLL_INTERVAL_SEC = 60;
/** Serial devices Modbus devices may name unless configured otherwise. */
export const DEFAULT_SERIAL_PATH_PREFIXES: readonly string[] = ['/dev/tty', '/dev/serial/'];

/** The Modbus part of a registration (POST /api/v1/devices, `keng devices add`). */
export interface ModbusInput { transport: unknown; registerMap: unknown; pollIntervalSec?: unknown }
export type ModbusChanges = Partial<ModbusInput>;

const Fields = Compile(Type.Object({ transport: Transport, registerMap: RegisterMapRef, pollIntervalSec: PollIntervalSec }));

export interface ModbusDevicesDeps {
  /** The state store (embedded SQLite, or PostgreSQL in cluster mode). */
  db: Db<unknown>;
  registry: Pick<DevicesApi, 'createDevice' | 'getDevice' | 'deleteDevice'>;
  catalog: MapCatalog;
  clock: Clock;
  /**
   * Serial devices a Modbus device may name (path prefixes, config
   * modbus.serialPathPrefixes): staff who register sensors must not make
   * Keng open arbitrary files.
   */
  serialPathPrefixes?: readonly string[];
  /** A stored row that does not parse (never written by Keng; reported, then skipped). */
  onBadRow?: (deviceId: string, err: unknown) => void;
  /** Cluster mode: which node holds each line's lease now, by line key (lease-repo.ts lineHolders). */
  lineHolders?: () => Promise<ReadonlyMap<string, string>>;
}

export class ModbusDevices {
  readonly catalog: MapCatalog;
  private readonly repo: ModbusRepo;
  private readonly listeners = new Set<(deviceId: string) => void>();

  constructor(private readonly deps: ModbusDevicesDeps) {
    this.catalog = deps.catalog;
    this.repo = new ModbusRepo(deps.db, deps.onBadRow);
  }

  /** Called after a Modbus device was registered or changed in this process (the poller listens). */
  onChange(fn: (deviceId: string) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  get(deviceId: string): Promise<ModbusSettings | undefined> { return this.repo.get(deviceId); }
  all(): Promise<ModbusSettings[]> { return this.repo.all(); }
  fingerprint(s: ModbusSettings): string { return this.repo.fingerprint(s); }

  /**
   * Cluster mode: the node polling each line now (undefined in embedded mode,
   * where this process polls every enabled device). Read from the database:
   * the same answer on every node.
   */
  async lineHolders(): Promise<ReadonlyMap<string, string> | undefined> { return this.deps.lineHolders?.(); }

  /** The node polling a device, from lineHolders(): null when no node holds its line (none has claimed it yet, or its node died). */
  polledBy(s: ModbusSettings, holders: ReadonlyMap<string, string>): string | null { return holders.get(lineKey(s.transport)) ?? null; }

  /** The registers a device polls (its inline map, or the shipped map it names). */
  registers(s: ModbusSettings): RegisterMap { return this.catalog.resolve(s.registerMap); }

  /** Shape, map and line checks; the settings to store. Throws VALIDATION (400), UNPROCESSABLE (422) or CONFLICT (409). */
  async check(deviceId: string, input: ModbusInput): Promise<ModbusSettings> {
    const value = { ...input, pollIntervalSec: input.pollIntervalSec ?? DEFAULT_POLL_INTERVAL_SEC };
    const errors: FieldError[] = shapeErrors(Fields, value);
    if (!errors.length && typeof value.registerMap === 'object') errors.push(...checkMap(value.registerMap as RegisterMap, 'registerMap'));
    if (errors.length) throw validationError(errors);
    const s: ModbusSettings = {
      deviceId, transport: value.transport as ModbusTransport, registerMap: value.registerMap as ModbusSettings['registerMap'],
      pollIntervalSec: value.pollIntervalSec as number,
    };
    const t = s.transport;
    const prefixes = this.deps.serialPathPrefixes ?? DEFAULT_SERIAL_PATH_PREFIXES;
    if (t.type === 'modbus-rtu' && !prefixes.some((p) => t.path.startsWith(p))) {
      throw validationError([{ field: 'transport.path', message: `must start with ${prefixes.join(' or ')} (setting modbus.serialPathPrefixes)` }]);
    }
    this.catalog.resolve(s.registerMap);
    checkLine(s, await this.repo.othersOnLine(lineKey(s.transport), s.deviceId));
    return s;
  }

  /**
   * Registers the device and its Modbus settings. The two rows are written
   * one after the other (the registry hashes credentials off the event loop
   * in between); if the second write fails the device is removed again.
   */
  async create(d: NewDevice, input: ModbusInput): Promise<{ device: Device; credentials: DeviceCredentials; settings: ModbusSettings }> {
    if (d.kind === 'speaker') throw Errors.UNPROCESSABLE('a loudspeaker is not polled over Modbus: register it as a sensor or gateway');
    const settings = await this.check(d.id, input);
    const { device, credentials } = await this.deps.registry.createDevice(d);
    try {
      // Checked again with the write: another registration (on any node) may have taken the unit id meanwhile.
      await this.repo.putChecked(settings, this.deps.clock.now(), (others) => checkLine(settings, others));
    } catch (err) {
      await this.deps.registry.deleteDevice(device.id);
      throw err;
    }
    this.changed(device.id);
    return { device, credentials, settings };
  }

  /**
   * The settings a change would give, checked but not stored (throws like
   * check); undefined when the device has no Modbus settings. Lets a caller
   * that changes other things too refuse the whole change before storing any.
   */
  async planUpdate(deviceId: string, changes: ModbusChanges): Promise<ModbusSettings | undefined> {
    const cur = await this.repo.get(deviceId);
    if (!cur) return undefined;
    return this.check(deviceId, {
      transport: changes.transport ?? cur.transport,
      registerMap: changes.registerMap ?? cur.registerMap,
      pollIntervalSec: changes.pollIntervalSec ?? cur.pollIntervalSec,
    });
  }

  /** Stores settings made by planUpdate (checked again: the line may have changed meanwhile). */
  async save(next: ModbusSettings): Promise<ModbusSettings> {
    await this.repo.putChecked(next, this.deps.clock.now(), (others) => checkLine(next, others));
    this.changed(next.deviceId);
    return next;
  }

  /** Changes the keys present; undefined when the device has no Modbus settings. */
  async update(deviceId: string, changes: ModbusChanges): Promise<ModbusSettings | undefined> {
    const next = await this.planUpdate(deviceId, changes);
    return next && this.save(next);
  }

  /**
   * A device was deleted: its settings go too. On the embedded store its
   * foreign key removed them already; on PostgreSQL (no devices table there)
   * this does, so its unit id is free again on its line.
   */
  removed(deviceId: string): Promise<void> { return this.repo.remove(deviceId); }

  private changed(deviceId: string): void {
    for (const fn of this.listeners) fn(deviceId);
  }
}

/** Throws CONFLICT when `s` cannot share its line with `others` (unit id taken, other serial settings). */
function checkLine(s: ModbusSettings, others: ModbusSettings[]): void {
  const t = s.transport;
  for (const other of others) {
    const o = other.transport;
    if (o.unitId === t.unitId) {
      throw Errors.CONFLICT(`unit ${t.unitId} on ${describeLine(t)} is already device "${other.deviceId}"`);
    }
    if (t.type === 'modbus-rtu' && o.type === 'modbus-rtu' && (o.baudRate !== t.baudRate || o.parity !== t.parity)) {
      throw Errors.CONFLICT(`serial line ${t.path} runs at ${o.baudRate} baud, parity ${o.parity} (device "${other.deviceId}"): every device on one line must use the same`);
    }
  }
}

export function describeLine(t: ModbusTransport): string {
  return t.type === 'modbus-tcp' ? `gateway ${t.host}:${t.port}` : `serial line ${t.path}`;
}

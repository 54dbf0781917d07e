import type { Area, AreaLevel, Device, DeviceKind, DeviceView, DeviceIdentity, LatestValue } from './types.js';
import type { Scalar } from '../core/events.js';

export interface NewArea { code: string; name: string; level: AreaLevel; parent?: string | null }
export interface NewDevice {
  id: string; kind: DeviceKind; name: string; area: string;
  location?: { lat: number; lon: number } | null; model?: string | null;
  /** An access token the device chose (ThingsBoard provisioning); absent: a random one. Stored hashed like any. */
  accessToken?: string;
}
/** Returned once at registration: the only time secret and access token are visible. */
export interface DeviceCredentials { secret: string; accessToken: string }

export interface DeviceFilter { area?: string; kind?: DeviceKind; online?: boolean }

/**
 * A change to a registered device: only the keys present change. `area` moves
 * the device (readings from then on carry the new area); `enabled: false`
 * parks it (refused at CONNECT, its connection closed by the app).
 */
export interface DeviceChanges {
  name?: string; area?: string; location?: { lat: number; lon: number } | null; model?: string | null; enabled?: boolean;
}
/** Which credential a rotation replaces. */
export type CredentialKind = 'secret' | 'token';

/** Areas: a tree province → commune → village (no districts since July 2025). */
export interface AreasApi {
  createArea(a: NewArea): Promise<Area>;             // throws AREA_EXISTS / AREA_HIERARCHY / VALIDATION
  listAreas(): Area[];
  getArea(code: string): Area | undefined;
  /** The area and all its descendants' codes. */
  subtree(code: string): string[];
}

/** Registered devices (their credentials are made at registration). */
export interface DevicesApi {
  createDevice(d: NewDevice): Promise<{ device: Device; credentials: DeviceCredentials }>; // throws DEVICE_EXISTS / NOT_FOUND(area) / VALIDATION
  getDevice(id: string): Device | undefined;
  listDevices(filter?: DeviceFilter): Device[];      // area filter includes the subtree
  /** `by`: who deletes (an actor string such as "user:alice"), recorded with the purge of its readings when one follows. */
  deleteDevice(id: string, by?: string): Promise<boolean>;
  /** undefined when the device does not exist. Throws VALIDATION / NOT_FOUND(area). */
  updateDevice(id: string, changes: DeviceChanges): Promise<Device | undefined>;
  /**
   * Replaces the device's secret or access token; the new one is returned
   * (shown once), the old one is refused from then on. undefined when the
   * device does not exist.
   */
  rotateCredential(id: string, kind: CredentialKind): Promise<string | undefined>;
}

/** Presence, attributes and latest values of registered devices (in memory; unknown ids are ignored). */
export interface DeviceStatusApi {
  // presence
  setOnline(deviceId: string, online: boolean, at: number): void; // emits 'status' when it changes
  touch(deviceId: string, at: number): void;                       // lastSeen on any message
  isOnline(deviceId: string): boolean;
  /** Online on this node, or (cluster mode) on another one as the shared presence said at its last read (a few seconds). */
  isOnlineAnywhere(deviceId: string): boolean;

  // data
  mergeAttributes(deviceId: string, attrs: Record<string, unknown>): void;  // emits 'attributes'
  attributes(deviceId: string): Record<string, unknown>;
  updateLatest(deviceId: string, ts: number, values: Record<string, Scalar>): void; // keeps the newest ts per field
  latest(deviceId: string): Record<string, LatestValue>;
}

/**
 * The device registry (areas, devices, credentials, presence, attributes and
 * latest values). Backed by the state store (the `Db` port: state.db, or
 * PostgreSQL in cluster mode); presence, lastSeen and latest values are kept in memory and flushed to disk every few seconds and
 * at stop (they are caches: readings themselves are in the telemetry store).
 */
export interface DeviceRegistryApi extends AreasApi, DevicesApi, DeviceStatusApi {
  /** A device with its presence, attributes and latest values. */
  view(id: string): DeviceView | undefined;
  views(filter?: DeviceFilter): DeviceView[];
}

export type { DeviceIdentity };

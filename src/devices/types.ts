import type { Scalar } from '../core/events.js';

/** Spec device-protocol.md "Connection": device id pattern. */
export const DEVICE_ID_RE = /^[a-z0-9][a-z0-9_-]{1,63}$/;
/** Area codes: short stable identifiers (e.g. administrative codes "01", "00004", "thon-3"). */
export const AREA_CODE_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export type AreaLevel = 'province' | 'commune' | 'village';
export type DeviceKind = 'sensor' | 'speaker' | 'gateway';

export interface Area {
  code: string;
  name: string;
  level: AreaLevel;
  parent: string | null;
  createdAt: number;
}

export interface Device {
  id: string;
  kind: DeviceKind;
  name: string;
  area: string;
  location: { lat: number; lon: number } | null;
  model: string | null;
  enabled: boolean;
  createdAt: number;
  /**
   * Readings before this (epoch ms) belong to a deleted device that had the
   * same id and are never shown under this one; null when the id is new.
   */
  historyFrom: number | null;
}

export interface LatestValue { ts: number; value: Scalar }

export interface DeviceView extends Device {
  online: boolean;
  lastSeen: number | null;
  attributes: Record<string, unknown>;
  latest: Record<string, LatestValue>;
}

/** Who a broker connection authenticated as. */
export interface DeviceIdentity {
  deviceId: string;
  kind: DeviceKind;
  area: string;
  /** true when the device logged in with its access token (ThingsBoard style): may use v1/devices/me/... */
  viaToken: boolean;
}

/** What the broker needs from the registry to authenticate (devices module implements it). */
export interface DeviceAuthenticator {
  /** id + secret, or access token as username (password ignored). Returns null when refused, with a reason. */
  /** A registered device has this id (a client id that is another device's id is refused). */
  isDevice(id: string): boolean;
  authenticate(username: string, password: Buffer | undefined): Promise<{ ok: true; identity: DeviceIdentity } | { ok: false; reason: 'unknown_device' | 'bad_secret' | 'disabled' | 'bad_credentials' }>;
}

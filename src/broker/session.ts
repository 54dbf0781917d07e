/**
 * Per-connection and per-device state kept by the broker.
 *
 * A DeviceSession is one authenticated MQTT connection of a device. Limits
 * (rate bucket, abuse counter, warn gate) belong to the device, not the
 * connection, so a device cannot reset its rate limit by reconnecting; they
 * are forgotten once idle.
 */
import type { Client } from 'aedes';
import type { DeviceIdentity } from '../devices/types.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import { AbuseCounter, WarnGate, ABUSE_WINDOW_MS } from './abuse.js';
import { TokenBucket } from './rate-limit.js';
import { DeviceAcl } from './topics.js';

/** What the broker needs from the registry for presence (device protocol §4: connect/disconnect update online and lastSeen). */
export type DevicePresence = Pick<DeviceRegistryApi, 'setOnline' | 'touch' | 'isOnline'>;

export class DeviceLimits {
  readonly bucket: TokenBucket;
  readonly abuse: AbuseCounter;
  readonly warn = new WarnGate(60_000);
  lastUsed: number;

  constructor(ratePerSec: number, burst: number, abuseAfter: number, now: number) {
    this.bucket = new TokenBucket(ratePerSec, burst, now);
    this.abuse = new AbuseCounter(abuseAfter, ABUSE_WINDOW_MS);
    this.lastUsed = now;
  }

  /** Nothing left to remember: bucket full and no refusal within the abuse window. */
  idle(now: number): boolean {
    return now - this.lastUsed >= ABUSE_WINDOW_MS && this.bucket.isFull(now) && this.abuse.isIdle(now);
  }
}

export class DeviceSession {
  readonly kind = 'device';
  readonly acl: DeviceAcl;
  /** aedes emitted 'client' for it (registered, counted as connected). */
  registered = false;
  /** The connection is closed (first of clientDisconnect / clientError / keepaliveTimeout / socket close). */
  gone = false;
  /** A newer connection of the same device took over: this one must not mark the device offline. */
  superseded = false;
  /** Subscribed with `v1/devices/me/...`: deliveries are rewritten to `me` (ThingsBoard compatibility). */
  viaMe = false;
  /** The device was deleted: its persistent session is dropped once this connection is gone. */
  forgotten = false;

  /**
   * `presentedId`: the client id the firmware sent (logs); `client.id` is the device id (the session key).
   * `epoch`: the cluster claim of this connection (broker/session-claims.ts); 0 in embedded mode.
   */
  constructor(readonly client: Client, readonly identity: DeviceIdentity, readonly limits: DeviceLimits, readonly presentedId: string, readonly epoch = 0) {
    this.acl = new DeviceAcl(identity);
  }

  get deviceId(): string { return this.identity.deviceId; }
}

/** aedes keeps the will on the client; clearing it before a server-initiated close suppresses it. */
export function suppressWill(client: Client): void {
  const c = client as unknown as { will: unknown; _will: unknown };
  c.will = null;
  c._will = null;
}

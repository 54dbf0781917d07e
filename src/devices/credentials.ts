/**
 * Device credentials (spec device-protocol.md "Connection"): issuing a
 * device's secret and access token at registration, and authenticating a
 * CONNECT with either. The hashing and the verification cache are secrets.ts.
 */
import {
  type CredentialVerifier, generateAccessToken, generateSecret, hashSecret, tokenLookup, MAX_CREDENTIAL_LENGTH,
} from './secrets.js';
import { DEVICE_ID_RE, type Device, type DeviceAuthenticator } from './types.js';
import type { CredentialKind, DeviceCredentials } from './registry-types.js';

type AuthResult = Awaited<ReturnType<DeviceAuthenticator['authenticate']>>;

/** The credential columns of a devices row. */
export interface StoredCredentials { secret_hash: string; token_lookup: string; token_hash: string }

/** What authentication reads of a registered device. */
export interface CredentialRecord {
  device: Device;
  row: StoredCredentials & { id: string; enabled: number };
}

/** The registered devices, as authentication looks them up (no reload). */
export interface CredentialLookup {
  record(id: string): CredentialRecord | undefined;
  /** The device whose token has this token_lookup. */
  idByToken(lookup: string): string | undefined;
}

export interface DeviceAuthenticationDeps {
  devices: CredentialLookup;
  verifier: CredentialVerifier;
  /**
   * Brings the cache up to date before a login (the registry's): at once on the embedded store
   * (another process's commit), one version check (and a reload when it moved) in cluster mode.
   */
  refresh: () => Promise<void>;
}

/** The verifier's cache key of a device's access token (its secret's is the device id). */
function tokenKey(deviceId: string): string {
  return `token:${deviceId}`;
}

/**
 * Makes a new device's credentials (the token may be one the device chose,
 * see NewDevice.accessToken): secret and token shown once, stored
 * hashed. The two scrypt hashes run in libuv's thread pool (a few ms of CPU
 * each): registering thousands of devices does not stall MQTT ingest or the
 * live feed.
 */
export async function issueCredentials(accessToken?: string): Promise<{ credentials: DeviceCredentials; stored: StoredCredentials }> {
  const credentials: DeviceCredentials = { secret: generateSecret(), accessToken: accessToken ?? generateAccessToken() };
  const [secretHash, tokenHash] = await Promise.all([hashSecret(credentials.secret), hashSecret(credentials.accessToken)]);
  return {
    credentials,
    stored: { secret_hash: secretHash, token_lookup: tokenLookup(credentials.accessToken), token_hash: tokenHash },
  };
}

/** A replacement for one of a device's credentials: the new value (shown once) and the columns it changes. */
export async function issueCredential(kind: CredentialKind): Promise<{ value: string; stored: Partial<StoredCredentials> }> {
  if (kind === 'secret') {
    const value = generateSecret();
    return { value, stored: { secret_hash: await hashSecret(value) } };
  }
  const value = generateAccessToken();
  return { value, stored: { token_lookup: tokenLookup(value), token_hash: await hashSecret(value) } };
}

/** Drops cached verifications of the device's secret and token. */
export function forgetVerifications(verifier: CredentialVerifier, deviceId: string): void {
  verifier.invalidate(deviceId);
  verifier.invalidate(tokenKey(deviceId));
}

export class DeviceAuthentication implements DeviceAuthenticator {
  constructor(private readonly deps: DeviceAuthenticationDeps) {}

  isDevice(id: string): boolean {
    return this.deps.devices.record(id) !== undefined;
  }

  async authenticate(username: string, password: Buffer | undefined): Promise<AuthResult> {
    if (typeof username !== 'string' || username.length === 0 || username.length > MAX_CREDENTIAL_LENGTH) {
      return { ok: false, reason: 'bad_credentials' };
    }
    await this.deps.refresh(); // a device added, disabled or deleted by the CLI (or another node) counts at once
    const { devices, verifier } = this.deps;
    const looksLikeId = DEVICE_ID_RE.test(username);
    const byId = looksLikeId ? devices.record(username) : undefined;
    if (byId) {
      // username = device id, password = device secret. A disabled device is named as such (CONNACK 5)
      // only to whoever proves its secret: with a wrong one it gets the answer of an unknown device.
      const secret = password?.toString('utf8') ?? '';
      const hash = byId.row.secret_hash;
      const good = await verifier.verify(username, secret, hash);
      return this.settle(username, good, false, 'bad_secret', hash);
    }
    // ThingsBoard style: username = access token, password ignored.
    const id = devices.idByToken(tokenLookup(username));
    const byToken = id !== undefined ? devices.record(id) : undefined;
    if (!byToken) return { ok: false, reason: looksLikeId ? 'unknown_device' : 'bad_credentials' };
    const hash = byToken.row.token_hash;
    const good = await verifier.verify(tokenKey(byToken.row.id), username, hash);
    return this.settle(byToken.row.id, good, true, 'bad_credentials', hash);
  }

  /**
   * Re-checks the device after the (async) hash check: it may have been
   * deleted, disabled or given a new credential meanwhile (a CONNECT with the
   * old secret must not slip in after the rotation closed the old connection).
   */
  private settle(id: string, good: boolean, viaToken: boolean, failure: 'bad_secret' | 'bad_credentials', hash: string): AuthResult {
    if (!good) return { ok: false, reason: failure };
    const c = this.deps.devices.record(id);
    if (!c) return { ok: false, reason: 'unknown_device' };
    if (c.row.enabled !== 1) return { ok: false, reason: 'disabled' };
    if ((viaToken ? c.row.token_hash : c.row.secret_hash) !== hash) return { ok: false, reason: failure };
    return { ok: true, identity: { deviceId: id, kind: c.device.kind, area: c.device.area, viaToken } };
  }
}

/**
 * Reading a ThingsBoard provision request (firmware-protocols/provisioning.md)
 * and turning its `deviceName` into a Keng device id. Pure functions: the
 * provisioning service decides what to do with the result.
 *
 * The request, as ThingsBoard's JSON adaptor reads it: `provisionDeviceKey`
 * and `provisionDeviceSecret` (both required: missing ones answer NOT_FOUND),
 * optional `deviceName` (absent: ThingsBoard makes a random 20-character name,
 * and so does Keng), optional `credentialsType` (`ACCESS_TOKEN` by default)
 * with `token` / `clientId`, `username`, `password` / `hash`.
 */
import { randomBytes } from 'node:crypto';
import { API_TOKEN_PREFIX } from '../auth/api-tokens.js';
import { MAX_NAME_LENGTH } from './area-tree.js';
import { DEVICE_ID_RE } from './types.js';

/** Longest key or secret read (longer ones cannot be ours: NOT_FOUND without hashing). */
export const MAX_PROVISION_FIELD = 256;

export type ParsedProvisionRequest =
  | { ok: true; key: string; secret: string; deviceName: string | null; credentialsType: string; token: string | null }
  | { ok: false; reason: 'not_json' | 'missing_key' | 'bad_name'; message: string };

function str(o: Record<string, unknown>, k: string): string | null | undefined {
  const v = o[k];
  if (v === undefined || v === null) return null;
  // ThingsBoard reads fields with getAsString(): numbers pass as their text.
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

export function parseProvisionRequest(payload: Buffer): ParsedProvisionRequest {
  let body: unknown;
  try { body = JSON.parse(payload.toString('utf8')); } catch {
    return { ok: false, reason: 'not_json', message: 'Provision request is not valid JSON' };
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { ok: false, reason: 'not_json', message: 'Provision request must be a JSON object' };
  }
  const o = body as Record<string, unknown>;
  const key = str(o, 'provisionDeviceKey');
  const secret = str(o, 'provisionDeviceSecret');
  if (!key || !secret || key.length > MAX_PROVISION_FIELD || secret.length > MAX_PROVISION_FIELD) {
    return { ok: false, reason: 'missing_key', message: 'provisionDeviceKey and provisionDeviceSecret are required' };
  }
  const rawName = str(o, 'deviceName');
  if (rawName === undefined) return { ok: false, reason: 'bad_name', message: 'deviceName must be a string' };
  let deviceName: string | null = null;
  if (rawName !== null) {
    deviceName = rawName.trim();
    // ThingsBoard: a name that is only blanks is a failure, not a missing name.
    if (deviceName.length === 0 && rawName.length > 0) return { ok: false, reason: 'bad_name', message: 'deviceName is blank' };
    if (deviceName.length === 0) deviceName = null;
  }
  if (deviceName !== null && deviceName.length > MAX_NAME_LENGTH) {
    return { ok: false, reason: 'bad_name', message: `deviceName is longer than ${MAX_NAME_LENGTH} characters` };
  }
  const credentialsType = str(o, 'credentialsType') || 'ACCESS_TOKEN';
  const token = str(o, 'token') || null;
  return { ok: true, key, secret, deviceName, credentialsType, token };
}

/**
 * The device id for a device name: Vietnamese letters without their marks
 * (`Cảm biến đất 01` → `cam-bien-dat-01`), lower case, every run of other
 * characters one `-` (a MAC address `A4:CF:12:34:56:78` → `a4-cf-12-34-56-78`),
 * at most 64 characters. null when nothing usable is left (then the request fails).
 */
export function deviceIdFromName(name: string): string | null {
  const ascii = name.normalize('NFD').replace(/[\u0300-\u036f]/g, '').replace(/[đĐ]/g, 'd').toLowerCase();
  const id = ascii.replace(/[^a-z0-9_-]+/g, '-').replace(/-{2,}/g, '-').replace(/^[-_]+/, '').slice(0, 64).replace(/[-_]+$/, '');
  return DEVICE_ID_RE.test(id) ? id : null;
}

/** Shortest access token a device may choose: ThingsBoard's own tokens are 20 characters. */
export const MIN_CHOSEN_TOKEN = 20;

/**
 * Why a token the device chose (`credentialsType` ACCESS_TOKEN with `token`)
 * cannot be its access token; null when it can. Besides its length, it must
 * never be read as another kind of login: a device id (username = id means
 * "id + secret") or an API token (`kengt_…`, a service client).
 */
export function chosenTokenProblem(token: string): string | null {
  if (token.length < MIN_CHOSEN_TOKEN || token.length > MAX_PROVISION_FIELD) {
    return `the token must be ${MIN_CHOSEN_TOKEN} to ${MAX_PROVISION_FIELD} characters`;
  }
  if (!/^[\x21-\x7e]+$/.test(token)) return 'the token must be printable ASCII without spaces';
  if (DEVICE_ID_RE.test(token)) return 'the token must not look like a device id: use upper-case letters too';
  if (token.startsWith(API_TOKEN_PREFIX)) return `the token must not start with ${API_TOKEN_PREFIX}`;
  return null;
}

const ALPHANUMERIC = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** A name for a request without one (ThingsBoard: 20 random alphanumerics); already a valid device id. */
export function randomDeviceName(): string {
  const bytes = randomBytes(20);
  let s = '';
  // 36 does not divide 256: the bias (< 1 %) does not matter for a name.
  for (const b of bytes) s += ALPHANUMERIC[b % ALPHANUMERIC.length];
  return s;
}

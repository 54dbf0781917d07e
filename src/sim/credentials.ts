/**
 * The simulator's credentials file: device ids with the secret and access
 * token issued at registration (shown only once by the API), kept for reuse.
 * Written atomically with mode 0600: it holds secrets.
 */
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { DEVICE_ID_RE } from '../devices/types.js';
import { isProfileName, type ProfileName } from './profiles.js';

export interface SimCredential {
  id: string;
  secret?: string;
  accessToken?: string;
  profile: ProfileName;
}

export interface CredentialsFile {
  version: 1;
  api?: string;
  area?: string;
  updatedAt: string;
  devices: SimCredential[];
}

export class CredentialsError extends Error {}

/** Device ids `<prefix>0001` ... ; zero-padded to at least 4 digits so they sort. */
export function simDeviceIds(prefix: string, count: number, first = 1): string[] {
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`bad device count: ${count}`);
  const width = Math.max(4, String(first + count - 1).length);
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = `${prefix}${String(first + i).padStart(width, '0')}`;
    if (!DEVICE_ID_RE.test(id)) throw new RangeError(`"${id}" is not a valid device id (lower-case letters, digits, - and _; prefix "${prefix}")`);
    ids.push(id);
  }
  return ids;
}

export function parseCredentials(text: string, source = 'credentials'): CredentialsFile {
  let raw: unknown;
  try { raw = JSON.parse(text); } catch (err) {
    throw new CredentialsError(`${source}: not valid JSON (${(err as Error).message})`);
  }
  const f = raw as Partial<CredentialsFile> | null;
  if (!f || typeof f !== 'object' || f.version !== 1 || !Array.isArray(f.devices)) {
    throw new CredentialsError(`${source}: not a Keng simulator credentials file (expected {"version":1,"devices":[...]})`);
  }
  const devices: SimCredential[] = [];
  f.devices.forEach((d: Partial<SimCredential> | null, i: number) => {
    if (!d || typeof d.id !== 'string' || !DEVICE_ID_RE.test(d.id)) throw new CredentialsError(`${source}: devices[${i}] has no valid id`);
    if (typeof d.secret !== 'string' && typeof d.accessToken !== 'string') throw new CredentialsError(`${source}: device ${d.id} has neither secret nor accessToken`);
    const profile = typeof d.profile === 'string' && isProfileName(d.profile) ? d.profile : 'soil';
    devices.push({
      id: d.id,
      ...(typeof d.secret === 'string' ? { secret: d.secret } : {}),
      ...(typeof d.accessToken === 'string' ? { accessToken: d.accessToken } : {}),
      profile,
    });
  });
  return {
    version: 1,
    ...(typeof f.api === 'string' ? { api: f.api } : {}),
    ...(typeof f.area === 'string' ? { area: f.area } : {}),
    updatedAt: typeof f.updatedAt === 'string' ? f.updatedAt : new Date(0).toISOString(),
    devices,
  };
}

/** Reads the file; null when it does not exist. */
export function readCredentials(path: string): CredentialsFile | null {
  if (!existsSync(path)) return null;
  return parseCredentials(readFileSync(path, 'utf8'), path);
}

export function writeCredentials(path: string, file: CredentialsFile): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(file, null, 2) + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** Merges registrations into a file: entries with the same id are replaced, the rest kept; sorted by id. */
export function mergeCredentials(base: CredentialsFile | null, updates: SimCredential[], meta: { api?: string; area?: string } = {}, now = new Date()): CredentialsFile {
  const byId = new Map<string, SimCredential>();
  for (const d of base?.devices ?? []) byId.set(d.id, d);
  for (const d of updates) byId.set(d.id, d);
  const api = meta.api ?? base?.api;
  const area = meta.area ?? base?.area;
  return {
    version: 1,
    ...(api !== undefined ? { api } : {}),
    ...(area !== undefined ? { area } : {}),
    updatedAt: now.toISOString(),
    devices: [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
  };
}

/** Picks the credentials of `ids` from a file; throws naming the missing ones. */
export function selectCredentials(file: CredentialsFile, ids: string[]): SimCredential[] {
  const byId = new Map(file.devices.map((d) => [d.id, d] as const));
  const missing = ids.filter((id) => !byId.has(id));
  if (missing.length) {
    const shown = missing.slice(0, 5).join(', ') + (missing.length > 5 ? `, ... (${missing.length} in all)` : '');
    throw new CredentialsError(`no credentials for ${shown}; register them first (--api and --token)`);
  }
  return ids.map((id) => byId.get(id)!);
}

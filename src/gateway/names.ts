/**
 * Sub-device names (what a ThingsBoard gateway calls a device behind it) and
 * the Keng device ids made from them.
 *
 * ThingsBoard names are free text ("Bơm trạm 2", "Soil sensor #3"); Keng
 * ids follow the device protocol's pattern `^[a-z0-9][a-z0-9_-]{1,63}$`. The
 * id is a readable slug of the name (Vietnamese letters folded to ASCII) plus
 * ten hex digits of the name's SHA-256: the same name always gives the same
 * id (a gateway that reconnects, or a server restored from backup, finds the
 * same device), and two names that fold to the same slug ("Dev A", "dev-a")
 * still get different ids.
 */
import { createHash } from 'node:crypto';
import { DEVICE_ID_RE } from '../devices/types.js';

/** Longest sub-device name accepted (the device name limit of the API). */
export const MAX_SUB_DEVICE_NAME = 200;
const SLUG_MAX = 40;

/** A usable sub-device name: 1..200 characters, not blank, no control characters. */
export function validSubDeviceName(name: unknown): name is string {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_SUB_DEVICE_NAME) return false;
  if (name.trim().length === 0) return false;
  // eslint-disable-next-line no-control-regex
  return !/[\u0000-\u001f\u007f]/.test(name);
}

/** The Keng device id of the sub-device called `name` (deterministic; always matches DEVICE_ID_RE). */
export function subDeviceId(name: string): string {
  const slug = name.normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/[đĐ]/g, 'd')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .slice(0, SLUG_MAX)
    .replace(/^-+|-+$/g, '');
  const hash = createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 10);
  const id = `${slug || 'sub'}-${hash}`;
  if (!DEVICE_ID_RE.test(id)) throw new Error(`sub-device id ${id} does not match the device id pattern`);
  return id;
}

import { randomBytes } from 'node:crypto';

/**
 * Short, roughly time-ordered, URL- and topic-safe ids: `<prefix>_<ms base36><12 hex>`.
 * Request ids appear as the last level of `v1/devices/D/rpc/request/R`, so they
 * never contain `/`, `+` or `#`.
 */
export function newId(prefix: string, now = Date.now()): string {
  return `${prefix}_${now.toString(36)}${randomBytes(6).toString('hex')}`;
}

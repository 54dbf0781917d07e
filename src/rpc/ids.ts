import { randomFillSync } from 'node:crypto';

/**
 * Random bytes taken from a pool refilled 4 KiB at a time: a broadcast makes thousands of ids in
 * one go, and one randomBytes() call per id cost ~25 µs each (a system call and a Buffer per id).
 */
const pool = Buffer.alloc(4096);
let used = pool.length;

function randomHex(n: number): string {
  if (used + n > pool.length) { randomFillSync(pool); used = 0; }
  const s = pool.toString('hex', used, used + n);
  used += n;
  return s;
}

/**
 * Short, roughly time-ordered, URL- and topic-safe ids: `<prefix>_<ms base36><12 hex>`.
 * Request ids appear as the last level of `v1/devices/D/rpc/request/R`, so they
 * never contain `/`, `+` or `#`.
 */
export function newId(prefix: string, now = Date.now()): string {
  return `${prefix}_${now.toString(36)}${randomHex(6)}`;
}

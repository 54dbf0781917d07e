/**
 * Random tokens for credentials people copy into other tools: device secrets,
 * device access tokens, the generated admin token.
 *
 * Base62 (digits and letters only), not base64url: a base64url token starts
 * with '-' about once in 64, and such a token given as an argument
 * (`mosquitto_pub -u <token>`, `curl -H ...` in a script) is read as an option
 * by common command-line clients. Base62 has no character a shell, a URL or a
 * CSV file treats specially either.
 *
 * Each character is drawn by rejection sampling from random bytes: a byte is
 * used only below 248 (= 4 × 62), so every character is equally likely (a
 * plain `byte % 62` would favour the first 8).
 */
import { randomBytes } from 'node:crypto';

export const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const LIMIT = 256 - (256 % BASE62.length); // 248

/** Bits of entropy of a base62 token of `length` characters (log2(62) ≈ 5.954 per character). */
export function base62Bits(length: number): number {
  return length * Math.log2(BASE62.length);
}

/** A uniformly random base62 string of exactly `length` characters. */
export function randomBase62(length: number): string {
  if (!Number.isInteger(length) || length < 1) throw new RangeError('length must be a positive integer');
  let out = '';
  while (out.length < length) {
    // ~3 % of bytes are rejected: ask for a little more than needed.
    for (const b of randomBytes(Math.ceil((length - out.length) * 1.1) + 4)) {
      if (b >= LIMIT) continue;
      out += BASE62[b % BASE62.length];
      if (out.length === length) break;
    }
  }
  return out;
}

/**
 * Password hashing, so a stolen state.db does not give away passwords: scrypt, N = 2^15, r = 8, p = 1
 * (≈ 32 MiB and tens of milliseconds per hash), run asynchronously on the
 * libuv pool. Stored as `scrypt$<log2 N>$<r>$<p>$<salt b64>$<key b64>` so the
 * cost can be raised later without breaking old hashes.
 *
 * At most `maxConcurrent` hashes run at once (the pool is shared with file
 * I/O); at most `maxQueued` wait; beyond that KENG_ERR_RATE_LIMITED, so a
 * flood of logins cannot starve the controller.
 *
 * Plain passwords are never logged, stored or returned.
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { Errors } from '../core/errors.js';

// Which passwords are accepted is password-rules.ts; re-exported here, where callers have always found them.
export { PASSWORD_MIN_LENGTH, PASSWORD_MAX_LENGTH, passwordProblem, assertPasswordAcceptable } from './password-rules.js';

export const USERNAME_PATTERN = '^[a-z0-9._-]{3,64}$';
export const USERNAME_RE = new RegExp(USERNAME_PATTERN);

/** Production cost: log2(N). Tests may pass a lower one to the constructor. */
export const DEFAULT_LOG2_N = 15;
const R = 8;
const P = 1;
const KEY_LEN = 32;
const SALT_LEN = 16;
/** Refuse to verify hashes whose stored cost would exhaust memory (a tampered row). */
const MAX_LOG2_N = 20;

function scrypt(password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(password, salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export interface PasswordHasherOptions {
  /** log2 of scrypt's N (default 15; below 15 only for tests). */
  log2N?: number;
  maxConcurrent?: number;
  maxQueued?: number;
}

export class PasswordHasher {
  private readonly log2N: number;
  private readonly maxConcurrent: number;
  private readonly maxQueued: number;
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  private dummy: Promise<string> | null = null;

  constructor(opts: PasswordHasherOptions = {}) {
    this.log2N = opts.log2N ?? DEFAULT_LOG2_N;
    if (!Number.isInteger(this.log2N) || this.log2N < 1 || this.log2N > MAX_LOG2_N) throw new Error('invalid scrypt cost');
    this.maxConcurrent = opts.maxConcurrent ?? 2;
    this.maxQueued = opts.maxQueued ?? 64;
  }

  async hash(password: string): Promise<string> {
    const salt = randomBytes(SALT_LEN);
    const key = await this.derive(password, salt, this.log2N, R, P, KEY_LEN);
    return `scrypt$${this.log2N}$${R}$${P}$${salt.toString('base64')}$${key.toString('base64')}`;
  }

  /** Constant-time check of a password against a stored hash; false for malformed hashes. */
  async verify(password: string, stored: string): Promise<boolean> {
    const parts = stored.split('$');
    if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
    const [log2N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
    if (![log2N, r, p].every(Number.isInteger) || log2N < 1 || log2N > MAX_LOG2_N || r < 1 || r > 32 || p < 1 || p > 16) return false;
    const salt = Buffer.from(parts[4]!, 'base64');
    const expected = Buffer.from(parts[5]!, 'base64');
    if (salt.length < 8 || expected.length < 16) return false;
    const key = await this.derive(password, salt, log2N, r, p, expected.length);
    return timingSafeEqual(key, expected);
  }

  /**
   * The same work as verify() against a hash of the current cost, result
   * discarded: run for unknown usernames so they take as long as wrong passwords.
   */
  async dummyVerify(password: string): Promise<false> {
    this.dummy ??= this.hash(randomBytes(16).toString('hex'));
    await this.verify(password, await this.dummy);
    return false;
  }

  /** Whether a stored hash uses a lower cost than the current one (re-hash on next login). */
  needsRehash(stored: string): boolean {
    const n = Number(stored.split('$')[1]);
    return !Number.isInteger(n) || n < this.log2N;
  }

  private async derive(password: string, salt: Buffer, log2N: number, r: number, p: number, keylen: number): Promise<Buffer> {
    await this.acquire();
    try {
      const N = 2 ** log2N;
      return await scrypt(password.normalize('NFC'), salt, keylen, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 });
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.running < this.maxConcurrent) { this.running++; return Promise.resolve(); }
    if (this.waiting.length >= this.maxQueued) return Promise.reject(Errors.RATE_LIMITED('too many password checks at once; retry in a second'));
    return new Promise((resolve) => this.waiting.push(() => { this.running++; resolve(); }));
  }

  private release(): void {
    this.running--;
    this.waiting.shift()?.();
  }
}

/**
 * Device credentials (firmware-protocols/device-protocol.md §1): a device secret
 * (username = device id) and an access token (ThingsBoard style, username =
 * token). Both are random base62, shown once at registration, and stored only as
 * scrypt hashes: `scrypt$N$r$p$<salt b64url>$<hash b64url>`.
 *
 * The access token is also stored as sha256(token) (`token_lookup`, indexed)
 * so a CONNECT finds its device without scanning; the scrypt hash verifies.
 */
import { createHash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { randomBase62 } from '../core/random.js';

/**
 * Lengths in base62 characters (core/random.ts: no token starts with '-', which
 * command-line MQTT clients would take for an option). The same lengths as the
 * base64url credentials before them (firmware may have fixed-size buffers):
 * 43 characters ≈ 256 bits, 32 ≈ 190 bits.
 */
export const SECRET_LENGTH = 43;
export const TOKEN_LENGTH = 32;
/**
 * Cost for *machine* credentials. Device secrets and access tokens are 190–256
 * random bits, so no work factor is needed against guessing; scrypt is kept for
 * uniformity with the hashes at rest, at a cost (N=2^10, ~1 ms) that lets
 * 5,000 devices reconnect after a controller restart in seconds rather than
 * minutes (at N=2^14 each check took ~65 ms: 5,000 reconnects ≈ 160 s).
 * Human passwords use a far higher cost (auth module).
 */
export const SCRYPT = { N: 1024, r: 8, p: 1, keylen: 32, saltBytes: 16 } as const;
/** Longest secret or token accepted for verification (bounds the work per CONNECT). */
export const MAX_CREDENTIAL_LENGTH = 256;

export function generateSecret(): string {
  return randomBase62(SECRET_LENGTH);
}

export function generateAccessToken(): string {
  return randomBase62(TOKEN_LENGTH);
}

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

/** token_lookup column value. */
export function tokenLookup(token: string): string {
  return sha256Hex(token);
}

interface ParsedHash { N: number; r: number; p: number; salt: Buffer; hash: Buffer }

function maxmem(N: number, r: number): number {
  return 256 * N * r; // node needs > 128*N*r
}

function encode(salt: Buffer, hash: Buffer): string {
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

/** Parses an encoded hash; null when malformed or with out-of-range parameters. */
export function parseHash(encoded: string): ParsedHash | null {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  if (!Number.isInteger(N) || N < 1024 || N > 1_048_576 || (N & (N - 1)) !== 0) return null;
  if (!Number.isInteger(r) || r < 1 || r > 32 || !Number.isInteger(p) || p < 1 || p > 16) return null;
  const salt = Buffer.from(parts[4]!, 'base64url');
  const hash = Buffer.from(parts[5]!, 'base64url');
  if (salt.length < 8 || hash.length < 16 || hash.length > 64) return null;
  return { N, r, p, salt, hash };
}

function scryptAsync(plain: string, salt: Buffer, keylen: number, N: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(plain, salt, keylen, { N, r, p, maxmem: maxmem(N, r) }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export async function hashSecret(plain: string): Promise<string> {
  const salt = randomBytes(SCRYPT.saltBytes);
  return encode(salt, await scryptAsync(plain, salt, SCRYPT.keylen, SCRYPT.N, SCRYPT.r, SCRYPT.p));
}

/** Constant-time check of a secret against an encoded hash (async scrypt: the event loop is not blocked). */
export async function verifySecret(plain: string, encoded: string): Promise<boolean> {
  const h = parseHash(encoded);
  if (!h) return false;
  const key = await scryptAsync(plain, h.salt, h.hash.length, h.N, h.r, h.p);
  return timingSafeEqual(key, h.hash);
}

/** A Map used as an LRU: insertion order = recency. */
class Lru<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly max: number) {}
  get size(): number { return this.map.size; }
  get(key: string): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) { this.map.delete(key); this.map.set(key, v); }
    return v;
  }
  set(key: string, v: V): void {
    this.map.delete(key);
    this.map.set(key, v);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as string);
  }
  deleteWhere(pred: (v: V) => boolean): void {
    for (const [k, v] of this.map) if (pred(v)) this.map.delete(k);
  }
  clear(): void { this.map.clear(); }
}

interface CacheEntry { deviceId: string; encoded: string }

export interface VerifierOptions {
  /** Entries per cache (successful and failed verifications are cached separately). */
  maxEntries?: number;
  /** scrypt computations running at once; the rest wait (leaves libuv threads for disk I/O). */
  maxConcurrent?: number;
}

/**
 * Verifies device credentials with an in-memory cache so a reconnection storm
 * (thousands of devices after a network outage) costs one sha256 per device
 * instead of one scrypt. Key = sha256(deviceId, secret); an entry is valid only
 * while the stored hash is unchanged, and is dropped when the device is
 * deleted or disabled. Failed checks are cached too (a device retrying with a
 * stale secret every few seconds costs nothing), in a separate LRU so failures
 * cannot evict successes. Concurrent checks of the same key share one scrypt.
 */
export class CredentialVerifier {
  private readonly ok: Lru<CacheEntry>;
  private readonly bad: Lru<CacheEntry>;
  private readonly inflight = new Map<string, Promise<boolean>>();
  private readonly maxConcurrent: number;
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  /** Counters for tests and diagnostics. */
  readonly stats = { hits: 0, misses: 0 };

  constructor(opts: VerifierOptions = {}) {
    this.ok = new Lru(opts.maxEntries ?? 10_000);
    this.bad = new Lru(opts.maxEntries ?? 10_000);
    this.maxConcurrent = Math.max(1, opts.maxConcurrent ?? 2);
  }

  get size(): number { return this.ok.size; }

  async verify(deviceId: string, secret: string, encoded: string): Promise<boolean> {
    if (secret.length === 0 || secret.length > MAX_CREDENTIAL_LENGTH) return false;
    const key = sha256Hex(`${deviceId}\u0000${secret}`);
    const okHit = this.ok.get(key);
    if (okHit && okHit.encoded === encoded && okHit.deviceId === deviceId) { this.stats.hits++; return true; }
    const badHit = this.bad.get(key);
    if (badHit && badHit.encoded === encoded && badHit.deviceId === deviceId) { this.stats.hits++; return false; }
    const pending = this.inflight.get(key);
    if (pending) return pending;
    this.stats.misses++;
    const p = this.compute(secret, encoded).then((good) => {
      (good ? this.ok : this.bad).set(key, { deviceId, encoded });
      return good;
    }).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  /** Forget everything cached for a device (deleted, disabled, credentials changed). */
  invalidate(deviceId: string): void {
    this.ok.deleteWhere((e) => e.deviceId === deviceId);
    this.bad.deleteWhere((e) => e.deviceId === deviceId);
  }

  clear(): void {
    this.ok.clear();
    this.bad.clear();
  }

  private async compute(secret: string, encoded: string): Promise<boolean> {
    await this.acquire();
    try {
      return await verifySecret(secret, encoded);
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.running < this.maxConcurrent) { this.running++; return Promise.resolve(); }
    return new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  /** Hands the slot straight to the next waiter, so the limit holds. */
  private release(): void {
    const next = this.waiting.shift();
    if (next) next(); else this.running--;
  }
}

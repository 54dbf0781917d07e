/**
 * Ed25519 for signed commands (firmware-protocols/device-protocol.md §11.6): the `signed` string,
 * the signature, key ids. Pure functions over node:crypto; the key ring (ring.ts) keeps the keys.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import type { CommandSignature, CommandToSign } from '../types.js';

/** An Ed25519 private key is its 32-byte seed (RFC 8032 §5.1.5); PKCS#8 wraps it behind this fixed DER header. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
/** SubjectPublicKeyInfo header of a raw 32-byte Ed25519 public key. */
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const SEED_BYTES = 32;

/** A signing key as the ring holds it. */
export interface SigningKey {
  kid: string;
  /** base64url of the 32 raw public-key bytes: what `GET /api/v1/command-keys` lists. */
  publicKey: string;
  privateKey: KeyObject;
}

/** Key id: the first 8 bytes of SHA-256 over the raw public key, in hex (short, and checkable by a device). */
export function kidOf(publicKeyRaw: Buffer): string {
  return createHash('sha256').update(publicKeyRaw).digest('hex').slice(0, 16);
}

/** A fresh random seed (node:crypto generateKeyPairSync), base64url. */
export function newSeed(): string {
  const { privateKey } = generateKeyPairSync('ed25519');
  const d = privateKey.export({ format: 'jwk' }).d;
  if (typeof d !== 'string') throw new Error('ed25519 key without a private part');
  return d;
}

/** The signing key of a 32-byte seed (base64url). Throws for anything else. */
export function keyFromSeed(seedB64url: string): SigningKey {
  const seed = Buffer.from(seedB64url, 'base64url');
  if (seed.length !== SEED_BYTES) throw new Error(`an Ed25519 seed has ${SEED_BYTES} bytes, not ${seed.length}`);
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const x = createPublicKey(privateKey).export({ format: 'jwk' }).x;
  if (typeof x !== 'string') throw new Error('ed25519 key without a public part');
  return { kid: kidOf(Buffer.from(x, 'base64url')), publicKey: x, privateKey };
}

/**
 * The `signed` string: the command as JSON, keys in this order, no spaces. Its exact bytes are what
 * the signature covers; a speaker verifies them as received and never re-serialises (§11.6).
 */
export function signedString(cmd: CommandToSign): string {
  return JSON.stringify({ deviceId: cmd.deviceId, requestId: cmd.requestId, method: cmd.method, params: cmd.params, expiresAt: cmd.expiresAt });
}

export function signCommand(key: SigningKey, cmd: CommandToSign): CommandSignature {
  const signed = signedString(cmd);
  const sig = sign(null, Buffer.from(signed, 'utf8'), key.privateKey).toString('base64url');
  return { signed, sig, kid: key.kid };
}

/** signCommand() with the signature made on libuv's thread pool (node:crypto sign with a callback). */
export function signCommandAsync(key: SigningKey, cmd: CommandToSign): Promise<CommandSignature> {
  const signed = signedString(cmd);
  return new Promise((resolve, reject) => {
    sign(null, Buffer.from(signed, 'utf8'), key.privateKey, (err, sig) => {
      if (err) reject(err);
      else resolve({ signed, sig: sig.toString('base64url'), kid: key.kid });
    });
  });
}

/** Checks `sig` over the UTF-8 bytes of `signed` with a listed public key (base64url of 32 raw bytes). */
export function verifySigned(publicKey: string, signed: string, sig: string): boolean {
  const raw = Buffer.from(publicKey, 'base64url');
  const s = Buffer.from(sig, 'base64url');
  if (raw.length !== 32 || s.length !== 64) return false;
  const key = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
  return verify(null, Buffer.from(signed, 'utf8'), key, s);
}

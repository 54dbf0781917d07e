/**
 * Encryption at rest of the cluster's shared secrets (store.ts): AES-256-GCM
 * (node:crypto) under a key-encryption key derived with HKDF-SHA256 from the
 * audit key, which every node of a cluster already holds (its audit chain is
 * keyed with it and a node with another key refuses to start).
 *
 * Why derive, not reuse: the audit key signs the audit chain and its anchors
 * (HMAC). HKDF with its own `info` gives a key that is independent of those
 * uses: knowing or misusing one (e.g. an HMAC computed over chosen data) says
 * nothing about the other, and a later key for another purpose takes another
 * `info`. Why not one more setting: a second secret every node must share is
 * one more thing to distribute and to get wrong, and it would protect nothing
 * more; whoever has the audit key already has every node's configuration.
 *
 * Each row's name is the GCM additional data: a sealed value moved to another
 * row (the media key put where the command keys belong) does not open.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';

/** HKDF `info` of the key-encryption key; a new use of the audit key takes another info. */
export const SECRETS_KEK_INFO = 'keng cluster secrets v1: AES-256-GCM key-encryption key';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export interface SecretsKek {
  /** Fingerprint (16 hex digits) stored with each row: a wrong key is told apart from a damaged row. */
  readonly id: string;
  readonly key: Buffer;
}

export function deriveKek(rootSecret: Buffer): SecretsKek {
  const key = Buffer.from(hkdfSync('sha256', rootSecret, Buffer.alloc(0), SECRETS_KEK_INFO, 32));
  return { id: createHmac('sha256', key).update('keng secrets key id', 'utf8').digest('hex').slice(0, 16), key };
}

const aad = (name: string): Buffer => Buffer.from(`keng secret v1:${name}`, 'utf8');

/** `plaintext` sealed for row `name`: a fresh random nonce, and the ciphertext followed by its 16-byte tag. */
export function seal(kek: SecretsKek, name: string, plaintext: Buffer): { nonce: Buffer; sealed: Buffer } {
  const nonce = randomBytes(NONCE_BYTES);
  const c = createCipheriv('aes-256-gcm', kek.key, nonce, { authTagLength: TAG_BYTES });
  c.setAAD(aad(name));
  const sealed = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
  return { nonce, sealed };
}

/** The plaintext, or null when the key is not the one it was sealed with or the bytes were changed. */
export function unseal(kek: SecretsKek, name: string, nonce: Buffer, sealed: Buffer): Buffer | null {
  if (nonce.length !== NONCE_BYTES || sealed.length < TAG_BYTES) return null;
  try {
    const d = createDecipheriv('aes-256-gcm', kek.key, nonce, { authTagLength: TAG_BYTES });
    d.setAAD(aad(name));
    d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    return Buffer.concat([d.update(sealed.subarray(0, sealed.length - TAG_BYTES)), d.final()]);
  } catch {
    return null;
  }
}

/**
 * Short-lived signed links for speakers, which cannot hold a bearer token:
 *   <base>/media/<id>/file?exp=<unix s>&sig=<base64url HMAC-SHA256(key, "<id>\n<exp>")>
 * The key is 32 random bytes kept in <dataDir>/media-signing.key (mode 0600),
 * so links survive restarts; deleting the file revokes every link.
 *
 * Cluster mode: a link made by one node is checked by whichever node the
 * speaker's download reaches, so every node uses one key, sealed in
 * PostgreSQL (sharedSigningKey). The firmware links (src/firmware) use the
 * same signer with their own key.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from '../core/logger.js';
import { loadOrCreateSecretFile, readSecretFile } from '../core/secret-file.js';
import { adoptSharedSecret, type SharedSecrets } from '../storage/secrets/index.js';

export const SIGNING_KEY_FILE = 'media-signing.key';
const KEY_BYTES = 32;

/** Reads the key file, creating it (exclusive, 0600, synced: core/secret-file.ts) when absent. */
export function loadOrCreateKey(file: string): Buffer {
  const { data } = loadOrCreateSecretFile(file, () => randomBytes(KEY_BYTES));
  if (data.length < 16) throw new Error(`${file} is shorter than 16 bytes; delete it to generate a new key`);
  return data;
}

/**
 * Cluster mode: the link-signing key row `name` of `cluster_secrets`, shared by every node. The
 * database's key wins; when it has none, this node's `file` is imported (links it handed out stay
 * valid), else a key is made; nodes starting at once end with the first insert's key.
 */
export async function sharedSigningKey(secrets: SharedSecrets, name: string, what: string, file: string, logger: Logger): Promise<Buffer> {
  const local = readSecretFile(file);
  const { data } = await adoptSharedSecret(secrets, {
    name, what, file, local: local && local.length >= 16 ? local : null, make: () => randomBytes(KEY_BYTES),
  }, logger);
  if (data.length < 16) throw new Error(`the ${what} in cluster_secrets "${name}" is shorter than 16 bytes`);
  return data;
}

export type Verdict = 'ok' | 'missing' | 'bad-signature' | 'expired';

export class UrlSigner {
  /**
   * Recent signatures: a broadcast to 2,000 speakers signs the same (id, exp) 2,000 times within a
   * second, and the 2,000 downloads verify it again. Deterministic, so remembering them is safe.
   */
  private readonly recent = new Map<string, string>();

  constructor(private readonly key: Buffer) {}

  sign(id: string, exp: number): string {
    const input = `${id}\n${exp}`;
    let sig = this.recent.get(input);
    if (sig === undefined) {
      sig = createHmac('sha256', this.key).update(input).digest('base64url');
      this.recent.set(input, sig);
      if (this.recent.size > 64) this.recent.delete(this.recent.keys().next().value!);
    }
    return sig;
  }

  /** Checks a link's `exp` and `sig` (timing-safe) at `nowMs`. */
  verify(id: string, exp: string | undefined, sig: string | undefined, nowMs: number): Verdict {
    if (!exp || !sig) return 'missing';
    if (!/^\d{1,12}$/.test(exp) || !/^[A-Za-z0-9_-]{43}$/.test(sig)) return 'bad-signature';
    const want = Buffer.from(this.sign(id, Number(exp)), 'base64url');
    const got = Buffer.from(sig, 'base64url');
    if (got.length !== want.length || !timingSafeEqual(got, want)) return 'bad-signature';
    return Number(exp) * 1000 < nowMs ? 'expired' : 'ok';
  }
}

/**
 * The command key ring on disk: `<dataDir>/command-keys.json`, mode 0600, like the other secrets
 * Keng holds in plain text (admin-token, media-signing.key). Not in state.db: the state store keeps
 * only hashes of credentials, and a copy of it (sent along with a bug report, opened with sqlite3)
 * must not carry the power to make every loudspeaker of the commune sound.
 *
 * Written whole to a temporary file (0600), synced and renamed into place, so a crash during a
 * rotation leaves the old ring or the new one, never half of one.
 *
 * Cluster mode keeps the ring sealed in PostgreSQL instead (ring.ts); this file is then only read,
 * once, to import it when the database has no ring yet.
 */
import { readFileSync } from 'node:fs';
import { tightenMode, writePrivateFileAtomic } from '../../core/private-files.js';
import { COMMAND_KEY_ALG } from '../../core/protocol.js';
import type { Logger } from '../../core/logger.js';

export const COMMAND_KEYS_FILE = 'command-keys.json';

export interface StoredKey {
  kid: string;
  alg: typeof COMMAND_KEY_ALG;
  /** base64url, 32 raw bytes. */
  publicKey: string;
  /** The private key: base64url of its 32-byte seed (RFC 8032 §5.1.5). */
  seed: string;
  createdAt: number;
}

export interface StoredRing {
  format: 1;
  /** kid of the key that signs new commands. */
  active: string;
  /** Every key still listed (active first, then rotated-out keys not yet retired). */
  keys: StoredKey[];
}

/** Reads the ring; null when the file does not exist. Throws, naming the file, when it is unusable. */
export function readRing(file: string, logger: Logger): StoredRing | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`cannot read the command key file ${file}: ${(err as Error).message}`, { cause: err });
  }
  const ring = parseRing(text);
  if (!ring) throw new Error(`the command key file ${file} is not a valid key ring; restore it from a backup (deleting it makes a new key that speakers do not know)`);
  const was = tightenMode(file);
  if (was !== undefined) logger.warn({ file, mode: was.toString(8) }, 'command key file was readable by others; permissions set to 0600');
  return ring;
}

/** The ring in `text` (the file's JSON, or the cluster database's), null when it is not a valid ring. */
export function parseRing(text: string): StoredRing | null {
  let v: unknown;
  try { v = JSON.parse(text); } catch { return null; }
  const r = v as Partial<StoredRing> | null;
  if (!r || r.format !== 1 || typeof r.active !== 'string' || !Array.isArray(r.keys) || r.keys.length === 0) return null;
  const ok = r.keys.every((k: Partial<StoredKey>) => typeof k === 'object' && k !== null && typeof k.kid === 'string' && k.alg === COMMAND_KEY_ALG
    && typeof k.publicKey === 'string' && typeof k.seed === 'string' && typeof k.createdAt === 'number');
  if (!ok || !r.keys.some((k) => k.kid === r.active)) return null;
  return r as StoredRing;
}

/** Replaces the file atomically, mode 0600 (core/private-files.ts). */
export function writeRing(file: string, ring: StoredRing): void {
  writePrivateFileAtomic(file, `${JSON.stringify(ring, null, 2)}\n`);
}

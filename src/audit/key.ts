/**
 * The audit key: the secret the audit chain is keyed with (chain.ts), kept
 * outside state.db so that holding the database alone does not let anyone
 * re-chain the log. From, in this order (docs/audit.md):
 *
 *   1. `audit.key` / KENG_AUDIT_KEY: the key itself (hex, or base64), for a
 *      secrets manager that hands out environment variables;
 *   2. `audit.keyFile` / KENG_AUDIT_KEY_FILE: a file elsewhere (another disk,
 *      a secrets mount), holding the key as hex or base64 text;
 *   3. `<dataDir>/audit-key`: generated on the server's first keyed start (0600).
 *
 * Only the server generates a key file, and only while the chain has no keyed
 * entry yet: a missing key for a keyed chain is an error to fix (restore the
 * file), never a reason to start a second chain with a new key.
 *
 * The key id (a fingerprint, HMAC of a fixed text) is stored with keyed rows
 * and anchors, so a wrong key is told apart from a rewritten chain.
 */
import { createHmac, randomBytes } from 'node:crypto';
import path from 'node:path';
import { Errors } from '../core/errors.js';
import { loadOrCreateSecretFile, readSecretFile, type LooseModeHandler } from '../core/secret-file.js';

export const AUDIT_KEY_FILE = 'audit-key';
/** Shortest key accepted: 256 bits. */
export const AUDIT_KEY_MIN_BYTES = 32;

export interface AuditKey {
  /** Fingerprint (16 hex digits): stored in keyed rows and anchors; reveals nothing of the key. */
  readonly id: string;
  readonly bytes: Buffer;
  /** Where it came from, for messages: "KENG_AUDIT_KEY (audit.key)" or a file. */
  readonly source: string;
}

/** The `audit` settings that choose the key. */
export interface AuditKeySettings {
  key?: string;
  keyFile?: string;
}

export function auditKeyId(bytes: Buffer): string {
  return createHmac('sha256', bytes).update('keng audit key id', 'utf8').digest('hex').slice(0, 16);
}

export function makeAuditKey(bytes: Buffer, source: string): AuditKey {
  return { id: auditKeyId(bytes), bytes, source };
}

/** The key from its text form: hex (at least 64 digits; tried first), else base64 or base64url; at least 32 bytes. */
export function decodeAuditKey(text: string): Buffer {
  const s = text.trim();
  if (/^[0-9a-fA-F]+$/.test(s) && s.length % 2 === 0 && s.length >= AUDIT_KEY_MIN_BYTES * 2) return Buffer.from(s, 'hex');
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(s)) {
    const b = Buffer.from(s, 'base64');
    if (b.length >= AUDIT_KEY_MIN_BYTES) return b;
  }
  throw new Error(`expected at least ${AUDIT_KEY_MIN_BYTES} bytes as hex (${AUDIT_KEY_MIN_BYTES * 2}+ digits) or base64, e.g. from \`openssl rand -hex 32\``);
}

/** Where the key is taken from: the setting itself, or a file (the configured one or the data directory's). */
export function auditKeyLocation(dataDir: string, s: AuditKeySettings): { label: string; file: string | null } {
  if (s.key !== undefined && s.keyFile !== undefined) throw Errors.CONFIG('KENG_AUDIT_KEY (audit.key): set either audit.key or audit.keyFile, not both');
  if (s.key !== undefined) return { label: 'KENG_AUDIT_KEY (audit.key)', file: null };
  if (s.keyFile !== undefined) { const file = path.resolve(s.keyFile); return { label: `audit.keyFile ${file}`, file }; }
  const file = path.join(path.resolve(dataDir), AUDIT_KEY_FILE);
  return { label: `audit key file ${file}`, file };
}

function decodeOrThrow(text: string, label: string): Buffer {
  try { return decodeAuditKey(text); } catch (err) { throw Errors.CONFIG(`${label}: ${(err as Error).message}`); }
}

/** The configured key; null when its file does not exist. Never creates anything (the CLI uses this). */
export function readAuditKey(dataDir: string, s: AuditKeySettings, onLoose?: LooseModeHandler): AuditKey | null {
  const where = auditKeyLocation(dataDir, s);
  if (where.file === null) return makeAuditKey(decodeOrThrow(s.key!, where.label), where.label);
  let data: Buffer | null;
  try { data = readSecretFile(where.file, onLoose); } catch (err) {
    throw Errors.CONFIG(`${where.label}: cannot read the audit key (${(err as Error).message})`);
  }
  return data === null ? null : makeAuditKey(decodeOrThrow(data.toString('utf8'), where.label), where.label);
}

/** The server's first keyed start: the key file is created (32 random bytes as hex, 0600) unless it exists. */
export function createAuditKey(dataDir: string, s: AuditKeySettings, onLoose?: LooseModeHandler): { key: AuditKey; created: boolean } {
  const where = auditKeyLocation(dataDir, s);
  if (where.file === null) return { key: makeAuditKey(decodeOrThrow(s.key!, where.label), where.label), created: false };
  let r: { data: Buffer; created: boolean };
  try {
    r = loadOrCreateSecretFile(where.file, () => Buffer.from(`${randomBytes(AUDIT_KEY_MIN_BYTES).toString('hex')}\n`), onLoose);
  } catch (err) {
    throw Errors.CONFIG(`${where.label}: cannot create the audit key (${(err as Error).message})`);
  }
  return { key: makeAuditKey(decodeOrThrow(r.data.toString('utf8'), where.label), where.label), created: r.created };
}

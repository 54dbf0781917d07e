/**
 * Anchors: the chain's head (seq, hash, where the keyed part starts) signed
 * with the audit key and kept OUTSIDE state.db: in the server's log (shipped
 * wherever the operator ships logs), in `<dataDir>/audit-anchors.jsonl` and,
 * if set, in `audit.anchorFile` (another disk). One JSON object per line,
 * appended, never rewritten.
 *
 * What an anchor adds to the keyed chain: the chain alone cannot show that
 * its newest entries were cut off (truncating the tail and the head record
 * leaves a shorter chain that still verifies). An anchor says "at this time
 * entry S had hash H": a chain without S, or with another hash at S, was
 * truncated or rewritten. The signature makes an anchor unforgeable without
 * the key, and lets an admin check a head pasted elsewhere.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { tightenMode } from '../core/private-files.js';
import path from 'node:path';
import { canonicalJson } from './canonical.js';
import type { AuditKey } from './key.js';

export const AUDIT_ANCHORS_FILE = 'audit-anchors.jsonl';
export const AUDIT_CLUSTER_ANCHORS_FILE = 'audit-anchors-cluster.jsonl';

/** The head of a chain. */
export interface ChainHead {
  /** Newest seq (0: empty chain). */
  seq: number;
  /** Its hash (GENESIS_HASH for an empty chain). */
  hash: string;
  /** First keyed seq; null while no entry is keyed. */
  keyedSince: number | null;
}

export interface AuditAnchor extends ChainHead {
  v: 1;
  /** When it was signed (ISO 8601, UTC). */
  at: string;
  /** Id of the key that signed it. */
  kid: string;
  /** Why: start, interval, stop (the server), head (asked for: CLI, API). */
  reason?: string;
  /** base64url HMAC-SHA256(key, "keng-audit-anchor\n" + canonical JSON of every other member). */
  sig: string;
}

/** An anchor and where it was read (file:line), for messages. */
export interface LocatedAnchor { where: string; anchor: AuditAnchor }

// Distinct from what chain links HMAC (they start with a 64-hex prev_hash), so one can never pass for the other.
const DOMAIN = 'keng-audit-anchor\n';

function mac(a: Omit<AuditAnchor, 'sig'>, key: AuditKey): string {
  const { v, seq, hash, keyedSince, at, kid, reason } = a;
  return createHmac('sha256', key.bytes).update(DOMAIN + canonicalJson({ v, seq, hash, keyedSince, at, kid, reason }), 'utf8').digest('base64url');
}

export function signAnchor(head: ChainHead, key: AuditKey, atMs: number, reason?: string): AuditAnchor {
  const a: Omit<AuditAnchor, 'sig'> = {
    v: 1, seq: head.seq, hash: head.hash, keyedSince: head.keyedSince, at: new Date(atMs).toISOString(), kid: key.id,
    ...(reason !== undefined ? { reason } : {}),
  };
  return { ...a, sig: mac(a, key) };
}

/** True when `key` signed the anchor as it stands (timing-safe). */
export function anchorSignatureOk(a: AuditAnchor, key: AuditKey): boolean {
  if (a.kid !== key.id) return false;
  const want = Buffer.from(mac(a, key), 'base64url');
  const got = Buffer.from(a.sig, 'base64url');
  return got.length === want.length && timingSafeEqual(got, want);
}

function isAnchor(v: unknown): v is AuditAnchor {
  const a = v as Partial<AuditAnchor> | null;
  return typeof a === 'object' && a !== null && a.v === 1
    && Number.isSafeInteger(a.seq) && a.seq! >= 0 && typeof a.hash === 'string' && /^[0-9a-f]{64}$/.test(a.hash)
    && (a.keyedSince === null || (Number.isSafeInteger(a.keyedSince) && a.keyedSince! >= 1))
    && typeof a.at === 'string' && typeof a.kid === 'string' && typeof a.sig === 'string'
    && (a.reason === undefined || typeof a.reason === 'string');
}

/**
 * One line: an anchor as written to the anchor file or printed by `keng audit head`, or a
 * server log line (pino JSON) that carries one as `auditAnchor`. Other JSON lines (the rest of
 * a log file) give 'other'; text that is not JSON, or an anchor of the wrong shape, 'bad'.
 */
export function parseAnchorLine(line: string): AuditAnchor | 'other' | 'bad' {
  let v: unknown;
  try { v = JSON.parse(line); } catch { return 'bad'; }
  if (typeof v !== 'object' || v === null) return 'bad';
  const o = v as Record<string, unknown>;
  const candidate = 'auditAnchor' in o ? o.auditAnchor : 'sig' in o && 'seq' in o ? o : undefined;
  if (candidate === undefined) return 'other';
  return isAnchor(candidate) ? candidate : 'bad';
}

/** Every anchor of a file; `problems` names lines that cannot be read (an edited or damaged file). Null when the file does not exist. */
export function readAnchorFile(file: string): { anchors: LocatedAnchor[]; problems: string[] } | null {
  let text: string;
  try { text = readFileSync(file, 'utf8'); } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return { anchors: [], problems: [`${file}: cannot read (${(err as Error).message})`] };
  }
  const anchors: LocatedAnchor[] = [];
  const problems: string[] = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const r = parseAnchorLine(line);
    // A last line without its newline is an append that a crash cut short (or one under way), not an edit.
    if (r === 'bad' && i === lines.length - 1) return;
    if (r === 'bad') problems.push(`${file}:${i + 1}: not a readable anchor`);
    else if (r !== 'other') anchors.push({ where: `${file}:${i + 1}`, anchor: r });
  });
  return { anchors, problems };
}

/** Appends one anchor line and syncs it (the file is created 0600; one an older version or a restore left readable is tightened). */
export function appendAnchor(file: string, a: AuditAnchor): void {
  tightenMode(file);
  const fd = openSync(file, 'a', 0o600);
  try {
    writeSync(fd, `${JSON.stringify(a)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The anchor files of a data directory: `<dataDir>/audit-anchors.jsonl`, then `audit.anchorFile` if set. */
/**
 * Where a node's anchors go: <dataDir>/audit-anchors.jsonl for the embedded chain, audit-anchors-cluster.jsonl for
 * the cluster's chain in PostgreSQL (a data directory that ran embedded before keeps the old chain's anchors apart),
 * plus audit.anchorFile.
 */
export function anchorFiles(dataDir: string, anchorFile?: string, cluster = false): string[] {
  const own = path.join(path.resolve(dataDir), cluster ? AUDIT_CLUSTER_ANCHORS_FILE : AUDIT_ANCHORS_FILE);
  const extra = anchorFile === undefined ? null : path.resolve(anchorFile);
  return extra === null || extra === own ? [own] : [own, extra];
}

/** Reads several anchor files (and log files holding anchors); names the ones that do not exist. */
export function readAnchorFiles(files: readonly string[]): { anchors: LocatedAnchor[]; problems: string[]; missing: string[] } {
  const out = { anchors: [] as LocatedAnchor[], problems: [] as string[], missing: [] as string[] };
  for (const f of files) {
    const r = readAnchorFile(f);
    if (r === null) { out.missing.push(f); continue; }
    out.anchors.push(...r.anchors);
    out.problems.push(...r.problems);
  }
  return out;
}

/**
 * The two link rules of the audit chain (docs/audit.md).
 *
 *   unkeyed (key_id NULL):  hash = sha256(prev_hash + canonicalJson(fields))
 *   keyed (key_id set):     hash = HMAC-SHA256(key, prev_hash + canonicalJson(fields + key_id))
 *
 * The first rule is the one Keng shipped first: anyone can recompute it, so
 * someone holding only state.db could edit a row and re-chain everything
 * after it. The second needs the audit key, which is never in the database.
 * Rows written before the upgrade keep the first rule (their hashes cannot
 * change without breaking every later link); from the upgrade on every row is
 * keyed, and verify.ts refuses an unkeyed row after a keyed one, so keyed rows
 * cannot be "downgraded" to the rule anyone can compute.
 *
 * key_id is part of what the HMAC covers, so it cannot be swapped either.
 */
import { createHash, createHmac } from 'node:crypto';
import { canonicalJson } from './canonical.js';

export const GENESIS_HASH = '0'.repeat(64);

/** Action of the entry that starts the keyed part of a chain (written by AuditLog when it first has a key). */
export const CHAIN_KEYED_ACTION = 'audit.chain_keyed';

/** The stored form of an entry. */
export interface AuditRow {
  seq: number;
  at: number;
  actor: string;
  action: string;
  target: string | null;
  ip: string | null;
  before_json: string | null;
  after_json: string | null;
  prev_hash: string;
  hash: string;
  /** Fingerprint of the key of a keyed row (key.ts auditKeyId); null: an unkeyed (sha256) row. */
  key_id: string | null;
}

type Fields = Omit<AuditRow, 'hash' | 'key_id'> & { key_id?: string | null };

function body(r: Fields, withKeyId: boolean): string {
  return canonicalJson({
    seq: r.seq, at: r.at, actor: r.actor, action: r.action, target: r.target, ip: r.ip,
    before_json: r.before_json, after_json: r.after_json, prev_hash: r.prev_hash,
    ...(withKeyId ? { key_id: r.key_id } : {}),
  });
}

/** The unkeyed rule: the hash of a row given its fields (everything but `hash`; key_id is not part of it). */
export function rowHash(r: Fields): string {
  return createHash('sha256').update(r.prev_hash + body(r, false), 'utf8').digest('hex');
}

/** The keyed rule: HMAC-SHA256 with the audit key over the fields and key_id. */
export function keyedRowHash(r: Fields & { key_id: string }, key: Buffer): string {
  return createHmac('sha256', key).update(r.prev_hash + body(r, true), 'utf8').digest('hex');
}

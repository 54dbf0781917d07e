/**
 * Walks the audit chain (see log.ts) and reports the first broken seq.
 * Shared by `keng audit verify` and the tests.
 */
import type Database from 'better-sqlite3';
import { GENESIS_HASH, rowHash, type AuditRow } from './log.js';

export type ChainReport =
  | { ok: true; count: number; lastSeq: number }
  | { ok: false; count: number; seq: number; reason: string };

export function verifyAuditChain(db: Database.Database): ChainReport {
  let prevHash = GENESIS_HASH;
  let prevSeq = 0;
  let count = 0;
  for (const r of db.prepare('SELECT * FROM audit_log ORDER BY seq').iterate() as IterableIterator<AuditRow>) {
    count++;
    const broken = (reason: string): ChainReport => ({ ok: false, count, seq: r.seq, reason });
    if (r.seq !== prevSeq + 1) return broken(prevSeq + 1 < r.seq ? `rows ${prevSeq + 1}..${r.seq - 1} are missing` : 'sequence out of order');
    if (r.prev_hash !== prevHash) return broken('prev_hash does not match the previous row (a row was removed, inserted or reordered)');
    if (rowHash(r) !== r.hash) return broken('hash does not match the row (the row was edited)');
    prevHash = r.hash;
    prevSeq = r.seq;
  }
  const head = db.prepare('SELECT seq, hash FROM audit_head WHERE id = 1').get() as { seq: number; hash: string } | undefined;
  if (!head) {
    return count === 0 ? { ok: true, count, lastSeq: 0 } : { ok: false, count, seq: prevSeq, reason: 'the head record is missing' };
  }
  if (head.seq !== prevSeq || head.hash !== prevHash) {
    return head.seq > prevSeq
      ? { ok: false, count, seq: prevSeq + 1, reason: `rows ${prevSeq + 1}..${head.seq} are missing (the log was truncated)` }
      : { ok: false, count, seq: head.seq, reason: 'the head record does not match the last row' };
  }
  return { ok: true, count, lastSeq: prevSeq };
}

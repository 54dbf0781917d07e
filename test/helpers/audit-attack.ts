/**
 * What the issue's attacker did with nothing but the database (better-sqlite3 on state.db): edit
 * an entry, drop another, then re-chain everything after the first change so every link fits
 * again: with the hash function Keng shipped (plain sha256 over the canonical row), or with an
 * HMAC key of their own. Used by the unit tests and by the CLI attack test on a copied data dir.
 */
import type Database from 'better-sqlite3';
import { GENESIS_HASH, auditKeyId, keyedRowHash, rowHash, type AuditRow } from '../../src/audit/index.js';

/** sha256: the first rule (key_id cleared, i.e. "downgraded"); key: HMAC with a made-up key, key_id = its id unless given. */
export type Rechain = { rule: 'sha256' } | { rule: 'key'; key: Buffer; keyId?: string };

/** Recomputes prev_hash and hash of every row from `fromSeq` on, and the head record. */
export function rechain(db: Database.Database, fromSeq: number, how: Rechain): void {
  const rows = db.prepare('SELECT * FROM audit_log ORDER BY seq').all() as AuditRow[];
  const update = db.prepare('UPDATE audit_log SET prev_hash = @prev_hash, hash = @hash, key_id = @key_id WHERE seq = @seq');
  let prev = GENESIS_HASH;
  db.transaction(() => {
    for (const r of rows) {
      if (r.seq >= fromSeq) {
        r.prev_hash = prev;
        if (how.rule === 'sha256') { r.key_id = null; r.hash = rowHash(r); } else {
          r.key_id = how.keyId ?? auditKeyId(how.key);
          r.hash = keyedRowHash({ ...r, key_id: r.key_id }, how.key);
        }
        update.run(r);
      }
      prev = r.hash;
    }
    const last = rows.at(-1);
    if (last) db.prepare('UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1').run(last.seq, last.hash);
  })();
}

/** Removes one row and renumbers the later ones, so that no gap shows. */
export function dropRow(db: Database.Database, seq: number): void {
  db.transaction(() => {
    db.prepare('DELETE FROM audit_log WHERE seq = ?').run(seq);
    const later = db.prepare('SELECT seq FROM audit_log WHERE seq > ? ORDER BY seq').pluck().all(seq) as number[];
    const move = db.prepare('UPDATE audit_log SET seq = ? WHERE seq = ?');
    for (const s of later) move.run(s - 1, s);
  })();
}

/** Cuts off every row after `lastKept` and points the head record at the new last row. */
export function truncateAfter(db: Database.Database, lastKept: number): void {
  db.transaction(() => {
    db.prepare('DELETE FROM audit_log WHERE seq > ?').run(lastKept);
    const last = db.prepare('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string };
    db.prepare('UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1').run(last.seq, last.hash);
  })();
}

/**
 * The issue's attack: who deleted a device becomes someone else, a lockout row disappears, and the
 * chain is recomputed from the first change on. Returns the seq of the edited row.
 */
export function issueAttack(db: Database.Database, how: Rechain, opts: { newActor?: string } = {}): { edited: number; dropped: number } {
  const edited = db.prepare("SELECT seq FROM audit_log WHERE action = 'device.delete' ORDER BY seq LIMIT 1").pluck().get() as number | undefined;
  const dropped = db.prepare("SELECT seq FROM audit_log WHERE action = 'auth.lockout' ORDER BY seq LIMIT 1").pluck().get() as number | undefined;
  if (edited === undefined || dropped === undefined) throw new Error('the log has no device.delete or no auth.lockout entry to attack');
  db.prepare('UPDATE audit_log SET actor = ? WHERE seq = ?').run(opts.newActor ?? 'user:someone-else', edited);
  dropRow(db, dropped);
  rechain(db, Math.min(edited, dropped), how);
  return { edited, dropped };
}

/**
 * Walks the audit chain (chain.ts) and checks the anchors (anchor.ts); reports
 * the first problem. Shared by `keng audit verify`, the server and the tests.
 *
 * What each check catches (docs/audit.md says the same for operators):
 *  - links (seq, prev_hash, hash): an edited, removed, inserted or reordered
 *    row, when the rows after it were not re-chained;
 *  - the keyed rule (HMAC with the key): a re-chaining by someone without the
 *    key, with plain sha256 or with a key of their own;
 *  - no unkeyed row after a keyed one, and the keyed part starting with the
 *    `audit.chain_keyed` entry: a rewrite of keyed rows to the sha256 rule;
 *  - anchors (signed heads kept outside the database): a cut tail, and a
 *    rewrite of everything, switch point included, to the sha256 rule.
 * What no check can catch: someone holding the key, the database and every
 * anchor copy (or a change made after the newest anchor by someone who also
 * cuts it off: an anchor covers the chain up to its seq only).
 */
import { sql, type Transaction } from 'kysely';
import type { Db } from '../storage/sql/index.js';
import { anchorSignatureOk, type LocatedAnchor } from './anchor.js';
import { CHAIN_KEYED_ACTION, GENESIS_HASH, keyedRowHash, rowHash, type AuditRow } from './chain.js';
import type { AuditKey } from './key.js';

export interface VerifyOptions {
  /** The audit key; without it a keyed chain cannot be checked (kind 'no-key'). */
  key?: AuditKey | null;
  /** Anchors to check, read BEFORE this call (an anchor written later may name entries this snapshot lacks). */
  anchors?: readonly LocatedAnchor[];
}

/** tampered: the log was changed; wrong-key / no-key: the log cannot be checked with what was given. */
export type FailureKind = 'tampered' | 'wrong-key' | 'no-key';

export interface ChainSummary {
  /** Entries walked. */
  count: number;
  lastSeq: number;
  /** First keyed seq; null when no entry is keyed. */
  keyedSince: number | null;
  /** Key id the chain's keyed entries name. */
  keyId: string | null;
  /** Anchors whose signature and (seq, hash) were checked. */
  anchors: number;
}

export type ChainReport =
  | (ChainSummary & { ok: true })
  | (ChainSummary & { ok: false; kind: FailureKind; seq: number; reason: string });

interface Walk extends ChainSummary { prevHash: string; failure?: { kind: FailureKind; seq: number; reason: string } }

const PAGE = 2_000;

/** The rows in seq order, a page at a time (a long chain never sits in memory whole). */
async function* rowsOf(trx: Transaction<unknown>): AsyncGenerator<AuditRow> {
  let after = -1;
  for (;;) {
    const page = (await sql<AuditRow>`SELECT seq, at, actor, action, target, ip, before_json, after_json, prev_hash, hash, key_id
      FROM audit_log WHERE seq > ${after} ORDER BY seq LIMIT ${sql.lit(PAGE)}`.execute(trx)).rows;
    yield* page;
    if (page.length < PAGE) return;
    after = page.at(-1)!.seq;
  }
}

/** The chain alone: links, rules, head record. Stops at the first tampered row. */
async function walk(trx: Transaction<unknown>, key: AuditKey | null): Promise<Walk> {
  const w: Walk = { count: 0, lastSeq: 0, keyedSince: null, keyId: null, anchors: 0, prevHash: GENESIS_HASH };
  let keyTrouble: Walk['failure'];
  for await (const r of rowsOf(trx)) {
    w.count++;
    const broken = (reason: string): Walk => ({ ...w, failure: { kind: 'tampered', seq: r.seq, reason } });
    if (r.seq !== w.lastSeq + 1) return broken(w.lastSeq + 1 < r.seq ? `rows ${w.lastSeq + 1}..${r.seq - 1} are missing` : 'sequence out of order');
    if (r.prev_hash !== w.prevHash) return broken('prev_hash does not match the previous row (a row was removed, inserted or reordered)');
    if (r.key_id === null) {
      if (w.keyedSince !== null) return broken(`an unkeyed (sha256) row after the chain was keyed at seq ${w.keyedSince}: keyed rows were rewritten to the rule anyone can compute`);
      if (rowHash(r) !== r.hash) return broken('hash does not match the row (the row was edited)');
    } else {
      if (w.keyedSince === null) {
        w.keyedSince = r.seq;
        w.keyId = r.key_id;
        if (r.action !== CHAIN_KEYED_ACTION) {
          return broken(`the keyed part does not start with the ${CHAIN_KEYED_ACTION} entry: it was removed, or keyed rows before this one were rewritten to the unkeyed rule`);
        }
      }
      if (r.key_id !== w.keyId) return broken(`keyed with key id ${r.key_id}, but the chain is keyed with key id ${w.keyId} since seq ${w.keyedSince}`);
      if (!key) {
        keyTrouble ??= { kind: 'no-key', seq: r.seq, reason: `the chain is keyed since seq ${w.keyedSince} (key id ${w.keyId}) and no audit key was given, so its keyed entries cannot be checked` };
      } else if (key.id !== w.keyId) {
        keyTrouble ??= { kind: 'wrong-key', seq: r.seq, reason: `the chain is keyed with key id ${w.keyId} since seq ${w.keyedSince}, but the key from ${key.source} has id ${key.id}` };
      } else if (keyedRowHash({ ...r, key_id: r.key_id }, key.bytes) !== r.hash) {
        return broken('the HMAC does not match the row: it was edited, or re-chained without the audit key');
      }
    }
    w.prevHash = r.hash;
    w.lastSeq = r.seq;
  }
  const head = (await sql<{ seq: number; hash: string }>`SELECT seq, hash FROM audit_head WHERE id = 1`.execute(trx)).rows[0];
  const end = (seq: number, reason: string): Walk => ({ ...w, failure: { kind: 'tampered', seq, reason } });
  if (!head) {
    if (w.count > 0) return end(w.lastSeq, 'the head record is missing');
  } else if (head.seq !== w.lastSeq || head.hash !== w.prevHash) {
    return head.seq > w.lastSeq
      ? end(w.lastSeq + 1, `rows ${w.lastSeq + 1}..${head.seq} are missing (the log was truncated)`)
      : end(head.seq, 'the head record does not match the last row');
  }
  return keyTrouble ? { ...w, failure: keyTrouble } : w;
}

/** The anchors against the walked chain; the first contradiction, or the number checked. */
async function checkAnchors(trx: Transaction<unknown>, w: Walk, key: AuditKey, anchors: readonly LocatedAnchor[]): Promise<Walk> {
  const hashAt = async (seq: number): Promise<string | undefined> => (await sql<{ hash: string }>`SELECT hash FROM audit_log WHERE seq = ${seq}`.execute(trx)).rows[0]?.hash;
  const sorted = [...anchors].sort((a, b) => a.anchor.seq - b.anchor.seq);
  let lastGood = 0;
  let checked = 0;
  const fail = (seq: number, reason: string): Walk => ({ ...w, anchors: checked, failure: { kind: 'tampered', seq, reason } });
  for (const { where, anchor: a } of sorted) {
    const of = `the anchor of ${a.at} (${where})`;
    if (a.kid !== key.id) return fail(a.seq, `${of} was signed with key id ${a.kid}, not with the loaded key (id ${key.id}): an anchor of another installation, or forged`);
    if (!anchorSignatureOk(a, key)) return fail(a.seq, `${of} has a bad signature: it was forged or edited`);
    const claimed = a.keyedSince;
    const bindingOk = claimed === null ? w.keyedSince === null || w.keyedSince > a.seq : w.keyedSince === claimed;
    if (!bindingOk) {
      return fail(claimed ?? a.seq, `${of} records the chain as keyed since seq ${claimed ?? '(not yet)'}, but it is now `
        + `${w.keyedSince === null ? 'not keyed at all' : `keyed since seq ${w.keyedSince}`}: keyed entries were rewritten to the unkeyed rule`);
    }
    if (a.seq > w.lastSeq) return fail(w.lastSeq + 1, `rows ${w.lastSeq + 1}..${a.seq} are missing: ${of} records seq ${a.seq} (the log was truncated)`);
    if (a.seq > 0 && (await hashAt(a.seq)) !== a.hash) {
      return fail(a.seq, `entry ${a.seq} is not the one ${of} records: the chain was rewritten between seq ${lastGood + 1} and ${a.seq}`);
    }
    lastGood = a.seq;
    checked++;
  }
  return { ...w, anchors: checked };
}

export async function verifyAuditChain(db: Db<unknown>, opts: VerifyOptions = {}): Promise<ChainReport> {
  // One snapshot: the server (or another node) may append meanwhile, and the walk and the head record must agree.
  return db.snapshot((trx) => verifyAuditChainIn(trx, opts));
}

/**
 * The same check inside a transaction the caller holds (`keng cluster import` checks the chain it copied
 * before it commits); the transaction must see one snapshot.
 */
export async function verifyAuditChainIn(trx: Transaction<unknown>, opts: VerifyOptions = {}): Promise<ChainReport> {
  const key = opts.key ?? null;
  let r = await walk(trx, key);
  if (r.failure?.kind === 'wrong-key' && key) {
    // Anchors that the loaded key did sign prove it is this installation's key: then the rows' key id was forged.
    const proof = (opts.anchors ?? []).find((a) => anchorSignatureOk(a.anchor, key));
    if (proof) {
      r = { ...r, failure: { kind: 'tampered', seq: r.failure.seq, reason: `keyed with key id ${r.keyId}, but ${proof.where} is signed with the loaded key `
        + `(id ${key.id}), so that is this chain's key: the keyed entries were re-chained with another key` } };
    }
  }
  if (!r.failure && key && opts.anchors?.length) r = await checkAnchors(trx, r, key, opts.anchors);
  if (!r.failure && key && r.count > 0 && r.keyedSince === null) {
    // Without anchors this is the one sign of a chain rewritten wholesale to the sha256 rule, switch entry included.
    r = { ...r, failure: { kind: 'tampered', seq: 1, reason: `no entry is keyed although there is an audit key (${key.source}): either no Keng `
      + 'with the keyed audit log has started on this state yet (start it once), or every keyed entry was rewritten to the unkeyed rule' } };
  }
  const { count, lastSeq, keyedSince, keyId, anchors } = r;
  const summary: ChainSummary = { count, lastSeq, keyedSince, keyId, anchors };
  return r.failure ? { ...summary, ok: false, ...r.failure } : { ...summary, ok: true };
}

/**
 * The audit log, so that staff can answer "who changed this?": every change (who, what, when, from where,
 * before and after) appended to `audit_log`, chained (chain.ts: sha256 links for entries written before
 * the keyed chain, HMAC-SHA256 with the audit key from then on; docs/audit.md), with prev_hash of the
 * first row = 64 zeros, and `audit_head` holding the newest (seq, hash). Editing, deleting, inserting or
 * reordering a row breaks the chain; verifyAuditChain() (shared by `keng audit verify` and the tests)
 * finds the first broken seq, and the anchors (anchor.ts) kept outside the database catch a cut tail.
 *
 * Append-only at the API level: there are no update or delete routes. Each
 * append runs in a BEGIN IMMEDIATE transaction, so the server and CLI
 * commands (separate processes) extend one chain without forks.
 *
 * Keying: the AuditLog is given the key with useKey() (the app's AuditChain at start, the CLI after
 * loading it). The first append with a key writes an `audit.chain_keyed` entry, the switch point, if
 * the chain has no keyed entry yet. Once the chain is keyed, an append without the key, or with
 * another key, is refused (KENG_ERR_AUDIT_KEY): nothing can add an unkeyed entry after keyed ones.
 *
 * Other modules record through `AuditRecorder.record(...)`, e.g.
 *   audit.record({ actor: principal, action: 'broadcast.start', target: `broadcast:${id}`, ip: req.ip, after: dto })
 * Snapshots are redacted (passwords, secrets, tokens, hashes) before storage.
 */
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { snapshotJson } from './canonical.js';
import { CHAIN_KEYED_ACTION, GENESIS_HASH, keyedRowHash, rowHash, type AuditRow } from './chain.js';
import type { ChainHead } from './anchor.js';
import type { AuditKey } from './key.js';
import { sql, type RawBuilder, type Transaction } from 'kysely';
import type { Db } from '../storage/sql/index.js';

export { GENESIS_HASH, rowHash, type AuditRow };

/** Who did it: a Principal fits ({kind, id}); `actorString` renders "kind:id". */
export interface Actor { kind: string; id: string }

export interface AuditInput {
  /** A principal, or an already-rendered actor such as "anonymous" or "cli:root". */
  actor: Actor | string;
  /** Dotted verb, e.g. "user.create", "auth.login_failed", "broadcast.start". */
  action: string;
  /** What it applies to, e.g. "user:alice", "device:loa-01". */
  target?: string | null;
  /** Client address (req.ip), null for the CLI and internal jobs. */
  ip?: string | null;
  before?: unknown;
  after?: unknown;
}

export interface AuditRecorder {
  /**
   * Appends one entry. With `trx` (the caller's write transaction on the state Db) the entry commits or rolls
   * back with the caller's change; without, it runs in its own write transaction.
   */
  record(entry: AuditInput, trx?: Transaction<unknown>): Promise<AuditEntry>;
}

export interface AuditEntry {
  seq: number; at: number; actor: string; action: string; target: string | null; ip: string | null;
  before: unknown; after: unknown; prevHash: string; hash: string;
}

export interface AuditFilter {
  from?: number;
  to?: number;
  actor?: string;
  action?: string;
  /** Only rows with seq below this (paging backwards). */
  beforeSeq?: number;
  limit?: number;
}

export function actorString(a: Actor | string): string {
  return typeof a === 'string' ? a : `${a.kind}:${a.id}`;
}

/** The head of the chain (one snapshot): newest seq and hash, and the first keyed seq. */
export function chainHead(db: Db<unknown>): Promise<ChainHead> {
  return db.snapshot(async (trx): Promise<ChainHead> => {
    const last = (await sql<{ seq: number; hash: string }>`SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`.execute(trx)).rows[0];
    const keyed = (await sql<{ s: number | null }>`SELECT MIN(seq) AS s FROM audit_log WHERE key_id IS NOT NULL`.execute(trx)).rows[0]?.s ?? null;
    return { seq: last?.seq ?? 0, hash: last?.hash ?? GENESIS_HASH, keyedSince: keyed === null ? null : Number(keyed) };
  });
}

export function toEntry(r: AuditRow): AuditEntry {
  const parse = (s: string | null): unknown => { if (s === null) return null; try { return JSON.parse(s); } catch { return s; } };
  return {
    seq: r.seq, at: r.at, actor: r.actor, action: r.action, target: r.target, ip: r.ip,
    before: parse(r.before_json), after: parse(r.after_json), prevHash: r.prev_hash, hash: r.hash,
  };
}

export interface AuditLogOptions {
  /** The state store as a Db (the embedded state.db, or PostgreSQL in cluster mode). */
  db: Db<unknown>;
  clock: Clock;
  logger?: Logger;
  /** The audit key; also settable later with useKey(). Without one, only an unkeyed chain can be extended. */
  key?: AuditKey | null;
}

const MAX_TEXT = 256;
const clip = (s: string | null | undefined): string | null => (s == null ? null : s.length > MAX_TEXT ? s.slice(0, MAX_TEXT) : s);

type Last = Pick<AuditRow, 'seq' | 'hash' | 'key_id'>;

export class AuditLog implements AuditRecorder {
  private readonly o: AuditLogOptions;
  private key: AuditKey | null;

  constructor(opts: AuditLogOptions) {
    this.o = opts;
    this.key = opts.key ?? null;
  }

  /** From now on appends are keyed with `key` (the first one writes the switch entry if the chain is not keyed yet). */
  useKey(key: AuditKey): void {
    this.key = key;
  }

  /** Id of the key in use; null without one. */
  get keyId(): string | null { return this.key?.id ?? null; }

  async record(e: AuditInput, trx?: Transaction<unknown>): Promise<AuditEntry> {
    const rows = trx ? await this.appendIn(trx, e) : await this.o.db.write((t) => this.appendIn(t, e));
    this.logRows(rows);
    return toEntry(rows.at(-1)!);
  }

  /** Writes the switch entry now if there is a key and the chain has no keyed entry yet (the server's start). */
  async ensureKeyed(): Promise<void> {
    this.logRows(await this.o.db.write((t) => this.appendIn(t)));
  }

  /** The chain's head (newest seq and hash, first keyed seq). */
  head(): Promise<ChainHead> {
    return chainHead(this.o.db);
  }

  /**
   * Inside a write transaction: the head is locked first (PostgreSQL: the audit_head row, FOR UPDATE), so
   * appends from several nodes queue behind each other and extend one chain, never fork it; SQLite's write
   * lock (BEGIN IMMEDIATE) does the same between the server and the CLI. READ COMMITTED reads the newest
   * row after the lock is granted, so the next append links to what the previous one committed.
   */
  private async appendIn(trx: Transaction<unknown>, e?: AuditInput): Promise<AuditRow[]> {
    if (this.o.db.dialect === 'postgres') await sql`SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE`.execute(trx);
    const last = (await sql<Last>`SELECT seq, hash, key_id FROM audit_log ORDER BY seq DESC LIMIT 1`.execute(trx)).rows[0];
    const rows = this.plan(last, e);
    if (!rows.length) return rows;
    for (const r of rows) {
      await sql`INSERT INTO audit_log (seq, at, actor, action, target, ip, before_json, after_json, prev_hash, hash, key_id)
        VALUES (${r.seq}, ${r.at}, ${r.actor}, ${r.action}, ${r.target}, ${r.ip}, ${r.before_json}, ${r.after_json}, ${r.prev_hash}, ${r.hash}, ${r.key_id})`.execute(trx);
    }
    const top = rows.at(-1)!;
    await sql`INSERT INTO audit_head (id, seq, hash) VALUES (1, ${top.seq}, ${top.hash})
      ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`.execute(trx);
    return rows;
  }

  /** The rows to append after `last`: the switch entry when keying an unkeyed chain, then `e`. Refuses a missing or wrong key for a keyed chain. */
  private plan(last: Last | undefined, e?: AuditInput): AuditRow[] {
    const out = this.keyChain(last);
    if (e) out.push(this.row(e, out.at(-1) ?? last));
    return out;
  }

  private keyChain(head: Last | undefined): AuditRow[] {
    if (head && head.key_id !== null) {
      if (!this.key) {
        throw Errors.AUDIT_KEY(`the audit chain is keyed (key id ${head.key_id}) and this process has no audit key; `
          + 'give it the server\'s key (KENG_AUDIT_KEY, audit.keyFile, or <dataDir>/audit-key: docs/audit.md)');
      }
      if (head.key_id !== this.key.id) {
        throw Errors.AUDIT_KEY(`the audit key from ${this.key.source} (id ${this.key.id}) is not the key the audit chain is keyed with (id ${head.key_id})`);
      }
      return [];
    }
    if (!this.key) return [];
    return [this.row({
      actor: 'system', action: CHAIN_KEYED_ACTION, target: 'audit:chain',
      after: { keyId: this.key.id, algorithm: 'HMAC-SHA256', unkeyedEntries: head?.seq ?? 0 },
    }, head)];
  }

  private row(e: AuditInput, head: Pick<Last, 'seq' | 'hash'> | undefined): AuditRow {
    const fields = {
      seq: (head?.seq ?? 0) + 1,
      at: this.o.clock.now(),
      actor: clip(actorString(e.actor)) ?? 'unknown',
      action: clip(e.action) ?? 'unknown',
      target: clip(e.target),
      ip: clip(e.ip),
      before_json: snapshotJson(e.before),
      after_json: snapshotJson(e.after),
      prev_hash: head?.hash ?? GENESIS_HASH,
    };
    return this.key
      ? { ...fields, key_id: this.key.id, hash: keyedRowHash({ ...fields, key_id: this.key.id }, this.key.bytes) }
      : { ...fields, key_id: null, hash: rowHash(fields) };
  }

  /** After the write: each entry, with its hash, goes to the log too (one more copy of the chain outside the database). */
  private logRows(rows: AuditRow[]): void {
    for (const r of rows) this.o.logger?.info({ audit: { seq: r.seq, actor: r.actor, action: r.action, target: r.target, hash: r.hash } }, 'audit');
  }

  /** Entries matching the filter, newest first. */
  async query(f: AuditFilter = {}): Promise<AuditEntry[]> {
    const where: RawBuilder<unknown>[] = [];
    if (f.from !== undefined) where.push(sql`at >= ${f.from}`);
    if (f.to !== undefined) where.push(sql`at < ${f.to}`);
    if (f.actor !== undefined) where.push(sql`actor = ${f.actor}`);
    if (f.action !== undefined) {
      // "user" or "user.*" matches every user.* action; otherwise exact.
      const prefix = f.action.endsWith('.*') ? f.action.slice(0, -2) : f.action.includes('.') ? null : f.action;
      where.push(prefix !== null ? sql`(action = ${prefix} OR substr(action, 1, ${prefix.length + 1}) = ${`${prefix}.`})` : sql`action = ${f.action}`);
    }
    if (f.beforeSeq !== undefined) where.push(sql`seq < ${f.beforeSeq}`);
    const limit = Math.max(1, Math.min(f.limit ?? 100, 1000));
    const cond = where.length ? sql`WHERE ${sql.join(where, sql` AND `)}` : sql``;
    const r = await sql<AuditRow>`SELECT seq, at, actor, action, target, ip, before_json, after_json, prev_hash, hash, key_id
      FROM audit_log ${cond} ORDER BY seq DESC LIMIT ${sql.lit(limit)}`.execute(this.o.db.kysely);
    return r.rows.map(toEntry);
  }
}

/** A recorder that drops everything (before the audit log is installed). */
export const NOOP_AUDIT: AuditRecorder = {
  async record(e: AuditInput): Promise<AuditEntry> {
    return { seq: 0, at: 0, actor: actorString(e.actor), action: e.action, target: e.target ?? null, ip: e.ip ?? null, before: null, after: null, prevHash: GENESIS_HASH, hash: GENESIS_HASH };
  },
};

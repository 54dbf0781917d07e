/**
 * The audit log, so that staff can answer "who changed this?": every change (who, what, when, from where,
 * before and after) appended to `audit_log`, hash-chained:
 *
 *   hash = sha256(prev_hash + canonicalJson({seq, at, actor, action, target, ip, before_json, after_json, prev_hash}))
 *
 * with prev_hash of the first row = 64 zeros, and `audit_head` holding the
 * newest (seq, hash) so that a removed tail shows as well. Editing, deleting,
 * inserting or reordering a row breaks the chain; verifyAuditChain() (shared
 * by `keng audit verify` and the tests) finds the first broken seq.
 *
 * Append-only at the API level: there are no update or delete routes. Each
 * append runs in a BEGIN IMMEDIATE transaction, so the server and CLI
 * commands (separate processes) extend one chain without forks.
 *
 * Other modules record through `AuditRecorder.record(...)`, e.g.
 *   audit.record({ actor: principal, action: 'broadcast.start', target: `broadcast:${id}`, ip: req.ip, after: dto })
 * Snapshots are redacted (passwords, secrets, tokens, hashes) before storage.
 */
import { createHash } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import { canonicalJson, snapshotJson } from './canonical.js';
import type Database from 'better-sqlite3';

export const GENESIS_HASH = '0'.repeat(64);

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
  record(entry: AuditInput): AuditEntry;
}

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

/** The hash of a row given its fields (everything but `hash`). */
export function rowHash(r: Omit<AuditRow, 'hash'>): string {
  const body = canonicalJson({
    seq: r.seq, at: r.at, actor: r.actor, action: r.action, target: r.target, ip: r.ip,
    before_json: r.before_json, after_json: r.after_json, prev_hash: r.prev_hash,
  });
  return createHash('sha256').update(r.prev_hash + body, 'utf8').digest('hex');
}

export function toEntry(r: AuditRow): AuditEntry {
  const parse = (s: string | null): unknown => { if (s === null) return null; try { return JSON.parse(s); } catch { return s; } };
  return {
    seq: r.seq, at: r.at, actor: r.actor, action: r.action, target: r.target, ip: r.ip,
    before: parse(r.before_json), after: parse(r.after_json), prevHash: r.prev_hash, hash: r.hash,
  };
}

export interface AuditLogOptions {
  state: { readonly db: Database.Database };
  clock: Clock;
  logger?: Logger;
}

const MAX_TEXT = 256;
const clip = (s: string | null | undefined): string | null => (s == null ? null : s.length > MAX_TEXT ? s.slice(0, MAX_TEXT) : s);

export class AuditLog implements AuditRecorder {
  private readonly state: AuditLogOptions['state'];
  private readonly clock: Clock;
  private readonly logger: Logger | undefined;

  constructor(opts: AuditLogOptions) {
    this.state = opts.state;
    this.clock = opts.clock;
    this.logger = opts.logger;
  }

  /** Append one entry (own transaction, or a savepoint inside the caller's). Throws if the store is unusable. */
  record(e: AuditInput): AuditEntry {
    const db = this.state.db;
    const append = db.transaction((): AuditRow => {
      const head = db.prepare('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string } | undefined;
      const row: Omit<AuditRow, 'hash'> = {
        seq: (head?.seq ?? 0) + 1,
        at: this.clock.now(),
        actor: clip(actorString(e.actor)) ?? 'unknown',
        action: clip(e.action) ?? 'unknown',
        target: clip(e.target),
        ip: clip(e.ip),
        before_json: snapshotJson(e.before),
        after_json: snapshotJson(e.after),
        prev_hash: head?.hash ?? GENESIS_HASH,
      };
      const full: AuditRow = { ...row, hash: rowHash(row) };
      db.prepare(`INSERT INTO audit_log (seq, at, actor, action, target, ip, before_json, after_json, prev_hash, hash)
        VALUES (@seq, @at, @actor, @action, @target, @ip, @before_json, @after_json, @prev_hash, @hash)`).run(full);
      db.prepare(`INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)
        ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`).run(full.seq, full.hash);
      return full;
    });
    const row = db.inTransaction ? append() : append.immediate();
    this.logger?.info({ audit: { seq: row.seq, actor: row.actor, action: row.action, target: row.target } }, 'audit');
    return toEntry(row);
  }

  /** Entries matching the filter, newest first. */
  query(f: AuditFilter = {}): AuditEntry[] {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (f.from !== undefined) { where.push('at >= ?'); args.push(f.from); }
    if (f.to !== undefined) { where.push('at < ?'); args.push(f.to); }
    if (f.actor !== undefined) { where.push('actor = ?'); args.push(f.actor); }
    if (f.action !== undefined) {
      // "user" or "user.*" matches every user.* action; otherwise exact.
      const prefix = f.action.endsWith('.*') ? f.action.slice(0, -2) : f.action.includes('.') ? null : f.action;
      if (prefix !== null) { where.push('(action = ? OR substr(action, 1, ?) = ?)'); args.push(prefix, prefix.length + 1, `${prefix}.`); } else { where.push('action = ?'); args.push(f.action); }
    }
    if (f.beforeSeq !== undefined) { where.push('seq < ?'); args.push(f.beforeSeq); }
    const limit = Math.max(1, Math.min(f.limit ?? 100, 1000));
    const sql = `SELECT * FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT ${limit}`;
    return (this.state.db.prepare(sql).all(...args) as AuditRow[]).map(toEntry);
  }
}

/** A recorder that drops everything (before the audit log is installed). */
export const NOOP_AUDIT: AuditRecorder = {
  record(e: AuditInput): AuditEntry {
    return { seq: 0, at: 0, actor: actorString(e.actor), action: e.action, target: e.target ?? null, ip: e.ip ?? null, before: null, after: null, prevHash: GENESIS_HASH, hash: GENESIS_HASH };
  },
};

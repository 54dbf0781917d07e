/**
 * The on-disk queue in front of InfluxDB (docs/telemetry-storage.md), `<dataDir>/influx-queue.db`.
 * Runs inside the worker thread only (sqlite-worker.ts).
 *
 * One row per written batch (a batch larger than `batchLines` lines is split
 * into several rows of at most `batchLines`, so a row always fits one HTTP
 * write and a rejected row dead-letters as little as possible). The row holds
 * the batch as line protocol, committed (WAL, synchronous FULL by default)
 * before `writeBatch` resolves. Rows are deleted only after the server
 * answered 2xx. When the server rejects a row (4xx), the forwarder finds the
 * rejected readings field by field (forwarder.ts) and `settle` moves just
 * those to `dead_readings`. (`dead` holds whole rows dead-lettered by
 * earlier versions.)
 *
 * The field-type rule (field-types.ts) is applied in `enqueueMany`, inside the
 * commit: `field_types` holds each field's type, learned from the first value
 * queued and from the server (SHOW FIELD KEYS, conflict messages); a value of
 * another type goes to `dead_readings` in the same transaction instead of the
 * queue, so InfluxDB never sees it and the message's other fields are kept.
 *
 * `bytes` is the logical size (UTF-8 line-protocol bytes) used for the cap;
 * the file itself is reclaimed with incremental vacuum when the queue empties.
 */
import type Database from 'better-sqlite3';
import { openDb } from './embedded-db.js';
import type { Scalar } from '../../core/events.js';
import {
  FIELD_TYPE_CONFLICT, kindName, kindOf, kindOfInfluxType, parseConflictMessage, type SetAsideReading,
} from './field-types.js';
import { PrefixCache, recordsToLines, type FieldGuard } from './line-protocol.js';
import { parseReading } from './line-split.js';
import { purgeDeadChunk, purgeQueueChunk, type QueuePurgeChunk } from './outbox-purge.js';
import type { TelemetryRecord } from './types.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS queue (
  id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL,
  lines INTEGER NOT NULL, readings INTEGER NOT NULL, bytes INTEGER NOT NULL, created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead (
  id INTEGER PRIMARY KEY, body TEXT NOT NULL, lines INTEGER NOT NULL, readings INTEGER NOT NULL,
  bytes INTEGER NOT NULL, created INTEGER NOT NULL, failed_at INTEGER NOT NULL, status INTEGER, error TEXT
);
CREATE TABLE IF NOT EXISTS field_types (name TEXT PRIMARY KEY, k INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_readings (
  id INTEGER PRIMARY KEY, device TEXT NOT NULL, field TEXT NOT NULL, ts INTEGER NOT NULL, value, type TEXT NOT NULL,
  reason TEXT NOT NULL, status INTEGER, error TEXT, failed_at INTEGER NOT NULL, line TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS dead_readings_key ON dead_readings (device, field, ts);
`;

/** dead: readings dead-lettered (rows of `dead_readings` plus the readings of whole rows in `dead`). */
export interface QueueTotals { rows: number; readings: number; bytes: number; dead: number }

export type EnqueueResult =
  | ({ full: false; addedLines: number; addedReadings: number; addedBytes: number; setAside?: SetAsideReading[] } & QueueTotals)
  | ({ full: true; needed: number } & QueueTotals);

/** A single-field line the server rejected (forwarder.ts), with its answer. */
export interface RejectedLine { line: string; status: number | null; error: string }

/** The types learned from the server that replaced a different local one (to log). */
export interface LearnResult { learned: number; replaced: { field: string; was: string; now: string }[] }

/**
 * The field-type rule for one enqueueMany call: admits a reading whose type
 * matches (one Map lookup), learns the type of a new field, sets aside the
 * rest. What a batch learned is undone if the batch is refused (cap).
 */
class TypeGuard implements FieldGuard {
  learned: string[] = [];
  setAside: { r: TelemetryRecord; field: string; value: Scalar; k: number }[] = [];
  constructor(readonly types: Map<string, number>) {}
  admit(r: TelemetryRecord, field: string, value: Scalar): boolean {
    const k = kindOf(value);
    const known = this.types.get(field);
    if (known === k) return true;
    if (known === undefined) { this.types.set(field, k); this.learned.push(field); return true; }
    this.setAside.push({ r, field, value, k });
    return false;
  }
  /** Start of a batch: what it learns and sets aside is counted from here. */
  mark(): [number, number] { return [this.learned.length, this.setAside.length]; }
  undo([l, a]: [number, number]): void {
    for (const f of this.learned.splice(l)) this.types.delete(f);
    this.setAside.length = a;
  }
}

export interface PeekResult { ids: number[]; body: string; lines: number; readings: number; bytes: number }

export class OutboxDb {
  private readonly db: Database.Database;
  private totals: QueueTotals = { rows: 0, readings: 0, bytes: 0, dead: 0 };
  private readonly ins: Database.Statement;
  private readonly insType: Database.Statement;
  private readonly insDead: Database.Statement;
  /** Field name → kind (field-types.ts), as in `field_types`. */
  private readonly types = new Map<string, number>();
  private readonly prefixes: PrefixCache;

  constructor(path: string, sync: 'full' | 'normal', private readonly measurement: string,
    private readonly batchLines: number, private readonly capBytes: number) {
    this.prefixes = new PrefixCache(measurement);
    this.db = openDb(path, { sync });
    // Must be set before the first table is created to take effect.
    this.db.pragma('auto_vacuum = INCREMENTAL');
    this.db.exec(SCHEMA);
    this.ins = this.db.prepare('INSERT INTO queue (body, lines, readings, bytes, created) VALUES (?, ?, ?, ?, ?)');
    this.insType = this.db.prepare('INSERT OR REPLACE INTO field_types (name, k) VALUES (?, ?)');
    // A device re-sending a message (lost PUBACK) sets the same reading aside again: kept once.
    this.insDead = this.db.prepare(`INSERT OR IGNORE INTO dead_readings (device, field, ts, value, type, reason, status, error, failed_at, line)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.loadTypes();
    this.recount();
  }

  private loadTypes(): void {
    this.types.clear();
    for (const r of this.db.prepare('SELECT name, k FROM field_types').all() as { name: string; k: number }[]) this.types.set(r.name, r.k);
  }

  private recount(): void {
    const q = this.db.prepare('SELECT COUNT(*) AS rows, COALESCE(SUM(readings), 0) AS readings, COALESCE(SUM(bytes), 0) AS bytes FROM queue').get() as { rows: number; readings: number; bytes: number };
    const d = this.db.prepare('SELECT (SELECT COALESCE(SUM(readings), 0) FROM dead) + (SELECT COUNT(*) FROM dead_readings) AS n').get() as { n: number };
    this.totals = { ...q, dead: d.n };
  }

  /** Field types as known (tests, diagnostics). */
  fieldTypes(): Record<string, string> {
    const o: Record<string, string> = {};
    for (const [f, k] of this.types) o[f] = kindName(k);
    return o;
  }

  /**
   * Types the server reports (SHOW FIELD KEYS: pairs of field and InfluxDB
   * type; a field may be listed with several types, one per shard). The
   * server decides what it accepts, so its type replaces a different local
   * one; of several, a local type among them is kept.
   */
  learnTypes(pairs: readonly [string, string][]): LearnResult {
    const byField = new Map<string, number[]>();
    for (const [f, t] of pairs) {
      const l = byField.get(f) ?? [];
      l.push(kindOfInfluxType(t));
      byField.set(f, l);
    }
    const res: LearnResult = { learned: 0, replaced: [] };
    this.db.transaction(() => {
      for (const [f, kinds] of byField) {
        const cur = this.types.get(f);
        if (cur !== undefined && kinds.includes(cur)) continue;
        const k = kinds[0]!;
        if (cur !== undefined) res.replaced.push({ field: f, was: kindName(cur), now: kindName(k) });
        this.insType.run(f, k);
        res.learned++;
      }
    }).immediate();
    for (const [f, kinds] of byField) if (!kinds.includes(this.types.get(f) ?? -1)) this.types.set(f, kinds[0]!);
    return res;
  }

  stats(): QueueTotals { return { ...this.totals }; }

  /** Convert to line protocol and append, unless the cap would be exceeded. */
  enqueue(records: readonly TelemetryRecord[], now: number): EnqueueResult {
    return this.enqueueMany([records], now)[0]!;
  }

  /**
   * Several batches in one transaction (group commit, see sqlite-worker.ts);
   * the cap is checked batch by batch, so each batch is accepted or refused whole.
   */
  enqueueMany(batches: readonly (readonly TelemetryRecord[])[], now: number): EnqueueResult[] {
    type Chunk = { body: string; lines: number; readings: number; bytes: number };
    const accepted: Chunk[] = [];
    const plan: ({ full: false; lines: number; readings: number; bytes: number; rows: number; aside: [number, number] } | { full: true; needed: number })[] = [];
    let pendingBytes = 0;
    const guard = new TypeGuard(this.types);
    for (const records of batches) {
      const mark = guard.mark();
      const chunks: Chunk[] = [];
      let bytes = 0; let lines = 0; let readings = 0;
      for (let i = 0; i < records.length;) {
        // Records → lines is 1:1 (or 1:0 for a record without a writable value), so slice records by batchLines.
        const part = records.slice(i, i + this.batchLines);
        i += part.length;
        const out: string[] = [];
        const st = recordsToLines(this.measurement, part, out, guard, this.prefixes);
        if (!st.lines) continue;
        chunks.push({ body: out.join('\n'), lines: st.lines, readings: st.readings, bytes: st.bytes });
        bytes += st.bytes; lines += st.lines; readings += st.readings;
      }
      if (this.totals.bytes + pendingBytes + bytes > this.capBytes) { guard.undo(mark); plan.push({ full: true, needed: bytes }); continue; }
      pendingBytes += bytes;
      accepted.push(...chunks);
      plan.push({ full: false, lines, readings, bytes, rows: chunks.length, aside: [mark[1], guard.setAside.length] });
    }
    let dead = 0;
    if (accepted.length || guard.learned.length || guard.setAside.length) {
      try {
        this.db.transaction(() => {
          for (const c of accepted) this.ins.run(c.body, c.lines, c.readings, c.bytes, now);
          for (const f of guard.learned) this.insType.run(f, this.types.get(f)!);
          for (const a of guard.setAside) {
            const known = kindName(this.types.get(a.field)!);
            dead += this.insDead.run(a.r.deviceId, a.field, Math.round(a.r.ts), typeof a.value === 'boolean' ? (a.value ? 1 : 0) : a.value,
              kindName(a.k), FIELD_TYPE_CONFLICT, null, `field is ${known}, value is ${kindName(a.k)}`, now, null).changes;
          }
        }).immediate();
      } catch (err) {
        this.loadTypes(); // rolled back: forget the types this call learned
        throw err;
      }
    }
    this.totals.dead += dead;
    // Totals as seen after each batch, in order.
    return plan.map((p) => {
      if (p.full) return { full: true, needed: p.needed, ...this.totals };
      this.totals.rows += p.rows; this.totals.readings += p.readings; this.totals.bytes += p.bytes;
      const res: EnqueueResult = { full: false, addedLines: p.lines, addedReadings: p.readings, addedBytes: p.bytes, ...this.totals };
      if (p.aside[1] > p.aside[0]) {
        res.setAside = guard.setAside.slice(p.aside[0], p.aside[1])
          .map((a) => ({ deviceId: a.r.deviceId, ts: a.r.ts, field: a.field, value: a.value, reason: FIELD_TYPE_CONFLICT }));
      }
      return res;
    });
  }

  /** Oldest rows, up to `maxLines` lines in all (always at least one row), at most `maxRows` rows. */
  peek(maxLines: number, maxRows: number): PeekResult | null {
    const rows = this.db.prepare('SELECT id, body, lines, readings, bytes FROM queue ORDER BY id LIMIT ?').iterate(Math.max(1, maxRows)) as IterableIterator<{ id: number; body: string; lines: number; readings: number; bytes: number }>;
    const res: PeekResult = { ids: [], body: '', lines: 0, readings: 0, bytes: 0 };
    const bodies: string[] = [];
    for (const r of rows) {
      if (res.ids.length && res.lines + r.lines > maxLines) break;
      res.ids.push(r.id); bodies.push(r.body);
      res.lines += r.lines; res.readings += r.readings; res.bytes += r.bytes;
    }
    if (!res.ids.length) return null;
    res.body = bodies.join('\n');
    return res;
  }

  /** The server confirmed these rows: delete them. */
  ack(ids: readonly number[]): QueueTotals {
    this.db.transaction(() => this.remove(ids)).immediate();
    if (this.totals.rows === 0) this.db.pragma('incremental_vacuum');
    return this.stats();
  }

  /**
   * The forwarder delivered these rows except `rejected` (single-field lines
   * the server refused, forwarder.ts): delete the rows and keep those readings
   * in `dead_readings`, in one transaction. A type conflict the server reports
   * teaches its type, so later values of the old type are set aside up front.
   */
  settle(ids: readonly number[], rejected: readonly RejectedLine[], now: number): QueueTotals {
    const learn: [string, string][] = [];
    let dead = 0;
    this.db.transaction(() => {
      for (const r of rejected) {
        const p = parseReading(r.line);
        const c = parseConflictMessage(r.error);
        const conflict = /field type conflict/i.test(r.error);
        const v = p?.value;
        dead += this.insDead.run(p?.tags.device_id ?? '', p?.field ?? '', p?.ts ?? 0, typeof v === 'boolean' ? (v ? 1 : 0) : v ?? null,
          v === undefined ? 'unknown' : kindName(kindOf(v)), conflict ? FIELD_TYPE_CONFLICT : 'rejected', r.status, r.error.slice(0, 2000), now, r.line).changes;
        if (c && p && c.field === p.field) learn.push([c.field, c.existing]);
      }
      this.remove(ids);
    }).immediate();
    this.totals.dead += dead;
    if (learn.length) this.learnTypes(learn);
    if (this.totals.rows === 0) this.db.pragma('incremental_vacuum');
    return this.stats();
  }

  private remove(ids: readonly number[]): void {
    const sel = this.db.prepare('SELECT readings, bytes FROM queue WHERE id = ?');
    const del = this.db.prepare('DELETE FROM queue WHERE id = ?');
    for (const id of ids) {
      const r = sel.get(id) as { readings: number; bytes: number } | undefined;
      if (!r) continue;
      del.run(id);
      this.totals.rows--; this.totals.readings -= r.readings; this.totals.bytes -= r.bytes;
    }
  }

  /** Purge: one chunk of queue rows without the device's lines (outbox-purge.ts). */
  purgeQueue(deviceId: string, before: number | null, maxRows: number, afterId: number, budgetMs: number): QueuePurgeChunk & { totals: QueueTotals } {
    const c = purgeQueueChunk(this.db, deviceId, before, maxRows, afterId, budgetMs);
    this.totals.rows -= c.rows; this.totals.readings -= c.readings; this.totals.bytes -= c.bytes;
    if (c.rows && this.totals.rows === 0) this.db.pragma('incremental_vacuum');
    return { ...c, totals: this.stats() };
  }

  /** Purge: one chunk of the device's dead letters (outbox-purge.ts). */
  purgeDead(deviceId: string, before: number | null, maxRows: number): { dead: number; done: boolean; totals: QueueTotals } {
    const c = purgeDeadChunk(this.db, deviceId, before, maxRows);
    this.totals.dead -= c.dead;
    return { ...c, totals: this.stats() };
  }

  ping(): boolean { return this.db.prepare('SELECT 1 AS one').get() !== undefined; }
  close(): void { this.db.close(); }
}

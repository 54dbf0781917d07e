/**
 * The on-disk queue in front of InfluxDB (brief §3), `<dataDir>/influx-queue.db`.
 * Runs inside the worker thread only (sqlite-worker.ts).
 *
 * One row per written batch (a batch larger than `batchLines` lines is split
 * into several rows of at most `batchLines`, so a row always fits one HTTP
 * write and a rejected row dead-letters as little as possible). The row holds
 * the batch as line protocol, committed (WAL, synchronous FULL by default)
 * before `writeBatch` resolves. Rows are deleted only after the server
 * answered 2xx; rows the server rejected (4xx) move to `dead`.
 *
 * `bytes` is the logical size (UTF-8 line-protocol bytes) used for the cap;
 * the file itself is reclaimed with incremental vacuum when the queue empties.
 */
import type Database from 'better-sqlite3';
import { openDb } from './embedded-db.js';
import { recordsToLines } from './line-protocol.js';
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
`;

export interface QueueTotals { rows: number; readings: number; bytes: number; dead: number }

export type EnqueueResult =
  | ({ full: false; addedLines: number; addedReadings: number; addedBytes: number } & QueueTotals)
  | ({ full: true; needed: number } & QueueTotals);

export interface PeekResult { ids: number[]; body: string; lines: number; readings: number; bytes: number }

export class OutboxDb {
  private readonly db: Database.Database;
  private totals: QueueTotals = { rows: 0, readings: 0, bytes: 0, dead: 0 };
  private readonly ins: Database.Statement;

  constructor(path: string, sync: 'full' | 'normal', private readonly measurement: string,
    private readonly batchLines: number, private readonly capBytes: number) {
    this.db = openDb(path, { sync });
    // Must be set before the first table is created to take effect.
    this.db.pragma('auto_vacuum = INCREMENTAL');
    this.db.exec(SCHEMA);
    this.ins = this.db.prepare('INSERT INTO queue (body, lines, readings, bytes, created) VALUES (?, ?, ?, ?, ?)');
    this.recount();
  }

  private recount(): void {
    const q = this.db.prepare('SELECT COUNT(*) AS rows, COALESCE(SUM(readings), 0) AS readings, COALESCE(SUM(bytes), 0) AS bytes FROM queue').get() as { rows: number; readings: number; bytes: number };
    const d = this.db.prepare('SELECT COUNT(*) AS n FROM dead').get() as { n: number };
    this.totals = { ...q, dead: d.n };
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
    const plan: ({ full: false; lines: number; readings: number; bytes: number; rows: number } | { full: true; needed: number })[] = [];
    let pendingBytes = 0;
    for (const records of batches) {
      const chunks: Chunk[] = [];
      let bytes = 0; let lines = 0; let readings = 0;
      for (let i = 0; i < records.length;) {
        // Records → lines is 1:1 (or 1:0 for a record without a writable value), so slice records by batchLines.
        const part = records.slice(i, i + this.batchLines);
        i += part.length;
        const out: string[] = [];
        const st = recordsToLines(this.measurement, part, out);
        if (!st.lines) continue;
        chunks.push({ body: out.join('\n'), lines: st.lines, readings: st.readings, bytes: st.bytes });
        bytes += st.bytes; lines += st.lines; readings += st.readings;
      }
      if (this.totals.bytes + pendingBytes + bytes > this.capBytes) { plan.push({ full: true, needed: bytes }); continue; }
      pendingBytes += bytes;
      accepted.push(...chunks);
      plan.push({ full: false, lines, readings, bytes, rows: chunks.length });
    }
    if (accepted.length) {
      this.db.transaction(() => { for (const c of accepted) this.ins.run(c.body, c.lines, c.readings, c.bytes, now); }).immediate();
    }
    // Totals as seen after each batch, in order.
    return plan.map((p) => {
      if (p.full) return { full: true, needed: p.needed, ...this.totals };
      this.totals.rows += p.rows; this.totals.readings += p.readings; this.totals.bytes += p.bytes;
      return { full: false, addedLines: p.lines, addedReadings: p.readings, addedBytes: p.bytes, ...this.totals };
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
    this.db.transaction(() => this.moveOrDelete(ids, null)).immediate();
    if (this.totals.rows === 0) this.db.pragma('incremental_vacuum');
    return this.stats();
  }

  /** The server rejected these rows (4xx): keep them in `dead` with the server's message. */
  deadLetter(ids: readonly number[], now: number, status: number | null, error: string): QueueTotals {
    this.db.transaction(() => this.moveOrDelete(ids, { now, status, error })).immediate();
    return this.stats();
  }

  private moveOrDelete(ids: readonly number[], dead: { now: number; status: number | null; error: string } | null): void {
    const sel = this.db.prepare('SELECT readings, bytes FROM queue WHERE id = ?');
    const del = this.db.prepare('DELETE FROM queue WHERE id = ?');
    const mv = this.db.prepare('INSERT OR REPLACE INTO dead (id, body, lines, readings, bytes, created, failed_at, status, error) SELECT id, body, lines, readings, bytes, created, ?, ?, ? FROM queue WHERE id = ?');
    for (const id of ids) {
      const r = sel.get(id) as { readings: number; bytes: number } | undefined;
      if (!r) continue;
      if (dead) { mv.run(dead.now, dead.status, dead.error.slice(0, 2000), id); this.totals.dead++; }
      del.run(id);
      this.totals.rows--; this.totals.readings -= r.readings; this.totals.bytes -= r.bytes;
    }
  }

  ping(): boolean { return this.db.prepare('SELECT 1 AS one').get() !== undefined; }
  close(): void { this.db.close(); }
}

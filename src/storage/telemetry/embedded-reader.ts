/**
 * History queries of the embedded store (schema: embedded-db.ts), on a
 * read-only connection in its own worker thread (embedded-store.ts). Each
 * point's JSON is split into readings by json_each, in SQLite.
 */
import type Database from 'better-sqlite3';
import type { Scalar } from '../../core/events.js';
import { openDb } from './embedded-db.js';
import type { HistoryPoint, HistoryQuery } from './types.js';
import { PointBuilder, isNumericAgg, normaliseQuery } from './windows.js';

type Row = { ts: number; field: number; v: number | string | null; k: number };

function decode(v: number | string | null, k: number): Scalar | null {
  if (v === null) return null;
  if (k === 1) return v !== 0;
  return v;
}

/**
 * History queries on a read-only connection (its own worker thread, see
 * embedded-store.ts). Aggregates are computed by SQLite per (field, window).
 * Note: SQLite's SUM/AVG/TOTAL use compensated (Kahan–Babuška–Neumaier)
 * summation while InfluxDB sums naively, so mean/sum of arbitrary floats may
 * differ from InfluxDB's in the last bits; exact for values whose sums are exact.
 */
export class EmbeddedReader {
  private readonly db: Database.Database;
  constructor(path: string) { this.db = openDb(path, { readonly: true }); }

  query(input: HistoryQuery): HistoryPoint[] {
    const q = normaliseQuery(input);
    const dev = this.db.prepare('SELECT id FROM devices WHERE name = ?').get(q.deviceId) as { id: number } | undefined;
    if (!dev) return [];
    const fieldRows = q.fields.length
      ? this.db.prepare(`SELECT id, name FROM fields WHERE name IN (${q.fields.map(() => '?').join(',')})`).all(...q.fields)
      : this.db.prepare('SELECT f.id, f.name FROM series s JOIN fields f ON f.id = s.field WHERE s.device = ?').all(dev.id);
    const names = new Map<number, string>((fieldRows as { id: number; name: string }[]).map((r) => [r.id, r.name]));
    if (!names.size) return [];
    const keys = [...names.keys()].map(String);
    // A point's fields (embedded-db.ts): json_each gives each value with its JSON type, which is its kind.
    const part = (t: string): string => `SELECT t.ts AS ts, CAST(j.key AS INTEGER) AS field, j.value AS v,
      CASE j.type WHEN 'text' THEN 2 WHEN 'true' THEN 1 WHEN 'false' THEN 1 ELSE 0 END AS k
      FROM ${t} t, json_each(t.p) j WHERE t.device = ? AND t.ts >= ? AND t.ts < ? AND j.key IN (${keys.map(() => '?').join(',')})`;
    const one = [dev.id, Math.ceil(q.from), Math.ceil(q.to), ...keys];
    const args = [...one, ...one];
    // Both homes of a point (see the schema comment), read in one statement = one snapshot.
    const src = `(${part('points')} UNION ALL ${part('recent_points')})`;
    const pb = new PointBuilder();

    if (q.everyMs === undefined) {
      if (q.limit === 0) return [];
      const it = this.db.prepare(`SELECT ts, field, v, k FROM ${src} ORDER BY ts, field`).iterate(...args) as IterableIterator<Row>;
      let distinct = 0;
      let lastTs = Number.NaN;
      for (const r of it) {
        if (r.ts !== lastTs) {
          if (q.limit !== undefined && distinct === q.limit) break; // iterator return() finalises the statement
          distinct++; lastTs = r.ts;
        }
        pb.add(r.ts, names.get(r.field)!, decode(r.v, r.k));
      }
      return pb.build(q.limit);
    }

    const e = q.everyMs;
    const agg = q.agg!;
    const w = `(ts - (((ts % ${e}) + ${e}) % ${e}))`;
    let sql: string;
    switch (agg) {
      case 'mean': sql = `SELECT field, ${w} AS w, AVG(v) AS v, 0 AS k`; break;
      case 'min': sql = `SELECT field, ${w} AS w, MIN(v) AS v, 0 AS k`; break;
      case 'max': sql = `SELECT field, ${w} AS w, MAX(v) AS v, 0 AS k`; break;
      case 'sum': sql = `SELECT field, ${w} AS w, TOTAL(v) AS v, 0 AS k`; break;
      case 'count': sql = `SELECT field, ${w} AS w, COUNT(*) AS v, 0 AS k`; break;
      // SQLite documents that bare columns come from the row holding MAX(): the last value.
      case 'last': sql = `SELECT field, ${w} AS w, MAX(ts) AS mts, v, k`; break;
    }
    sql += ` FROM ${src}${isNumericAgg(agg) ? ' WHERE k = 0' : ''} GROUP BY field, w`;
    for (const r of this.db.prepare(sql).iterate(...args) as IterableIterator<{ field: number; w: number; v: number | string | null; k: number }>) {
      pb.add(r.w, names.get(r.field)!, decode(r.v, r.k));
    }
    return pb.build();
  }

  ping(): boolean { return this.db.prepare('SELECT 1 AS one').get() !== undefined; }
  close(): void { this.db.close(); }
}

/**
 * History queries of the PostgreSQL telemetry store (schema: pg-schema.ts), with
 * the semantics every store shares (windows.ts): epoch-aligned windows, empty
 * ones omitted, mean/min/max/sum over numbers only, count and last over any kind.
 */
import { sql } from 'kysely';
import type { Scalar } from '../../core/events.js';
import type { Db } from '../sql/index.js';
import { K_BOOLEAN, K_NUMBER, K_STRING } from './field-types.js';
import type { HistoryPoint, HistoryQuery } from './types.js';
import { PointBuilder, normaliseQuery } from './windows.js';

type Row = { ts: number; field: string; k: number; num: number | null; txt: string | null };
/** An aggregate row: `w` is its window's start. */
type AggRow = Omit<Row, 'ts'> & { w: number };

function decode(r: Pick<Row, 'k' | 'num' | 'txt'>): Scalar | null {
  if (r.k === K_STRING) return r.txt;
  if (r.num === null) return null;
  return r.k === K_BOOLEAN ? r.num !== 0 : r.num;
}

export async function pgHistory(db: Db<unknown>, input: HistoryQuery): Promise<HistoryPoint[]> {
  const q = normaliseQuery(input);
  const fields = q.fields.length ? q.fields : null;
  const where = sql`device = ${q.deviceId} AND (${fields}::text[] IS NULL OR field = ANY(${fields}::text[])) AND ts >= ${Math.ceil(q.from)} AND ts < ${Math.ceil(q.to)}`;
  const pb = new PointBuilder();

  if (q.everyMs === undefined) {
    if (q.limit === 0) return [];
    let bound = sql``;
    if (q.limit !== undefined) {
      // The limit counts distinct timestamps (points), not rows: find the ts of the last point kept.
      const b = await sql<{ ts: number }>`SELECT ts FROM (SELECT DISTINCT ts FROM telemetry_readings WHERE ${where}) d ORDER BY ts OFFSET ${q.limit - 1} LIMIT 1`.execute(db.kysely);
      if (b.rows[0]) bound = sql` AND ts <= ${b.rows[0].ts}`;
    }
    const rows = await sql<Row>`SELECT ts, field, k, num, txt FROM telemetry_readings WHERE ${where}${bound} ORDER BY ts, field`.execute(db.kysely);
    for (const r of rows.rows) pb.add(r.ts, r.field, decode(r));
    return pb.build(q.limit);
  }

  const e = sql.lit(q.everyMs);
  const w = sql`(ts - (((ts % ${e}) + ${e}) % ${e}))`;
  const numeric = (f: string) => sql<AggRow>`SELECT field, ${w} AS w, ${sql.lit(K_NUMBER)}::smallint AS k, ${sql.raw(f)}(num)::double precision AS num, NULL::text AS txt
    FROM telemetry_readings WHERE ${where} AND k = ${K_NUMBER} GROUP BY field, 2`;
  let query;
  switch (q.agg!) {
    case 'mean': query = numeric('AVG'); break;
    case 'min': query = numeric('MIN'); break;
    case 'max': query = numeric('MAX'); break;
    case 'sum': query = numeric('SUM'); break;
    case 'count': query = sql<AggRow>`SELECT field, ${w} AS w, ${sql.lit(K_NUMBER)}::smallint AS k, COUNT(*)::double precision AS num, NULL::text AS txt
      FROM telemetry_readings WHERE ${where} GROUP BY field, 2`; break;
    case 'last': query = sql<AggRow>`SELECT DISTINCT ON (field, ${w}) field, ${w} AS w, k, num, txt
      FROM telemetry_readings WHERE ${where} ORDER BY field, ${w}, ts DESC`; break;
  }
  for (const r of (await query.execute(db.kysely)).rows) pb.add(r.w, r.field, decode(r));
  return pb.build();
}

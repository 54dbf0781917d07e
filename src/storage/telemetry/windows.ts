/**
 * Shared query semantics of every store, so history answers do not depend on the store (OpenAPI at /docs, tag telemetry):
 * windows aligned to the Unix epoch like InfluxQL `GROUP BY time(5m)`, point
 * ts = window start, empty windows omitted (`fill(none)`), mean/min/max/sum
 * only over numeric fields, count over any type, last of any type. Both stores
 * funnel their rows through `PointBuilder` so the answers have one shape.
 */
import type { Scalar } from '../../core/events.js';
import type { Agg, HistoryPoint, HistoryQuery } from './types.js';


/** Aggregates defined only over numbers: boolean/string fields are left out of them. */
export function isNumericAgg(agg: Agg): boolean {
  return agg === 'mean' || agg === 'min' || agg === 'max' || agg === 'sum';
}

/** Start of the epoch-aligned window holding `ts` (floor, also for negative ts). */
export function windowStart(ts: number, everyMs: number): number {
  const r = ts % everyMs;
  return r < 0 ? ts - r - everyMs : ts - r;
}

/** Validate and normalise a query (shared by both stores). */
export function normaliseQuery(q: HistoryQuery): HistoryQuery & { agg?: Agg } {
  const out: HistoryQuery = { ...q, fields: [...new Set(q.fields)] };
  if (q.everyMs !== undefined) {
    if (!Number.isInteger(q.everyMs) || q.everyMs <= 0) throw new RangeError(`everyMs must be a positive integer, got ${q.everyMs}`);
    out.agg = q.agg ?? 'mean';
  } else {
    delete out.agg;
  }
  if (q.limit !== undefined && (!Number.isInteger(q.limit) || q.limit < 0)) throw new RangeError(`limit must be a non-negative integer, got ${q.limit}`);
  return out;
}

/** Collects (ts, field, value) cells from any source into sorted points. */
export class PointBuilder {
  private readonly byTs = new Map<number, Record<string, Scalar>>();

  add(ts: number, field: string, value: Scalar | null | undefined): void {
    if (value === null || value === undefined) return; // absent fields are omitted
    let v = this.byTs.get(ts);
    if (!v) { v = {}; this.byTs.set(ts, v); }
    v[field] = value;
  }

  /** Points in time order; only ts with at least one value; at most `limit`. */
  build(limit?: number): HistoryPoint[] {
    const keys = [...this.byTs.keys()].sort((a, b) => a - b);
    const n = limit === undefined ? keys.length : Math.min(limit, keys.length);
    const out: HistoryPoint[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const ts = keys[i]!;
      out[i] = { ts, values: sortKeys(this.byTs.get(ts)!) };
    }
    return out;
  }
}

function sortKeys(v: Record<string, Scalar>): Record<string, Scalar> {
  const o: Record<string, Scalar> = {};
  for (const k of Object.keys(v).sort()) o[k] = v[k]!;
  return o;
}

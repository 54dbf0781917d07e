/**
 * Many rows in a few statements on SQLite: rows bound as a multi-row `VALUES` list, in chunks.
 *
 * The state window's kinds write all their intents of a window at once. On PostgreSQL one statement with
 * one JSON parameter is the cheapest (one round trip). On SQLite a JSON parameter read with `json_each`
 * costs more than the rows it writes: each `value->>'$.x'` parses the row's JSON text again, so a
 * 10-column row is parsed ten times (bench:state-window: ~7.5 µs per log line, against ~1 µs bound). Bound
 * parameters cost no parsing, and chunk sizes are few (full chunks, then the binary digits of the rest),
 * so each statement text is prepared once and stays in the driver's statement cache.
 *
 * Values must be what better-sqlite3 binds: numbers, strings, bigints, Buffers or null (`undefined` is
 * bound as null here).
 */
import { CompiledQuery, type Transaction } from 'kysely';

/** Rows per statement at most: SQLite's default limit is 32,766 parameters; 64 rows measured best for inserts. */
export const VALUES_CHUNK_ROWS = 64;

const lists = new Map<string, string>();

/** `(?,?,?),(?,?,?)`: `rows` rows of `width` placeholders. */
export function valuesList(rows: number, width: number): string {
  const key = `${rows}x${width}`;
  let s = lists.get(key);
  if (s === undefined) {
    const row = `(${new Array<string>(width).fill('?').join(',')})`;
    s = new Array<string>(rows).fill(row).join(',');
    lists.set(key, s);
  }
  return s;
}

/** Row counts of the statements for `n` rows: full chunks, then the rest by its binary digits (largest first). */
export function chunkSizes(n: number, max = VALUES_CHUNK_ROWS): number[] {
  const out: number[] = [];
  let left = n;
  while (left >= max) { out.push(max); left -= max; }
  for (let bit = max >> 1; bit >= 1; bit >>= 1) if (left & bit) out.push(bit);
  return out;
}

/**
 * Runs one statement per chunk of `rows` (each row `width` values, in order) and returns every row the
 * statements return, in chunk order. `text(values)` makes the statement around a `(?,…),(?,…)` list;
 * in an `UPDATE … FROM (VALUES …) AS v` the columns are `v.column1`, `v.column2`, … (SQLite's names).
 * Rows are inserted in the order given (a log's `seq` follows it).
 */
export async function runValues<R>(
  trx: Transaction<unknown>, rows: ReadonlyArray<readonly unknown[]>, width: number, text: (values: string) => string,
): Promise<R[]> {
  const out: R[] = [];
  let at = 0;
  for (const size of chunkSizes(rows.length)) {
    const params: unknown[] = new Array(size * width);
    let k = 0;
    for (let i = at; i < at + size; i++) {
      const r = rows[i]!;
      if (r.length !== width) throw new Error(`runValues: a row of ${r.length} values, expected ${width}`);
      for (let j = 0; j < width; j++) params[k++] = r[j] ?? null;
    }
    at += size;
    const res = await trx.executeQuery<R>(CompiledQuery.raw(text(valuesList(size, width)), params));
    for (const row of res.rows) out.push(row);
  }
  return out;
}

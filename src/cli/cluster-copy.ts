/**
 * The generic copy of `keng cluster import`: one table from the embedded state.db into the same table
 * on PostgreSQL, column by column, as the two schemas define them (PRAGMA table_info on one side,
 * information_schema on the other), inside the caller's PostgreSQL transaction.
 *
 * Types follow the PostgreSQL column (the PG scopes chose them): INTEGER → bigint/integer/smallint as
 * the same number, 0/1 → boolean, BLOB → bytea, JSON stays text. A state.db column PostgreSQL lacks
 * stops the import unless the table plan drops it on purpose (cluster-tables.ts): a schema drift must
 * not lose data silently. PostgreSQL columns state.db lacks take their default (the `seq` numbering
 * columns, numbered in the order the rows are read).
 */
import type Database from 'better-sqlite3';
import { sql, type Transaction } from 'kysely';
import { Errors } from '../core/index.js';
import type { ImportedTable } from './cluster-tables.js';

interface PgColumn { name: string; type: string; hasDefault: boolean; nullable: boolean }

/** At most this many bound values per INSERT (PostgreSQL's limit is 65,535). */
const MAX_PARAMS = 30_000;
const MAX_ROWS = 500;

async function pgColumns(trx: Transaction<unknown>, table: string): Promise<PgColumn[]> {
  const rows = (await sql<{ column_name: string; data_type: string; column_default: string | null; is_identity: string; is_nullable: string }>`
    SELECT column_name, data_type, column_default, is_identity, is_nullable FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = ${table} ORDER BY ordinal_position`.execute(trx)).rows;
  return rows.map((r) => ({
    name: r.column_name, type: r.data_type, hasDefault: r.column_default !== null || r.is_identity === 'YES', nullable: r.is_nullable === 'YES',
  }));
}

export function sqliteColumns(src: Database.Database, table: string): string[] {
  return (src.prepare(`PRAGMA table_info("${table}")`).all() as Array<{ name: string }>).map((c) => c.name);
}

/** The columns to copy, or why the two schemas do not fit. */
function columnsToCopy(t: ImportedTable, lite: string[], pg: PgColumn[]): PgColumn[] {
  if (pg.length === 0) throw Errors.INTERNAL(`table ${t.table} is missing in PostgreSQL after the migrations`);
  const byName = new Map(pg.map((c) => [c.name, c]));
  const out: PgColumn[] = [];
  for (const name of lite) {
    if (t.dropped?.[name]) continue; // left out on purpose (e.g. numbered again by PostgreSQL)
    const c = byName.get(name);
    if (c) out.push(c);
    else if (!t.dropped?.[name]) throw Errors.INTERNAL(`state.db column ${t.table}.${name} has no PostgreSQL column; this Keng cannot import it without losing it`);
  }
  for (const c of pg) {
    if (!lite.includes(c.name) && !c.hasDefault && !c.nullable) {
      throw Errors.INTERNAL(`PostgreSQL column ${t.table}.${c.name} has no state.db column and no default`);
    }
  }
  return out;
}

/** An embedded value as the PostgreSQL column takes it. */
export function toPg(v: unknown, type: string): unknown {
  if (v === null || v === undefined) return null;
  switch (type) {
    case 'boolean': return v === 1 || v === 1n || v === true;
    case 'bytea': return Buffer.isBuffer(v) ? v : Buffer.from(String(v), 'utf8');
    default: return typeof v === 'bigint' ? v.toString() : v;
  }
}

/**
 * Copies every row of `t` (in the plan's order) and returns the count. `src` must be inside one read
 * transaction so that all tables come from one snapshot.
 */
export async function copyTable(src: Database.Database, trx: Transaction<unknown>, t: ImportedTable): Promise<number> {
  const cols = columnsToCopy(t, sqliteColumns(src, t.table), await pgColumns(trx, t.table));
  for (const k of Object.keys(t.set ?? {})) {
    if (!cols.some((c) => c.name === k)) throw Errors.INTERNAL(`the import sets ${t.table}.${k}, which is not a column of both stores`);
  }
  const list = cols.map((c) => `"${c.name}"`).join(', ');
  const perBatch = Math.max(1, Math.min(MAX_ROWS, Math.floor(MAX_PARAMS / cols.length)));
  const target = sql.join(cols.map((c) => sql.ref(c.name)));
  let n = 0;
  let batch: Array<Record<string, unknown>> = [];
  const flush = async (): Promise<void> => {
    if (!batch.length) return;
    const values = sql.join(batch.map((row) => sql`(${sql.join(cols.map((c) => toPg(t.set && c.name in t.set ? t.set[c.name] : row[c.name], c.type)))})`));
    await sql`INSERT INTO ${sql.table(t.table)} (${target}) VALUES ${values}`.execute(trx);
    n += batch.length;
    batch = [];
  };
  // The iterator stays open across the awaits: nothing else runs on this connection meanwhile.
  for (const row of src.prepare(`SELECT ${list} FROM "${t.table}" ORDER BY ${t.orderBy}`).iterate() as IterableIterator<Record<string, unknown>>) {
    batch.push(row);
    if (batch.length >= perBatch) await flush();
  }
  await flush();
  return n;
}

/** Row counts of a table in state.db. */
export function sqliteCount(src: Database.Database, table: string): number {
  return (src.prepare(`SELECT count(*) AS n FROM "${table}"`).get() as { n: number }).n;
}

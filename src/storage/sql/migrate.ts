/**
 * Numbered migrations per dialect, recorded in `keng_migrations (scope, version)`.
 * A scope is one owner's list (e.g. `telemetry`); versions within it count up
 * from 1 and the same number means the same schema on both dialects (the SQL
 * differs: INTEGER vs BIGINT, BLOB vs BYTEA, ...).
 *
 * Each migration runs in its own write transaction together with its
 * `keng_migrations` row, so a crash leaves it either applied and recorded, or
 * neither (PostgreSQL DDL is transactional; SQLite's too). Several nodes
 * starting at once on PostgreSQL serialise on a transaction-scoped advisory lock
 * and re-check the version after taking it, so each step runs once. On SQLite
 * BEGIN IMMEDIATE is the lock. A database newer than this Keng (a version it
 * does not know) is refused rather than used with a schema it cannot read.
 */
import { sql, type Transaction } from 'kysely';
import type { Db, SqlDialect } from './db.js';

export interface SqlMigration {
  version: number;
  name: string;
  /** Statements, one per entry (SQLite prepares one statement at a time). */
  sqlite: string[];
  postgres: string[];
}

/** Arbitrary constant: the advisory lock key of Keng's migrations (one lock for every scope: migrations are rare). */
const PG_LOCK_KEY = 0x4b656e67; // "Keng"

function ddl(dialect: SqlDialect): string {
  return dialect === 'postgres'
    ? 'CREATE TABLE IF NOT EXISTS keng_migrations (scope text NOT NULL, version integer NOT NULL, name text NOT NULL, applied_at bigint NOT NULL, PRIMARY KEY (scope, version))'
    : 'CREATE TABLE IF NOT EXISTS keng_migrations (scope TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL, PRIMARY KEY (scope, version))';
}

async function current(trx: Transaction<unknown>, scope: string): Promise<number> {
  const r = await sql<{ v: number | null }>`SELECT MAX(version) AS v FROM keng_migrations WHERE scope = ${scope}`.execute(trx);
  return Number(r.rows[0]?.v ?? 0);
}

/** Applies the pending migrations of `scope`; returns the versions it applied (none when another node did). */
export async function migrate(db: Db<unknown>, scope: string, list: readonly SqlMigration[]): Promise<number[]> {
  list.forEach((m, i) => { if (m.version !== i + 1) throw new Error(`migrations of ${scope}: version ${m.version} at position ${i + 1}`); });
  const applied: number[] = [];
  for (;;) {
    const done = await db.write(async (trx) => {
      if (db.dialect === 'postgres') await sql`SELECT pg_advisory_xact_lock(${PG_LOCK_KEY})`.execute(trx);
      await sql.raw(ddl(db.dialect)).execute(trx);
      const v = await current(trx, scope);
      if (v > list.length) throw new Error(`the database's ${scope} schema is version ${v}, newer than this Keng knows (${list.length}): upgrade Keng`);
      if (v === list.length) return true;
      const m = list[v]!;
      for (const s of db.dialect === 'postgres' ? m.postgres : m.sqlite) await sql.raw(s).execute(trx);
      await sql`INSERT INTO keng_migrations (scope, version, name, applied_at) VALUES (${scope}, ${m.version}, ${m.name}, ${Date.now()})`.execute(trx);
      applied.push(m.version);
      return false;
    });
    if (done) return applied;
  }
}

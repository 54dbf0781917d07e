/**
 * The SQLite driver of the Db port prepares each SQL text once per connection (db.ts): the same
 * results as preparing per call, statements that return rows (SELECT, … RETURNING) and those that
 * do not each answered their way, a bounded cache, and schema changes seen by cached statements.
 */
import Database from 'better-sqlite3';
import { Kysely, sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ImmediateSqliteDialect } from '../../src/storage/sql/db.js';

let raw: Database.Database;
let prepare: { mock: { calls: unknown[][] } };
let k: Kysely<unknown>;

function open(cacheSize?: number): void {
  raw = new Database(':memory:');
  raw.exec('CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)');
  prepare = vi.spyOn(raw, 'prepare');
  k = new Kysely<unknown>({ dialect: new ImmediateSqliteDialect({ database: raw }, cacheSize) });
}

/** How many times `text` was prepared. */
const prepared = (text: string): number => prepare.mock.calls.filter((c) => c[0] === text).length;

describe('SQLite statement cache', () => {
  beforeEach(() => open());
  afterEach(async () => { await k.destroy(); });

  it('prepares one statement per SQL text, whatever the parameters, with the same results', async () => {
    for (let i = 0; i < 20; i++) await sql`INSERT INTO t (k, v) VALUES (${`k${i}`}, ${i})`.execute(k);
    const got: number[] = [];
    for (let i = 0; i < 20; i++) got.push((await sql<{ v: number }>`SELECT v FROM t WHERE k = ${`k${i}`}`.execute(k)).rows[0]!.v);
    expect(got).toEqual([...Array(20).keys()]);
    expect(prepared('INSERT INTO t (k, v) VALUES (?, ?)')).toBe(1);
    expect(prepared('SELECT v FROM t WHERE k = ?')).toBe(1);
  });

  it('answers row statements with rows and the others with counts', async () => {
    const ins = await sql`INSERT INTO t (k, v) VALUES (${'a'}, ${1}), (${'b'}, ${2})`.execute(k);
    expect(ins.numAffectedRows).toBe(2n);
    expect(ins.rows).toEqual([]);
    const ret = await sql<{ k: string; v: number }>`INSERT INTO t (k, v) VALUES (${'c'}, ${3}) RETURNING k, v`.execute(k);
    expect(ret.rows).toEqual([{ k: 'c', v: 3 }]);
    const upd = await sql`UPDATE t SET v = v + 10 WHERE v < ${3}`.execute(k);
    expect(upd.numAffectedRows).toBe(2n);
    const updRet = await sql<{ k: string }>`UPDATE t SET v = v + 1 WHERE k = ${'zz'} RETURNING k`.execute(k);
    expect(updRet.rows).toEqual([]);
    // The query builder too (its own compiled texts).
    const rows = await k.selectFrom('t' as never).select(['k' as never, 'v' as never]).orderBy('k' as never).execute();
    expect(rows).toEqual([{ k: 'a', v: 11 }, { k: 'b', v: 12 }, { k: 'c', v: 3 }]);
  });

  it('transactions (BEGIN IMMEDIATE, COMMIT, ROLLBACK) work on cached statements, many times', async () => {
    for (let i = 0; i < 3; i++) {
      await k.transaction().execute(async (trx) => { await sql`INSERT INTO t (k, v) VALUES (${`ok${i}`}, ${i})`.execute(trx); });
      await expect(k.transaction().execute(async (trx) => {
        await sql`INSERT INTO t (k, v) VALUES (${`no${i}`}, ${i})`.execute(trx);
        throw new Error('undo');
      })).rejects.toThrow('undo');
    }
    expect(raw.prepare('SELECT k FROM t ORDER BY k').all()).toEqual([{ k: 'ok0' }, { k: 'ok1' }, { k: 'ok2' }]);
    expect(prepared('begin immediate')).toBe(1);
    expect(raw.inTransaction).toBe(false);
  });

  it('a cached SELECT * sees a column added after it was prepared', async () => {
    await sql`INSERT INTO t (k, v) VALUES (${'a'}, ${1})`.execute(k);
    expect((await sql`SELECT * FROM t`.execute(k)).rows).toEqual([{ k: 'a', v: 1 }]);
    raw.exec('ALTER TABLE t ADD COLUMN w TEXT');
    expect((await sql`SELECT * FROM t`.execute(k)).rows).toEqual([{ k: 'a', v: 1, w: null }]);
  });

  it('streams select queries (not cached: an open iterator keeps its statement busy)', async () => {
    await sql`INSERT INTO t (k, v) VALUES (${'a'}, ${1}), (${'b'}, ${2})`.execute(k);
    const seen: unknown[] = [];
    for await (const r of k.selectFrom('t' as never).select('k' as never).orderBy('k' as never).stream()) seen.push(r);
    expect(seen).toEqual([{ k: 'a' }, { k: 'b' }]);
  });
});

describe('SQLite statement cache: bounded', () => {
  beforeEach(() => open(2));
  afterEach(async () => { await k.destroy(); });

  it('drops the least recently used text beyond its size and prepares it again when needed', async () => {
    const a = () => sql`SELECT 1 AS a`.execute(k);
    const b = () => sql`SELECT 2 AS b`.execute(k);
    const c = () => sql`SELECT 3 AS c`.execute(k);
    await a(); await b(); await a(); // a most recent
    await c();                       // drops b
    await a();
    expect(prepared('SELECT 1 AS a')).toBe(1);
    await b();
    expect(prepared('SELECT 2 AS b')).toBe(2);
    // b's return dropped c (a was used after it), not a.
    await a();
    expect(prepared('SELECT 1 AS a')).toBe(1);
    expect((await c()).rows).toEqual([{ c: 3 }]);
    expect(prepared('SELECT 3 AS c')).toBe(2);
  });
});

/**
 * Rows bound as multi-row VALUES lists (src/storage/sql/values.ts): few distinct chunk sizes, every
 * row written once in the order given, undefined bound as NULL, and the rows an UPDATE … FROM (VALUES)
 * returns collected across chunks.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/index.js';
import { StateDb, stateSqlitePort } from '../../src/storage/state/index.js';
import { chunkSizes, runValues, valuesList, VALUES_CHUNK_ROWS } from '../../src/storage/sql/values.js';
import type { Db } from '../../src/storage/sql/index.js';

const migrations = [{ version: 1, name: 't', up: 'CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT NOT NULL UNIQUE, v INTEGER, note TEXT)' }];
let dir: string;
let state: StateDb;
let db: Db<unknown>;

beforeEach(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'keng-values-'));
  state = new StateDb({ dataDir: dir, logger: createLogger('silent'), migrations });
  await state.start();
  db = stateSqlitePort(state);
});
afterEach(async () => { await state.stop(); rmSync(dir, { recursive: true, force: true }); });

describe('chunkSizes', () => {
  it('full chunks, then the binary digits of the rest, summing to n', () => {
    expect(chunkSizes(0)).toEqual([]);
    expect(chunkSizes(1)).toEqual([1]);
    expect(chunkSizes(64)).toEqual([64]);
    expect(chunkSizes(2001)).toEqual([...new Array<number>(31).fill(64), 16, 1]);
    for (let n = 0; n < 300; n++) {
      const c = chunkSizes(n);
      expect(c.reduce((a, b) => a + b, 0)).toBe(n);
      expect(c.every((x) => x === VALUES_CHUNK_ROWS || (x & (x - 1)) === 0)).toBe(true); // a power of two: few texts
    }
  });

  it('makes the placeholder list', () => {
    expect(valuesList(2, 3)).toBe('(?,?,?),(?,?,?)');
  });
});

describe('runValues on SQLite', () => {
  it('inserts every row once, in order, with undefined as NULL', async () => {
    const rows = Array.from({ length: 150 }, (_, i) => [`k${String(i).padStart(3, '0')}`, i % 3 === 0 ? undefined : i, i === 7 ? 'seven' : null]);
    const ret = await db.write((trx) => runValues<{ k: string }>(trx, rows, 3, (v) => `INSERT INTO t (k, v, note) VALUES ${v} RETURNING k`));
    expect(ret.map((r) => r.k)).toEqual(rows.map((r) => r[0]));
    const stored = state.db.prepare('SELECT k, v, note FROM t ORDER BY seq').all() as Array<{ k: string; v: number | null; note: string | null }>;
    expect(stored.map((r) => r.k)).toEqual(rows.map((r) => r[0])); // seq follows the order given
    expect(stored[3]).toEqual({ k: 'k003', v: null, note: null });
    expect(stored[7]).toEqual({ k: 'k007', v: 7, note: 'seven' });
  });

  it('collects what an UPDATE … FROM (VALUES) returns across chunks; rows that match nothing return nothing', async () => {
    await db.write((trx) => runValues(trx, Array.from({ length: 100 }, (_, i) => [`k${i}`, 0]), 2, (v) => `INSERT INTO t (k, v) VALUES ${v}`));
    const moves = Array.from({ length: 100 }, (_, i) => [`k${i}`, i === 50 ? 9 : 0, i]); // k50 is not at 9: a miss
    const ret = await db.write((trx) => runValues<{ k: string }>(trx, moves, 3,
      (v) => `UPDATE t SET v = v.column3 FROM (VALUES ${v}) AS v WHERE t.k = v.column1 AND t.v = v.column2 RETURNING t.k`));
    expect(ret).toHaveLength(99);
    expect(ret.some((r) => r.k === 'k50')).toBe(false);
    expect(state.db.prepare('SELECT v FROM t WHERE k = ?').get('k99')).toEqual({ v: 99 });
  });

  it('refuses a row of the wrong width before writing anything of its chunk', async () => {
    await expect(db.write((trx) => runValues(trx, [['a', 1, null], ['b', 2]], 3, (v) => `INSERT INTO t (k, v, note) VALUES ${v}`))).rejects.toThrow(/2 values, expected 3/);
    expect(state.db.prepare('SELECT COUNT(*) AS n FROM t').get()).toEqual({ n: 0 });
  });
});

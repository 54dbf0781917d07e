/**
 * The state window (src/storage/state/window.ts) on both dialects: one transaction per window,
 * after-commit callbacks after COMMIT and in order, a failure rejecting its window and the one
 * gathered on top of it (no callbacks, keys evicted), retried conflicts, savepoint units, a
 * DO-NOTHING conflict that leaves a PostgreSQL transaction usable, and (SQLite) no other task ever
 * running while its transaction is open.
 */
import Database from 'better-sqlite3';
import { sql, type Transaction } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { openPgDb } from '../../src/storage/sql/index.js';
import { StateWindow, WINDOW_PHASES, type WindowKind } from '../../src/storage/state/index.js';
import { STATE_DIALECTS, openState, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';

const logger = createLogger('silent');
afterAll(stopStatePostgres);

interface Row { k: string; v: number }

describe.each(STATE_DIALECTS)('state window on %s', (dialect) => {
  let h: StateHarness;
  let w: StateWindow;
  let flushes: number;
  let failNext: unknown;
  /** Runs inside the next flush of `insert` (code running while a window is in flight, outside any unit). */
  let duringFlush: (() => void) | undefined;
  /** Rows as another connection sees them (committed data only). */
  let committed: () => Promise<string[]>;
  let closeOther: () => Promise<void>;

  /** A kind inserting win_t rows from one JSON parameter; outcome: whether the row was new. */
  const insert: WindowKind<Row, boolean> = {
    name: 'win_t insert',
    phase: WINDOW_PHASES.insert,
    keys: (r) => [`win:${r.k}`],
    async flush(trx, items) {
      flushes++;
      const hook = duringFlush; duringFlush = undefined; hook?.();
      if (failNext !== undefined) { const e = failNext; failNext = undefined; throw e; }
      const json = JSON.stringify(items);
      const q = dialect === 'sqlite'
        ? sql<{ k: string }>`INSERT INTO win_t (k, v) SELECT value->>'$.k', value->>'$.v' FROM json_each(${json}) WHERE true
            ON CONFLICT DO NOTHING RETURNING k`
        : sql<{ k: string }>`INSERT INTO win_t (k, v) SELECT k, v FROM jsonb_to_recordset(${json}::jsonb) AS x(k text, v integer)
            ON CONFLICT DO NOTHING RETURNING k`;
      const added = new Set((await q.execute(trx)).rows.map((r) => r.k));
      return items.map((r) => added.has(r.k));
    },
  };
  const put = (k: string, v = 1) => (trx: Transaction<unknown>) => sql`INSERT INTO win_t (k, v) VALUES (${k}, ${v})`.execute(trx);

  beforeEach(async () => {
    h = await openState(dialect);
    await h.db.write(async (trx) => { await sql`CREATE TABLE win_t (k text PRIMARY KEY, v integer NOT NULL)`.execute(trx); });
    flushes = 0;
    failNext = undefined;
    duringFlush = undefined;
    if (dialect === 'sqlite') {
      const other = new Database(h.state!.file, { readonly: true });
      committed = async () => (other.prepare('SELECT k FROM win_t ORDER BY k').all() as Row[]).map((r) => r.k);
      closeOther = async () => { other.close(); };
    } else {
      const other = openPgDb(h.url!);
      committed = async () => (await sql<Row>`SELECT k FROM win_t ORDER BY k`.execute(other.kysely)).rows.map((r) => r.k);
      closeOther = () => other.close();
    }
    w = new StateWindow({ db: h.db, logger, windowMs: dialect === 'sqlite' ? 8 : 0 });
    await w.start();
  });
  afterEach(async () => { await w.stop(); await closeOther(); await h.close(); });

  it('writes everything of one turn in one transaction: one flush per kind, units after the intents', async () => {
    const adds = Array.from({ length: 50 }, (_, i) => w.add(insert, { k: `k${String(i).padStart(2, '0')}`, v: i }));
    const seen = w.unit(async (trx) => (await sql<{ n: number }>`SELECT COUNT(*) AS n FROM win_t`.execute(trx)).rows[0]!.n);
    expect(await Promise.all(adds)).toEqual(Array(50).fill(true));
    expect(Number(await seen)).toBe(50); // the unit ran in the same transaction, after the kind
    expect(flushes).toBe(1);
    expect(w.stats.windows).toBe(1);
    expect(w.stats.statements).toBe(4); // BEGIN, the insert, the unit's SELECT, COMMIT
    expect(await committed()).toHaveLength(50);
  });

  it('runs after-commit callbacks after COMMIT, in the order registered, before the callers resume', async () => {
    const order: string[] = [];
    const reads: Array<Promise<string[]>> = [];
    const a = w.add(insert, { k: 'a', v: 1 });
    w.afterCommit(() => { order.push('after a'); reads.push(committed()); });
    const u = w.unit(async (trx, after) => { await put('u')(trx); after(() => order.push('after unit')); return 'u'; });
    const b = w.add(insert, { k: 'b', v: 2 });
    w.afterCommit(() => order.push('after b'));
    void a.then(() => order.push('a resolved'));
    expect(order).toEqual([]);
    await Promise.all([a, b, u]);
    expect(order).toEqual(['after a', 'after b', 'after unit', 'a resolved']);
    expect(await reads[0]).toEqual(['a', 'b', 'u']); // read from another connection inside the callback: committed
  });

  it('a failed window rejects its writes and the window gathered on top of it, runs no callback, evicts their keys', async () => {
    const evicted: string[] = [];
    w.onEvict((keys) => evicted.push(...keys));
    const ran: string[] = [];
    const first = w.add(insert, { k: 'k1', v: 1 });
    w.afterCommit(() => ran.push('first'));
    let second: Promise<boolean> | undefined;
    // A write arriving while this window is in flight (outside its units) goes to the next window, built on this one.
    duringFlush = () => { second = w.add(insert, { k: 'k2', v: 2 }); w.afterCommit(() => ran.push('second')); };
    let inUnit: Promise<boolean> | undefined;
    const bad = w.unit(async (trx) => {
      await put('from-unit')(trx);
      inUnit = w.capture(() => w.add(insert, { k: 'k4', v: 4 })); // the unit's own write: joins this window
      throw new Error('unit failed');
    }, { keys: ['unit:key'] });
    await expect(first).rejects.toThrow('unit failed');
    await expect(bad).rejects.toThrow('unit failed');
    await expect(inUnit!).rejects.toThrow('unit failed');
    await expect(second!).rejects.toThrow('an earlier window failed');
    expect(ran).toEqual([]);
    expect(evicted.sort()).toEqual(['unit:key', 'win:k1', 'win:k2', 'win:k4']);
    expect(w.failuresInARow).toBe(1);
    expect(await committed()).toEqual([]);
    // The next window is independent again.
    expect(await w.add(insert, { k: 'k3', v: 3 })).toBe(true);
    expect(w.failuresInARow).toBe(0);
    expect(await committed()).toEqual(['k3']);
  });

  it('what a unit adds inside capture() (intents, callbacks) commits in its window, after the units; outside it, in the next', async () => {
    const ran: string[] = [];
    let inner!: Promise<boolean>;
    let outside!: Promise<boolean>;
    let windowOfUnit = 0;
    let windowOfLate = 0;
    const u = w.unit(async (trx, after) => {
      await put('unit')(trx);
      w.capture(() => {
        inner = w.add(insert, { k: 'late', v: 2 }); // written after the units, in this transaction
        w.afterCommit(() => { ran.push('unit afterCommit'); windowOfLate = w.stats.windows; });
      });
      after(() => { ran.push('unit after'); windowOfUnit = w.stats.windows; });
      outside = w.add(insert, { k: 'next', v: 3 }); // not captured: the window gathered on top of this one
      return 5;
    });
    expect(await u).toBe(5);
    expect(await inner).toBe(true);
    expect([windowOfUnit, windowOfLate]).toEqual([1, 1]);
    expect(ran).toEqual(['unit after', 'unit afterCommit']);
    expect(await outside).toBe(true);
    expect(w.stats.windows).toBe(2);
    expect(await committed()).toEqual(['late', 'next', 'unit']);
    expect(() => w.capture(() => 1)).toThrow(/outside a unit/);
  });

  it('a savepoint unit that fails drops what it added (rejected, evicted); the window commits the rest', async () => {
    const evicted: string[] = [];
    w.onEvict((keys) => evicted.push(...keys));
    let inner!: Promise<boolean>;
    const bad = w.unit(async (trx) => {
      await put('bad')(trx);
      inner = w.capture(() => w.add(insert, { k: 'late', v: 2 }));
      throw new Error('refused');
    }, { savepoint: true });
    const ok = w.add(insert, { k: 'a', v: 1 });
    await expect(bad).rejects.toThrow('refused');
    await expect(inner).rejects.toThrow(/unit that made this write failed/);
    expect(await ok).toBe(true);
    expect(evicted).toEqual(['win:late']);
    expect(await committed()).toEqual(['a']);
  });

  it('a posted intent (no promise of its own) commits with its window, and fails with it: keys evicted, the others rejected', async () => {
    const evicted: string[] = [];
    w.onEvict((keys) => evicted.push(...keys));
    w.post(insert, { k: 'p1', v: 1 });
    expect(await w.add(insert, { k: 'p2', v: 2 })).toBe(true);
    expect(await committed()).toEqual(['p1', 'p2']);
    w.post(insert, { k: 'p3', v: 3 });
    const other = w.add(insert, { k: 'p4', v: 4 });
    failNext = new Error('flush failed');
    await expect(other).rejects.toThrow('flush failed');
    expect(evicted.sort()).toEqual(['win:p3', 'win:p4']);
    expect(await committed()).toEqual(['p1', 'p2']);
    await w.stop();
    expect(() => w.post(insert, { k: 'p5', v: 5 })).toThrow('stopped');
  });
  it('retries a serialization failure or deadlock (PostgreSQL 40001 / 40P01) with the same intents', async () => {
    failNext = Object.assign(new Error('could not serialize access'), { code: '40001' });
    expect(await w.add(insert, { k: 'r', v: 1 })).toBe(true);
    expect(flushes).toBe(2);
    expect(await committed()).toEqual(['r']);
    failNext = Object.assign(new Error('other'), { code: '23505' }); // not retried
    await expect(w.add(insert, { k: 's', v: 1 })).rejects.toThrow('other');
    expect(flushes).toBe(3);
  });

  it('a DO-NOTHING conflict inside a unit leaves the transaction usable (no abort on PostgreSQL)', async () => {
    const added = w.add(insert, { k: 'x', v: 1 });
    const dupIntent = w.add(insert, { k: 'x', v: 9 }); // same key in the same statement: DO NOTHING too
    const unit = w.unit(async (trx) => {
      const r = await sql<{ k: string }>`INSERT INTO win_t (k, v) VALUES (${'x'}, ${2}) ON CONFLICT DO NOTHING RETURNING k`.execute(trx);
      await put('z')(trx); // would fail with "current transaction is aborted" after an error on PostgreSQL
      return r.rows.length;
    });
    expect(await added).toBe(true);
    expect(await dupIntent).toBe(true); // outcome by key: the row exists (the kind cannot tell which of the two won)
    expect(await unit).toBe(0);
    expect(await committed()).toEqual(['x', 'z']);
  });

  it('a savepoint unit that fails undoes only its own writes and callbacks', async () => {
    const ran: string[] = [];
    const ok = w.add(insert, { k: 'a', v: 1 });
    const bad = w.unit(async (trx, after) => {
      after(() => ran.push('bad'));
      await put('b')(trx);
      await put('a')(trx); // unique violation: aborts on PostgreSQL, rolled back to the savepoint
      return 1;
    }, { savepoint: true });
    const good = w.unit(async (trx, after) => { after(() => ran.push('good')); await put('c')(trx); return 2; });
    expect(await ok).toBe(true);
    await expect(bad).rejects.toThrow();
    expect(await good).toBe(2);
    expect(ran).toEqual(['good']);
    expect(await committed()).toEqual(['a', 'c']);
  });

  it('reports not ready after three failed windows in a row, ready again at the next commit', async () => {
    for (let i = 0; i < 3; i++) {
      expect(w.report().ok).toBe(true);
      failNext = new Error('database away');
      await expect(w.add(insert, { k: `f${i}`, v: i })).rejects.toThrow('database away');
    }
    expect(w.report()).toMatchObject({ ok: false, detail: { failuresInARow: 3, failed: 3 } });
    expect(await w.add(insert, { k: 'back', v: 1 })).toBe(true);
    expect(w.report()).toMatchObject({ ok: true, detail: { failuresInARow: 0 } });
  });

  it('durable() makes the open window due at once', async () => {
    const slow = new StateWindow({ db: h.db, logger, windowMs: 60_000 });
    await slow.start();
    try {
      const t0 = Date.now();
      expect(await slow.durable(slow.add(insert, { k: 'd', v: 1 }))).toBe(true);
      expect(Date.now() - t0).toBeLessThan(10_000);
    } finally { await slow.stop(); }
  });

  it('stop() commits what is open, then refuses writes', async () => {
    const slow = new StateWindow({ db: h.db, logger, windowMs: 60_000 });
    await slow.start();
    const p = slow.add(insert, { k: 's', v: 1 });
    await slow.stop();
    expect(await p).toBe(true);
    await expect(slow.add(insert, { k: 't', v: 1 })).rejects.toThrow('stopped');
    expect(await committed()).toEqual(['s']);
  });

  it.runIf(dialect === 'sqlite')('no other task runs while a window transaction is open (setImmediate and timer probes)', async () => {
    let probes = 0;
    let sawOpen = 0;
    let stop = false;
    const probe = (): void => {
      probes++;
      if (h.sqlite!.inTransaction) sawOpen++;
      if (!stop) setImmediate(probe);
    };
    setImmediate(probe);
    const writes: Array<Promise<boolean>> = [];
    for (let round = 0; round < 30; round++) {
      for (let i = 0; i < 100; i++) writes.push(w.add(insert, { k: `p${round}-${i}`, v: i }));
      await new Promise((r) => setTimeout(r, 3));
      if (h.sqlite!.inTransaction) sawOpen++;
    }
    await Promise.all(writes);
    stop = true;
    expect(probes).toBeGreaterThan(30);
    expect(sawOpen).toBe(0);
    expect(w.stats.windows).toBeGreaterThan(1);
    expect(await committed()).toHaveLength(3_000);
  });
});

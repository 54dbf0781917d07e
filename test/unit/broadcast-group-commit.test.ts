/** GroupCommit.runDurably: a broadcast start is on disk when it returns, also when it joins an open batch. */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/index.js';
import { GroupCommit } from '../../src/broadcast/group-commit.js';

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

function setup() {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-gc-'));
  dirs.push(dir);
  const file = path.join(dir, 'state.db');
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE t (x INTEGER)');
  const gc = new GroupCommit({ stateDb: { db }, logger: createLogger('silent'), windowMs: 10_000 });
  const other = () => { const o = new Database(file, { readonly: true }); try { return o.prepare('SELECT COUNT(*) FROM t').pluck().get(); } finally { o.close(); } };
  return { db, gc, other };
}

describe('GroupCommit.runDurably', () => {
  it('commits before returning, including an open batch it joined; run() leaves the batch open', async () => {
    const { db, gc, other } = setup();
    await gc.start();
    gc.run(() => db.prepare('INSERT INTO t VALUES (1)').run()); // a device answer opens a batch
    gc.run(() => db.prepare('INSERT INTO t VALUES (2)').run());
    expect(db.inTransaction).toBe(true);
    expect(other()).toBe(0);
    const v = gc.runDurably(() => { db.prepare('INSERT INTO t VALUES (3)').run(); return 'done'; });
    expect(v).toBe('done');
    expect(db.inTransaction).toBe(false);
    expect(other()).toBe(3);
    expect(() => gc.runDurably(() => { db.prepare('INSERT INTO t VALUES (4)').run(); throw new Error('boom'); })).toThrow('boom');
    expect(db.inTransaction).toBe(false); // what was written is committed (a start rolls its own part back in its own transaction)
    await gc.stop();
    db.close();
  });

  it('durable(): settles when the window holding the writes commits, and rejects when its COMMIT fails', async () => {
    const { db, gc, other } = setup();
    await gc.start();
    await gc.durable(); // no window open: at once
    gc.run(() => db.prepare('INSERT INTO t VALUES (1)').run());
    let settled = false;
    const d = gc.durable().then(() => { settled = true; });
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false); // the window is still open: not on disk yet, no PUBACK yet
    gc.runDurably(() => db.prepare('INSERT INTO t VALUES (2)').run());
    await d;
    expect(other()).toBe(2);
    // A window SQLite rolled back by itself (here: by hand) rejects: those answers get no PUBACK.
    gc.run(() => db.prepare('INSERT INTO t VALUES (3)').run());
    const failed = gc.durable();
    db.exec('ROLLBACK');
    gc.runDurably(() => undefined);
    await expect(failed).rejects.toThrow(/rolled back/);
    expect(other()).toBe(2);
    await gc.stop();
    db.close();
  });
});

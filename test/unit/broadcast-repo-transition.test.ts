/**
 * BroadcastRepo.transition: target row + log line are all-or-nothing, both on
 * its own (a transaction) and inside an open transaction (the broadcast group
 * commit), where it takes no savepoint and restores the row by hand.
 */
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { BROADCAST_MIGRATION } from '../../src/broadcast/execution/index.js';
import { BroadcastRepo } from '../../src/broadcast/execution/repo.js';
import type { LogSource } from '../../src/broadcast/execution/types.js';

let db: Database.Database | undefined;
afterEach(() => { db?.close(); db = undefined; });

function setup(): BroadcastRepo {
  db = new Database(':memory:');
  db.exec(BROADCAST_MIGRATION.up);
  const repo = new BroadcastRepo(db);
  repo.create({ id: 'b1', plannedAt: 1, priority: 'normal', volume: 50, content: { stream: { url: 'http://x/s' } }, notAfter: 10_000, createdAt: 1 },
    [{ deviceId: 'loa-1', area: 'v1' }]);
  return repo;
}

const logStates = (): string[] => (db!.prepare('SELECT state FROM broadcast_log ORDER BY seq').all() as Array<{ state: string }>).map((r) => r.state);

describe('BroadcastRepo.transition', () => {
  for (const inTx of [false, true]) {
    it(`writes the new state and its log line${inTx ? ' inside an open transaction' : ''}`, () => {
      const repo = setup();
      if (inTx) db!.exec('BEGIN');
      repo.transition(repo.target('b1', 'loa-1')!, 'sent', 5, { source: 'rpc' });
      if (inTx) db!.exec('COMMIT');
      expect(repo.target('b1', 'loa-1')).toMatchObject({ state: 'sent', updated_at: 5 });
      expect(logStates()).toEqual(['pending', 'sent']);
    });

    it(`leaves the target row as it was when the log line cannot be written${inTx ? ' (open transaction, no savepoint)' : ''}`, () => {
      const repo = setup();
      const before = repo.target('b1', 'loa-1')!;
      if (inTx) db!.exec('BEGIN');
      // 'bogus' breaks the log's CHECK on source, after the target row was updated.
      expect(() => repo.transition(before, 'sent', 5, { source: 'bogus' as LogSource, detail: 'x' })).toThrow(/CHECK/);
      if (inTx) { expect(db!.inTransaction).toBe(true); db!.exec('COMMIT'); }
      expect(repo.target('b1', 'loa-1')).toEqual(before);
      expect(logStates()).toEqual(['pending']);
    });
  }
});

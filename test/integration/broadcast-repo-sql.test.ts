/**
 * The bulk broadcast repository (src/broadcast/execution/repo-sql.ts) through the state window, on
 * SQLite and PostgreSQL: a broadcast to 2,000 speakers in a few statements with the rows and log
 * lines today's repo writes, target compare-and-set applied and missed (a missed move writes no
 * log line), several moves of one target in a window merged, log `seq` in enqueue order, duplicate
 * lines ignored on PostgreSQL (ON CONFLICT), missed occurrences counted once, stop and request ids.
 */
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { BroadcastRepoSql } from '../../src/broadcast/execution/repo-sql.js';
import type { NewBroadcast, NewTarget } from '../../src/broadcast/execution/repo.js';
import { StateWindow } from '../../src/storage/state/index.js';
import { chunkSizes } from '../../src/storage/sql/values.js';
import { STATE_DIALECTS, openState, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';

const logger = createLogger('silent');
afterAll(stopStatePostgres);

const N = 2_000;
const dev = (i: number): string => `loa-${String(i).padStart(4, '0')}`;
const bc = (id: string, o: Partial<NewBroadcast> = {}): NewBroadcast => ({
  id, plannedAt: 1_000, priority: 'emergency', volume: 80, content: { media: { mediaId: 'm1', url: 'http://x/m1.mp3' } as never },
  durationSec: 30, notAfter: 9_000, createdAt: 1_000, ...o,
});

describe.each(STATE_DIALECTS)('broadcast bulk repo on %s', (dialect) => {
  let h: StateHarness;
  let w: StateWindow;
  let repo: BroadcastRepoSql;

  beforeEach(async () => {
    h = await openState(dialect);
    repo = new BroadcastRepoSql(h.db);
    w = new StateWindow({ db: h.db, logger });
    await w.start();
  });
  afterEach(async () => { await w.stop(); await h.close(); });

  it('creates a broadcast to 2,000 speakers in one window of 5 statements, as today\'s repo writes it', async () => {
    const targets: NewTarget[] = Array.from({ length: N }, (_, i) => (i % 4 === 3
      ? { deviceId: dev(i), area: 'thon-1', state: 'offline', detail: 'not connected' }
      : { deviceId: dev(i), area: 'thon-1', state: 'sent', playRequestId: `r-${i}`, source: 'controller' }));
    const before = w.stats.statements;
    expect(await repo.create(w, bc('b1', { scheduleId: 's1' }), targets)).toBe(true);
    // BEGIN, broadcast, targets, log lines, COMMIT; SQLite binds targets and lines as VALUES lists of at most 64 rows.
    expect(w.stats.statements - before).toBe(dialect === 'postgres' ? 5 : 3 + chunkSizes(N).length + chunkSizes(2 * N).length);
    const b = await repo.get('b1');
    expect(b).toMatchObject({ id: 'b1', scheduleId: 's1', priority: 'emergency', volume: 80, durationSec: 30, notAfter: 9_000 });
    expect(b!.targets).toHaveLength(N);
    expect(await repo.target('b1', dev(0))).toEqual({
      broadcast_id: 'b1', device_id: dev(0), area: 'thon-1', state: 'sent', updated_at: 1_000, detail: null, play_request_id: 'r-0', stop_request_id: null,
    });
    expect(await repo.target('b1', dev(3))).toMatchObject({ state: 'offline', detail: 'not connected', play_request_id: null });
    const log = await repo.logOf('b1');
    expect(log).toHaveLength(2 * N);
    expect(log.slice(0, N).every((l) => l.state === 'pending' && l.prev_state === null)).toBe(true);
    expect(log.slice(0, 2).map((l) => l.device_id)).toEqual([dev(0), dev(1)]);
    expect(log[N]).toMatchObject({ device_id: dev(0), state: 'sent', prev_state: 'pending', schedule_id: 's1', source: 'controller', at: 1_000 });
    expect(log[N + 3]).toMatchObject({ device_id: dev(3), state: 'offline', detail: 'not connected' });
    expect(log.every((l, i) => i === 0 || l.seq > log[i - 1]!.seq)).toBe(true);
    // The same id again: the broadcast exists (ON CONFLICT DO NOTHING RETURNING), nothing else changes.
    expect(await repo.create(w, bc('b1'), [{ deviceId: dev(0), area: 'x' }])).toBe(false);
    expect((await repo.target('b1', dev(0)))!.area).toBe('thon-1');
  });

  it('moves 2,000 targets by compare-and-set in one window; a miss writes no log line', async () => {
    await repo.create(w, bc('b1'), Array.from({ length: N }, (_, i) => ({ deviceId: dev(i), area: 'a', state: 'sent' as const })));
    const before = w.stats.statements;
    const out = await Promise.all(Array.from({ length: N }, (_, i) => repo.transition(
      w, { broadcastId: 'b1', deviceId: dev(i), area: 'a', state: i === 5 ? 'pending' : 'sent' }, 'accepted', 2_000 + i,
      { source: 'rpc', detail: `d${i}` },
    )));
    // BEGIN, UPDATE … FROM json (SQLite: VALUES lists), INSERT log, COMMIT; the miss writes no line.
    expect(w.stats.statements - before).toBe(dialect === 'postgres' ? 4 : 2 + chunkSizes(N).length + chunkSizes(N - 1).length);
    expect(out.filter((o) => !o.applied)).toHaveLength(1);
    expect(out[5]!.applied).toBe(false); // memory said pending: stale, not applied
    expect(await repo.target('b1', dev(5))).toMatchObject({ state: 'sent', updated_at: 1_000 });
    expect(await repo.target('b1', dev(6))).toMatchObject({ state: 'accepted', updated_at: 2_006, detail: 'd6' });
    const accepted = (await repo.logOf('b1')).filter((l) => l.state === 'accepted');
    expect(accepted).toHaveLength(N - 1);
    expect(accepted.map((l) => l.device_id)).toEqual(Array.from({ length: N }, (_, i) => dev(i)).filter((d) => d !== dev(5)));
    expect(accepted[0]).toMatchObject({ prev_state: 'sent', source: 'rpc', detail: 'd0', at: 2_000 });
  });

  it('merges several moves of one target in a window into one update, with every log line in order', async () => {
    await repo.create(w, bc('b1'), [{ deviceId: dev(0), area: 'a', state: 'sent' }, { deviceId: dev(1), area: 'a', state: 'sent' }]);
    const t0 = { broadcastId: 'b1', deviceId: dev(0), area: 'a' };
    const out = await Promise.all([
      repo.transition(w, { ...t0, state: 'sent' }, 'accepted', 10, { source: 'rpc' }),
      repo.transition(w, { broadcastId: 'b1', deviceId: dev(1), area: 'a', state: 'sent' }, 'rejected', 11, { source: 'rpc', detail: 'busy' }),
      repo.transition(w, { ...t0, state: 'accepted' }, 'playing', 12, { source: 'event', deviceAt: 11 }),
      repo.transition(w, { ...t0, state: 'playing' }, 'completed', 13, { source: 'event' }),
    ]);
    expect(out.every((o) => o.applied)).toBe(true);
    expect(await repo.target('b1', dev(0))).toMatchObject({ state: 'completed', updated_at: 13, detail: null });
    const lines = (await repo.logOf('b1')).slice(4).map((l) => [l.device_id, l.prev_state, l.state, l.device_at]);
    expect(lines).toEqual([
      [dev(0), 'sent', 'accepted', null], [dev(1), 'sent', 'rejected', null], [dev(0), 'accepted', 'playing', 11], [dev(0), 'playing', 'completed', null],
    ]);
  });

  it('log lines: in enqueue order across windows; a duplicate (broadcast, device, state) is ignored on PostgreSQL', async () => {
    await repo.create(w, bc('b1'), [{ deviceId: dev(0), area: 'a' }]);
    const line = { at: 5, broadcastId: 'b1', deviceId: dev(0), area: 'a', state: 'stopped' as const, prevState: 'pending' as const, source: 'controller' as const };
    await Promise.all([w.add(repo.log, line), w.add(repo.log, { ...line, at: 6, detail: 'again' })]);
    await w.add(repo.log, { ...line, at: 7 });
    const stopped = (await repo.logOf('b1')).filter((l) => l.state === 'stopped');
    if (dialect === 'postgres') expect(stopped.map((l) => l.at)).toEqual([5]);
    else expect(stopped.map((l) => l.at)).toEqual([5, 6, 7]); // SQLite has no such constraint: one writer, CAS decides
  });

  it('records missed occurrences once per speaker, counting only new rows', async () => {
    const targets = Array.from({ length: N }, (_, i) => ({ deviceId: dev(i), area: 'a' }));
    const [first, sameWindow] = await Promise.all([
      w.add(repo.missed, { scheduleId: 's1', plannedAt: 100, at: 200, targets }),
      w.add(repo.missed, { scheduleId: 's1', plannedAt: 300, at: 200, targets: targets.slice(0, 10) }),
    ]);
    expect([first, sameWindow]).toEqual([N, 10]);
    expect(await w.add(repo.missed, { scheduleId: 's1', plannedAt: 100, at: 201, targets: targets.slice(0, 20) })).toBe(0);
  });

  it('records a stop once and the request ids of targets', async () => {
    await repo.create(w, bc('b1'), [{ deviceId: dev(0), area: 'a', state: 'sent', playRequestId: 'p0' }]);
    const [a, b] = await Promise.all([
      w.add(repo.stopRequested, { broadcastId: 'b1', at: 50 }),
      w.add(repo.stopRequested, { broadcastId: 'b1', at: 51 }),
      w.add(repo.requestIds, { broadcastId: 'b1', deviceId: dev(0), stopRequestId: 's0' }),
    ]);
    expect([a.applied, b.applied]).toEqual([true, false]);
    expect((await w.add(repo.stopRequested, { broadcastId: 'b1', at: 52 })).applied).toBe(false);
    expect((await repo.getBroadcastRow('b1'))!.stop_requested_at).toBe(50);
    expect(await repo.target('b1', dev(0))).toMatchObject({ play_request_id: 'p0', stop_request_id: 's0' });
    expect((await repo.openTargets(0)).map((t) => t.device_id)).toEqual([dev(0)]);
  });
});

/**
 * An occurrence whose broadcast was stored is never recorded `missed`, on SQLite and PostgreSQL: the real
 * BroadcastService, its state window and scheduler on one database. The node "dies" right after onOccurrence
 * (every later settle() of its repo fails, as a SIGKILLed process writes nothing more); once the lease is over
 * another node's scheduler looks for expired claims. The claim says `fired` with the broadcast's id: it
 * committed with the broadcast. A claim whose broadcast was never stored still becomes `missed`, once; and a
 * node whose claim expired before its broadcast was stored stores nothing (no broadcast of a missed occurrence).
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { BroadcastService } from '../../src/broadcast/service.js';
import { createLogger, systemClock } from '../../src/core/index.js';
import { newSchedule, type ScheduleSpec } from '../../src/broadcast/schedule/model.js';
import { SqlScheduleRepo } from '../../src/broadcast/schedule/repo.js';
import { Scheduler } from '../../src/broadcast/schedule/scheduler.js';
import { broadcastRegistry, testDevice } from '../helpers/broadcast-registry.js';
import { startBroadcastStack, type BroadcastStack } from '../helpers/broadcast-stack.js';
import { STATE_DIALECTS, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';
import { waitFor } from '../helpers/mqtt.js';

const logger = createLogger('silent');
afterAll(stopStatePostgres);

const spec = (at: number): ScheduleSpec => ({
  name: 'Bản tin', target: { devices: ['loa-1', 'loa-2'] }, content: { streamUrl: 'http://127.0.0.1:9/radio' }, durationSec: 60,
  timezone: 'Asia/Ho_Chi_Minh', volume: 70, priority: 'normal', enabled: true, at,
});

interface ClaimRow { schedule_id: string; node_id: string; outcome: string | null; broadcast_id: string | null }

describe.each(STATE_DIALECTS)('an occurrence\'s record commits with its broadcast on %s', (dialect) => {
  let stack: BroadcastStack;
  let h: StateHarness;
  let service: BroadcastService;
  let repo: SqlScheduleRepo;

  beforeEach(async () => {
    stack = await startBroadcastStack(dialect, {
      registry: broadcastRegistry([testDevice('loa-1', 'v1'), testDevice('loa-2', 'v2')]), speakers: ['loa-1', 'loa-2'],
      tmpPrefix: 'keng-sched-record-', nodeId: 'n1',
    });
    ({ h, service } = stack);
    repo = new SqlScheduleRepo(h.db);
  }, 120_000);
  afterEach(async () => {
    vi.restoreAllMocks();
    await stack.stop();
  });

  const claims = async () => (await sql<ClaimRow>`SELECT schedule_id, node_id, outcome, broadcast_id FROM schedule_occurrences ORDER BY schedule_id`
    .execute(h.db.kysely)).rows;
  const broadcasts = async () => (await sql<{ id: string; schedule_id: string | null }>`SELECT id, schedule_id FROM broadcasts ORDER BY id`
    .execute(h.db.kysely)).rows;
  /** Another node looking for expired claims (a lease of 1 ms: every claim made before is over). */
  async function otherNodeExpires(): Promise<string[]> {
    const missed: string[] = [];
    const other = new Scheduler({
      repo: new SqlScheduleRepo(h.db), clock: systemClock, logger, nodeId: 'n2', claimLeaseMs: 1,
      onOccurrence: () => { throw new Error('nothing is due for the other node'); },
      onMissed: (s) => { missed.push(s.id); },
    });
    await new Promise((r) => setTimeout(r, 5));
    await other.start();
    await other.stop();
    return missed;
  }

  it('killed after the broadcast\'s commit: recorded fired with the broadcast id; a claim without a broadcast: missed', async () => {
    const at = Date.now() + 300;
    await repo.insert(newSchedule(spec(at), { now: Date.now(), id: 'played' }));
    const gone = newSchedule(spec(Date.now() + 3_600_000), { now: Date.now(), id: 'gone' });
    await repo.insert(gone);
    // A node that died right after its claim of `gone`, before any broadcast.
    expect(await repo.claim({ scheduleId: 'gone', version: gone.updatedAt, times: [gone.at!], nodeId: 'n3', now: Date.now(), outcome: null })).toEqual([gone.at]);
    // The node dies once onOccurrence has returned: nothing it would write after that reaches the database.
    const settle = vi.spyOn(SqlScheduleRepo.prototype, 'settle').mockRejectedValue(new Error('node killed'));

    await service.startScheduler();
    const id = `s-played-${at}`;
    await waitFor(async () => (await broadcasts()).length === 1, 10_000, 20);
    await service.stopScheduler(); // its onOccurrence has settled
    expect(await broadcasts()).toEqual([{ id, schedule_id: 'played' }]);

    const missed = await otherNodeExpires();
    expect(missed).toEqual(['gone']);
    expect(await claims()).toEqual([
      { schedule_id: 'gone', node_id: 'n3', outcome: 'missed', broadcast_id: null },
      { schedule_id: 'played', node_id: 'n1', outcome: 'fired', broadcast_id: id },
    ]);
    expect(await otherNodeExpires()).toEqual([]); // once
    expect(settle).not.toHaveBeenCalled(); // the outcome needed no write after onOccurrence
  });

  it('a claim that expired before its broadcast was stored: no broadcast, recorded missed once, not overwritten', async () => {
    const at = Date.now() + 300;
    await repo.insert(newSchedule(spec(at), { now: Date.now(), id: 'slow' }));
    // The node stalls between its claim and the broadcast past the lease: another node records the claim missed.
    const claim = SqlScheduleRepo.prototype.claim;
    let expired: string[] = [];
    vi.spyOn(SqlScheduleRepo.prototype, 'claim').mockImplementation(async function (this: SqlScheduleRepo, c) {
      const won = await claim.call(this, c);
      if (c.outcome === null && won.length > 0) expired = await otherNodeExpires();
      return won;
    });
    const settle = vi.spyOn(SqlScheduleRepo.prototype, 'settle');

    await service.startScheduler();
    await waitFor(async () => expired.length > 0, 10_000, 20);
    await waitFor(async () => service.scheduler!.nextFor('slow') === undefined, 10_000, 20);
    await service.stopScheduler();
    expect(expired).toEqual(['slow']);
    expect(await broadcasts()).toEqual([]);
    expect(await claims()).toEqual([{ schedule_id: 'slow', node_id: 'n1', outcome: 'missed', broadcast_id: null }]);
    expect(settle).not.toHaveBeenCalled(); // no `failed` tried over the missed record
  });
});

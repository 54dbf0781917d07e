/**
 * Schedules on the Db port, on both dialects (the embedded state.db and a real PostgreSQL 15):
 * the repo, its occurrence claims, its write lock, and several nodes' schedulers sharing one
 * database: every occurrence handled exactly once, with one node stopped and another dying
 * between its claim and the broadcast (its claims recorded missed once, after the lease).
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { newSchedule, type Schedule, type ScheduleSpec } from '../../src/broadcast/schedule/model.js';
import { SqlScheduleRepo, type ScheduleRepo } from '../../src/broadcast/schedule/repo.js';
import { Scheduler } from '../../src/broadcast/schedule/scheduler.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { STATE_DIALECTS, openState, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';

const logger = createLogger('silent');
afterAll(stopStatePostgres);

function spec(p: Partial<ScheduleSpec> = {}): ScheduleSpec {
  const s: ScheduleSpec = {
    name: 'Bản tin', target: { areas: ['thon-1'] }, content: { mediaId: 'm1' }, timezone: 'Asia/Ho_Chi_Minh',
    volume: 70, priority: 'normal', enabled: true, durationSec: 60, ...p,
  };
  if (s.at === undefined) s.cron ??= '0 6 * * *';
  return s;
}

/** A repo whose node can die: after kill() every call rejects, as a process that is gone would answer nothing. */
function killable(repo: ScheduleRepo): { repo: ScheduleRepo; kill(): void } {
  let dead = false;
  const proxy = new Proxy(repo, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => dead ? Promise.reject(new Error('node is dead')) : (v as (...a: unknown[]) => unknown).apply(target, args);
    },
  });
  return { repo: proxy, kill() { dead = true; } };
}

describe.each(STATE_DIALECTS)('schedules on %s', (dialect) => {
  let h: StateHarness;
  let repo: SqlScheduleRepo;
  beforeEach(async () => { h = await openState(dialect); repo = new SqlScheduleRepo(h.db); }, 120_000);
  afterEach(async () => { await h.close(); });

  it('round trip: insert, list in creation order, update keeps the cursor, delete drops the claims', async () => {
    const a = newSchedule(spec({
      content: { streamUrl: 'https://radio.example/live' }, startDate: 1, endDate: 2e12, durationSec: 90.5,
      target: { areas: ['a'], devices: ['loa-01'] }, priority: 'priority', volume: 0,
    }), { now: 1_700_000_000_000, id: 'a', createdBy: 'u1' });
    const b = newSchedule(spec({ at: 1_800_000_000_000, enabled: false }), { now: 1_700_000_000_000, id: 'b' });
    await repo.insert(b);
    await repo.insert(a);
    expect(await repo.get('a')).toEqual(a);
    expect(await repo.get('b')).toEqual(b);
    expect((await repo.list()).map((s) => s.id)).toEqual(['b', 'a']); // same created_at: insertion order
    await expect(repo.insert(a)).rejects.toThrow();

    const claim = (t: number, version = a.updatedAt) => repo.claim({ scheduleId: 'a', version, times: [t], nodeId: 'n1', now: 5, outcome: 'missed' });
    expect(await claim(1000)).toEqual([1000]);
    expect(await claim(500)).toEqual([500]);
    expect((await repo.get('a'))!.lastFiredAt).toBe(1000);
    expect(await repo.update({ ...a, name: 'đổi tên', updatedAt: a.updatedAt + 1, lastFiredAt: 1 })).toBe(true);
    expect(await repo.get('a')).toEqual({ ...a, name: 'đổi tên', updatedAt: a.updatedAt + 1, lastFiredAt: 1000 });
    expect(await repo.update({ ...a, id: 'nope' })).toBe(false);
    expect(await repo.delete('a')).toBe(true);
    expect(await repo.get('a')).toBeUndefined();
    expect(await repo.occurrences('a', 10)).toEqual([]);
    expect(await repo.delete('a')).toBe(false);
  });

  it('claims: once per occurrence, only for the current version of an enabled schedule; outcomes, expiry, pruning', async () => {
    const s = newSchedule(spec(), { now: 1_000, id: 's' });
    await repo.insert(s);
    const base = { scheduleId: 's', version: s.updatedAt, nodeId: 'n1', now: 10_000 };
    expect(await repo.claim({ ...base, times: [100, 200, 300], outcome: 'missed' })).toEqual([100, 200, 300]);
    expect(await repo.claim({ ...base, nodeId: 'n2', times: [300, 400], outcome: 'missed' })).toEqual([400]);
    expect(await repo.claim({ ...base, version: s.updatedAt - 1, times: [500], outcome: null })).toEqual([]); // stale version
    expect(await repo.claim({ ...base, scheduleId: 'gone', times: [500], outcome: null })).toEqual([]);
    expect(await repo.claim({ ...base, times: [500], outcome: null })).toEqual([500]);
    expect(await repo.claim({ ...base, now: 20_000, times: [600], outcome: null })).toEqual([600]);
    expect(await repo.oldestPending()).toBe(10_000);
    // only the claiming node records the outcome, once
    expect(await repo.settle('s', 500, 'n2', 'fired', 'b-500')).toBe(false);
    expect(await repo.settle('s', 500, 'n1', 'fired', 'b-500')).toBe(true);
    expect(await repo.settle('s', 500, 'n1', 'failed')).toBe(false);
    // 600 is still being started; expired once its lease has passed, and only once
    expect(await repo.expireClaims(20_000)).toEqual([]);
    const expired = await repo.expireClaims(20_001);
    expect(expired).toEqual([{ scheduleId: 's', occurrenceAt: 600, nodeId: 'n1', claimedAt: 20_000, outcome: 'missed' }]);
    expect(await repo.expireClaims(99_999)).toEqual([]);
    expect(await repo.settle('s', 600, 'n1', 'fired', 'late')).toBe(false);
    expect(await repo.oldestPending()).toBeUndefined();
    expect((await repo.occurrences('s', 3)).map((o) => [o.occurrenceAt, o.nodeId, o.outcome, o.broadcastId])).toEqual([
      [600, 'n1', 'missed', undefined], [500, 'n1', 'fired', 'b-500'], [400, 'n2', 'missed', undefined],
    ]);
    // a disabled schedule claims nothing
    const off = { ...s, enabled: false, updatedAt: s.updatedAt + 1 };
    await repo.update(off);
    expect(await repo.claim({ ...base, version: off.updatedAt, times: [700], outcome: null })).toEqual([]);
    // pruning keeps the latest claim (the cursor)
    expect(await repo.prune(1_000_000)).toBe(5);
    expect((await repo.occurrences('s', 10)).map((o) => o.occurrenceAt)).toEqual([600]);
    expect((await repo.get('s'))!.lastFiredAt).toBe(600);
  });

  it('settleIn(): the outcome commits, or rolls back, with the caller\'s transaction; only for the claim\'s holder', async () => {
    const s = newSchedule(spec(), { now: 1_000, id: 's' });
    await repo.insert(s);
    expect(await repo.claim({ scheduleId: 's', version: s.updatedAt, nodeId: 'n1', now: 10_000, times: [100], outcome: null })).toEqual([100]);
    const outcome = async () => (await repo.occurrences('s', 1)).map((o) => [o.outcome, o.broadcastId]);
    // the caller's transaction fails after the write (its broadcast was not stored): no outcome
    await expect(h.db.write(async (trx) => {
      expect(await repo.settleIn(trx, 's', 100, 'n1', 'fired', 'b-100')).toBe(true);
      throw new Error('the broadcast could not be stored');
    })).rejects.toThrow(/could not be stored/);
    expect(await outcome()).toEqual([[undefined, undefined]]);
    expect(await h.db.write((trx) => repo.settleIn(trx, 's', 100, 'n2', 'fired', 'b-100'))).toBe(false);
    expect(await h.db.write((trx) => repo.settleIn(trx, 's', 100, 'n1', 'fired', 'b-100'))).toBe(true);
    expect(await outcome()).toEqual([['fired', 'b-100']]);
    expect(await repo.expireClaims(99_999)).toEqual([]);
    expect(await h.db.write((trx) => repo.settleIn(trx, 's', 100, 'n1', 'failed'))).toBe(false);
  });

  it('locked(): a check over all schedules and the write it allows are atomic, also across nodes', async () => {
    const nodes: Db<unknown>[] = dialect === 'postgres' ? [openPgDb(h.url!), openPgDb(h.url!), openPgDb(h.url!)] : [h.db, h.db, h.db];
    try {
      const repos = nodes.map((db) => new SqlScheduleRepo(db));
      // 30 writers (10 per node) each add a schedule only when fewer than 5 exist
      const results = await Promise.all(Array.from({ length: 30 }, (_, i) => repos[i % 3]!.locked(async (tx) => {
        if ((await tx.list()).length >= 5) return false;
        await tx.insert(newSchedule(spec(), { now: Date.now(), id: `w${i}` }));
        return true;
      })));
      expect(results.filter(Boolean)).toHaveLength(5);
      expect(await repo.list()).toHaveLength(5);
    } finally {
      if (dialect === 'postgres') await Promise.all(nodes.map((db) => db.close()));
    }
  });

  it('three nodes: every occurrence handled exactly once; a stopped node and a node dying mid-claim', async () => {
    const N = 150;
    const start = Date.now();
    const t0 = start + 3_000;
    // 150 one-offs due over 4 s from t0; plus occurrences passed while "every node was down": 10 inside the
    // grace window (played late, once) and 10 before it (recorded missed, once)
    const due: Schedule[] = [];
    for (let i = 0; i < N; i++) due.push(newSchedule(spec({ at: t0 + Math.floor(i * 4_000 / N) }), { now: start, id: `due-${i}` }));
    const late: Schedule[] = [];
    const old: Schedule[] = [];
    for (let i = 0; i < 10; i++) {
      late.push(newSchedule(spec({ at: start - 5_000 - i }), { now: start - 60_000, id: `late-${i}` }));
      old.push(newSchedule(spec({ at: start - 120_000 - i }), { now: start - 600_000, id: `old-${i}` }));
    }
    for (const s of [...due, ...late, ...old]) await repo.insert(s);

    const pools: Db<unknown>[] = dialect === 'postgres' ? [openPgDb(h.url!), openPgDb(h.url!), openPgDb(h.url!)] : [h.db, h.db, h.db];
    const played: Array<{ node: string; id: string; at: number }> = [];
    const missed: Array<{ node: string; id: string; at: number }> = [];
    const diedHolding: string[] = [];
    let release: () => void = () => undefined;
    const never = new Promise<void>((r) => { release = r; });
    const nodes = pools.map((db, i) => {
      const node = `n${i + 1}`;
      const k = killable(new SqlScheduleRepo(db));
      // Skewed clocks decide who is first: node 2 runs 30 ms ahead over [t0 + 0.5 s, t0 + 1 s), node 3 from
      // t0 + 1 s on (a node ahead arms its timer earlier and claims first); node 1 wins the rest.
      const skew = (now: number) => (node === 'n2' && now >= t0 + 500 && now < t0 + 1_000) || (node === 'n3' && now >= t0 + 1_000) ? 30 : 0;
      const scheduler: Scheduler = new Scheduler({
        repo: k.repo, clock: { now: () => Date.now() + skew(Date.now()) }, logger, nodeId: node, graceMs: 60_000,
        claimLeaseMs: 1_500, resyncMs: 250, retryMs: 200,
        onOccurrence: (s, at) => {
          // node 3 dies between its claim and the broadcast, at its first occurrence after t0 + 1.5 s
          if (node === 'n3' && Date.now() >= t0 + 1_500) {
            k.kill();
            diedHolding.push(s.id);
            return never.then(() => undefined);
          }
          played.push({ node, id: s.id, at });
          return `b-${s.id}`;
        },
        onMissed: (s, at) => { missed.push({ node, id: s.id, at }); },
      });
      return { node, scheduler, kill: k.kill };
    });
    try {
      await Promise.all(nodes.map((n) => n.scheduler.start()));
      // node 1 stops (a rolling restart) halfway through
      await new Promise((r) => setTimeout(r, t0 + 2_000 - Date.now()));
      await nodes[0]!.scheduler.stop();
      // until every claim has an outcome: the last occurrence, then the lease of node 3's claims
      const deadline = Date.now() + 30_000;
      for (;;) {
        const r = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM schedule_occurrences WHERE outcome IS NOT NULL`.execute(h.db.kysely);
        if (Number(r.rows[0]!.n) === N + 20 || Date.now() > deadline) break;
        await new Promise((res) => setTimeout(res, 200));
      }
    } finally {
      release();
      await Promise.all(nodes.map((n) => n.scheduler.stop()));
      if (dialect === 'postgres') await Promise.all(pools.map((db) => db.close()));
    }

    const rows = (await sql<{ schedule_id: string; occurrence_at: number; node_id: string; outcome: string | null; broadcast_id: string | null }>`
      SELECT schedule_id, occurrence_at, node_id, outcome, broadcast_id FROM schedule_occurrences ORDER BY schedule_id`.execute(h.db.kysely)).rows;
    const all = [...due, ...late, ...old];
    // one claim row per occurrence, each with an outcome
    expect(rows).toHaveLength(all.length);
    expect(new Set(rows.map((r) => r.schedule_id))).toEqual(new Set(all.map((s) => s.id)));
    for (const r of rows) expect(Number(r.occurrence_at)).toBe(all.find((s) => s.id === r.schedule_id)!.at);
    expect(rows.filter((r) => r.outcome === null)).toEqual([]);
    // played at most once in total, and each fired row is one play, by the node that claimed it
    const playedIds = played.map((p) => p.id);
    expect(new Set(playedIds).size).toBe(playedIds.length);
    const fired = rows.filter((r) => r.outcome === 'fired');
    expect(fired.map((r) => `${r.schedule_id} ${r.node_id} ${r.broadcast_id}`).sort())
      .toEqual(played.map((p) => `${p.id} ${p.node} b-${p.id}`).sort());
    // missed recorded once each: the catch-up of the old ones and node 3's claims after their lease
    const missedIds = missed.map((m) => m.id);
    expect(new Set(missedIds).size).toBe(missedIds.length);
    expect(rows.filter((r) => r.outcome === 'missed').map((r) => r.schedule_id).sort()).toEqual([...missedIds].sort());
    expect(missedIds.filter((id) => id.startsWith('old-')).sort()).toEqual(old.map((s) => s.id).sort());
    expect(diedHolding.length).toBeGreaterThanOrEqual(1);
    expect(missedIds.filter((id) => !id.startsWith('old-')).sort()).toEqual([...diedHolding].sort());
    expect(missed.filter((m) => !m.id.startsWith('old-')).every((m) => m.node !== 'n3')).toBe(true);
    // everything else played: the late ones (inside the grace window) and every due one nobody died holding
    expect(played.length + missed.length).toBe(all.length);
    for (const s of late) expect(playedIds).toContain(s.id);
    // the load was shared: every node played some, node 1 none after it stopped
    for (const n of ['n1', 'n2', 'n3']) expect(played.some((p) => p.node === n)).toBe(true);
    expect(played.filter((p) => p.node === 'n1').every((p) => p.at <= t0 + 2_100)).toBe(true);
  }, 90_000);
});

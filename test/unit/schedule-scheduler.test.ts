import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { newSchedule, type Schedule, type ScheduleSpec } from '../../src/broadcast/schedule/model.js';
import { SqlScheduleRepo, type ScheduleRepo } from '../../src/broadcast/schedule/repo.js';
import { ALL_MIGRATIONS } from '../../src/migrations.js';
import { StateDb, stateSqlitePort } from '../../src/storage/state/index.js';
import { MemoryScheduleRepo, advance } from '../helpers/schedule-repo.js';
import { ClaimLostError, Scheduler, type OccurrenceInfo } from '../../src/broadcast/schedule/scheduler.js';

const logger = createLogger('silent');
const clock = { now: () => Date.now() };
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const t = (s: string) => Date.parse(s);
const iso = (ms: number) => new Date(ms).toISOString();

function spec(p: Partial<ScheduleSpec> = {}): ScheduleSpec {
  const s: ScheduleSpec = {
    name: 'Bản tin sáng', target: { areas: ['thon-1'] }, content: { mediaId: 'm1' }, timezone: 'Asia/Ho_Chi_Minh',
    volume: 70, priority: 'normal', enabled: true, durationSec: 600, ...p,
  };
  if (s.at === undefined) s.cron ??= '0 6 * * 1-5';
  return s;
}

interface Recorder {
  fired: { id: string; planned: string; info: OccurrenceInfo }[];
  missed: { id: string; planned: string }[];
}
function make(repo: ScheduleRepo, extra: { graceMs?: number; onOccurrence?: () => void | Promise<void> } = {}) {
  const rec: Recorder = { fired: [], missed: [] };
  const scheduler = new Scheduler({
    repo, clock, logger, graceMs: extra.graceMs,
    onOccurrence: (s: Schedule, plannedAt: number, info: OccurrenceInfo) => {
      rec.fired.push({ id: s.id, planned: iso(plannedAt), info });
      return extra.onOccurrence?.();
    },
    onMissed: (s: Schedule, plannedAt: number) => { rec.missed.push({ id: s.id, planned: iso(plannedAt) }); },
  });
  return { scheduler, rec };
}
async function add(repo: ScheduleRepo, p: Partial<ScheduleSpec> = {}, id?: string): Promise<Schedule> {
  const s = newSchedule(spec(p), { now: Date.now(), id });
  await repo.insert(s);
  return s;
}

describe('Scheduler (fake timers)', () => {
  beforeEach(() => { vi.useFakeTimers({ now: t('2026-03-06T12:00:00Z') }); }); // Friday 19:00 +07
  afterEach(() => { vi.useRealTimers(); });

  it('fires "0 6 * * 1-5" in Asia/Ho_Chi_Minh at 23:00Z the day before, weekdays only, with one timer', async () => {
    const repo = new MemoryScheduleRepo();
    const s = await add(repo, {}, 'sang');
    for (let i = 0; i < 20; i++) await add(repo, { cron: `${i} 17 * * *` });
    const { scheduler, rec } = make(repo);
    await scheduler.start();
    expect(vi.getTimerCount()).toBe(1);
    expect(iso(scheduler.nextFor(s.id)!)).toBe('2026-03-08T23:00:00.000Z');
    await advance(scheduler, t('2026-03-10T23:30:00Z') - Date.now());
    expect(rec.fired.filter((f) => f.id === 'sang').map((f) => f.planned)).toEqual([
      '2026-03-08T23:00:00.000Z', '2026-03-09T23:00:00.000Z', '2026-03-10T23:00:00.000Z',
    ]);
    expect(rec.fired.filter((f) => f.id === 'sang').every((f) => f.info.lateMs === 0 && !f.info.catchUp)).toBe(true);
    expect(rec.fired).toHaveLength(3 + 20 * 4); // 17:00-17:19 +07 on Sat..Tue
    expect(rec.missed).toEqual([]);
    expect((await repo.get(s.id))!.lastFiredAt).toBe(t('2026-03-10T23:00:00Z'));
    expect(vi.getTimerCount()).toBe(1);
    await scheduler.stop();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('one-offs, start/end dates and disabled schedules', async () => {
    const repo = new MemoryScheduleRepo();
    await add(repo, { at: t('2026-03-07T07:15:00+07:00') }, 'once');
    await add(repo, { cron: '0 18 * * *', startDate: t('2026-03-08T00:00:00+07:00'), endDate: t('2026-03-09T23:59:59+07:00') }, 'window');
    await add(repo, { cron: '30 6 * * *', enabled: false }, 'off');
    const { scheduler, rec } = make(repo);
    await scheduler.start();
    await advance(scheduler, 10 * DAY);
    expect(rec.fired.map((f) => `${f.id} ${f.planned}`)).toEqual([
      'once 2026-03-07T00:15:00.000Z', 'window 2026-03-08T11:00:00.000Z', 'window 2026-03-09T11:00:00.000Z',
    ]);
    expect(scheduler.nextDue()).toBeUndefined();
    expect(vi.getTimerCount()).toBe(0); // nothing left to run
    await scheduler.stop();
  });

  it('re-arms on add, update, disable, enable and delete at runtime', async () => {
    const repo = new MemoryScheduleRepo();
    const s = await add(repo, { cron: '0 6 * * *' }, 'a');
    const { scheduler, rec } = make(repo);
    await scheduler.start();
    // Saturday 05:00 +07: move to 05:30, the earlier time must win
    await advance(scheduler, t('2026-03-07T05:00:00+07:00') - Date.now());
    const moved = { ...s, cron: '30 5 * * *', updatedAt: Date.now() };
    await repo.update(moved);
    await scheduler.upsert(moved);
    expect(iso(scheduler.nextFor('a')!)).toBe('2026-03-06T22:30:00.000Z');
    // a new schedule earlier than the armed timer
    await advance(scheduler, 10 * MIN);
    const b = await add(repo, { at: Date.now() + 5 * MIN }, 'b');
    await scheduler.upsert(b);
    await advance(scheduler, 2 * HOUR);
    expect(rec.fired.map((f) => `${f.id} ${f.planned}`)).toEqual(['b 2026-03-06T22:15:00.000Z', 'a 2026-03-06T22:30:00.000Z']);
    // disable → nothing; enable later → only runs after enabling, earlier ones are not "missed"
    const off = { ...moved, enabled: false, updatedAt: Date.now() };
    await repo.update(off);
    await scheduler.refresh('a');
    await advance(scheduler, 2 * DAY);
    expect(rec.fired).toHaveLength(2);
    const on = { ...off, enabled: true, updatedAt: Date.now() };
    await repo.update(on);
    await scheduler.refresh('a');
    await advance(scheduler, DAY);
    expect(rec.fired.map((f) => f.planned).slice(2)).toEqual(['2026-03-09T22:30:00.000Z']);
    expect(rec.missed).toEqual([]);
    await repo.delete('a');
    await scheduler.refresh('a');
    await advance(scheduler, 3 * DAY);
    expect(rec.fired).toHaveLength(3);
    expect(vi.getTimerCount()).toBe(0);
    await scheduler.stop();
  });

  it('handles delays beyond setTimeout\'s 24.8-day limit', async () => {
    const repo = new MemoryScheduleRepo();
    await add(repo, { at: t('2026-05-01T08:00:00+07:00') }, 'far'); // ~56 days ahead
    const { scheduler, rec } = make(repo);
    await scheduler.start();
    await advance(scheduler, t('2026-05-01T00:59:59.999Z') - Date.now());
    expect(rec.fired).toEqual([]);
    await advance(scheduler, 1);
    expect(rec.fired.map((f) => [f.planned, f.info.lateMs])).toEqual([['2026-05-01T01:00:00.000Z', 0]]);
    await scheduler.stop();
  });

  it('clock jumps: backwards never replays, forwards past grace records missed, late within grace fires once', async () => {
    const repo = new MemoryScheduleRepo();
    await add(repo, { cron: '0 6 * * *' }, 'daily');
    const { scheduler, rec } = make(repo, { graceMs: 60_000 });
    await scheduler.start();
    await advance(scheduler, t('2026-03-07T06:00:01+07:00') - Date.now());
    expect(rec.fired).toHaveLength(1);
    // wall clock steps back one hour: 06:00 must not play again
    vi.setSystemTime(Date.now() - HOUR);
    await vi.advanceTimersByTimeAsync(2 * HOUR);
    expect(rec.fired).toHaveLength(1);
    // wall clock steps forward 2 days: two occurrences missed, noticed within a minute
    vi.setSystemTime(t('2026-03-09T08:00:00+07:00'));
    await vi.advanceTimersByTimeAsync(MIN);
    expect(rec.missed.map((m) => m.planned)).toEqual(['2026-03-07T23:00:00.000Z', '2026-03-08T23:00:00.000Z']);
    expect(rec.fired).toHaveLength(1);
    // 10 March 06:00: the wall clock steps 30 s forward while the (monotonic)
    // timer waits, so the timer fires 30 s late by the wall clock: inside grace, played once
    await advance(scheduler, t('2026-03-10T05:59:00+07:00') - Date.now());
    await scheduler.refresh('daily'); // nothing changed; re-arms now: 60 s chunk
    vi.setSystemTime(Date.now() + 30_000);
    await vi.advanceTimersByTimeAsync(59_999); // the chunked timer armed at 05:59:00 waits 60 s of monotonic time
    expect(rec.fired).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(rec.fired.map((f) => [f.planned, f.info.lateMs])).toEqual([
      ['2026-03-06T23:00:00.000Z', 0], ['2026-03-09T23:00:00.000Z', 30_000],
    ]);
    await vi.advanceTimersByTimeAsync(HOUR);
    expect(rec.fired).toHaveLength(2);
    // start jitter = actual − planned of both fires
    expect(scheduler.jitter()).toEqual([0, 30_000]);
    expect(scheduler.jitterStats()).toMatchObject({ count: 2, p50: 0, p99: 30_000, max: 30_000 });
    await scheduler.stop();
  });

  it('keeps running when a callback throws or rejects', async () => {
    const repo = new MemoryScheduleRepo();
    await add(repo, { cron: '0 6 * * *' }, 'x');
    let calls = 0;
    const { scheduler } = make(repo, { onOccurrence: () => { calls++; if (calls === 1) throw new Error('boom'); return Promise.reject(new Error('async boom')); } });
    await scheduler.start();
    await advance(scheduler, 3 * DAY);
    expect(calls).toBe(3);
    await scheduler.stop();
  });

  it('recordFired: a node killed after its broadcast is stored leaves `fired`, one killed before leaves `missed`', async () => {
    const repo = new MemoryScheduleRepo();
    await add(repo, { at: Date.now() + MIN }, 'stored');
    await add(repo, { at: Date.now() + 2 * MIN }, 'never');
    // Node a is killed right after each onOccurrence: no settle() of its reaches the database.
    const settle = vi.fn(() => Promise.reject(new Error('node killed')));
    const dying = new Proxy(repo, { get: (r, p) => (p === 'settle' ? settle : Reflect.get(r, p, r) as unknown) }) as ScheduleRepo;
    const a = new Scheduler({
      repo: dying, clock, logger, nodeId: 'a',
      onOccurrence: async (s: Schedule, _at: number, info: OccurrenceInfo) => {
        if (s.id === 'never') throw new Error('died before its broadcast');
        await info.recordFired!({} as never, 'b-stored'); // in the broadcast's transaction
        return 'b-stored';
      },
      onMissed: () => undefined,
    });
    await a.start();
    await advance(a, 3 * MIN);
    await a.stop();
    expect(settle.mock.calls.map((c: unknown[]) => [c[0], c[3]])).toEqual([['never', 'failed']]);

    // After the lease another node looks for expired claims.
    await advance(a, 2 * MIN);
    expect(await expireOnAnotherNode(repo)).toEqual(['never']);
    const rec = async (id: string) => (await repo.occurrences(id, 1)).map((o) => [o.nodeId, o.outcome, o.broadcastId]);
    expect(await rec('stored')).toEqual([['a', 'fired', 'b-stored']]);
    expect(await rec('never')).toEqual([['a', 'missed', undefined]]);
  });

  /** Node `b` starts and stops once, as a node does when it looks for expired claims: the schedules it records missed. */
  async function expireOnAnotherNode(repo: MemoryScheduleRepo): Promise<string[]> {
    const missed: string[] = [];
    const b = new Scheduler({ repo, clock, logger, nodeId: 'b', onOccurrence: () => undefined, onMissed: (s: Schedule) => { missed.push(s.id); } });
    await b.start();
    await b.stop();
    return missed;
  }

  it('recordFired rejects with ClaimLostError once the claim expired: nothing else is written over `missed`', async () => {
    const repo = new MemoryScheduleRepo();
    await add(repo, { at: Date.now() + MIN }, 'slow');
    let open: () => void = () => undefined;
    const gate = new Promise<void>((r) => { open = r; });
    let lost: unknown;
    const settle = vi.spyOn(repo, 'settle');
    const a = new Scheduler({
      repo, clock, logger, nodeId: 'a',
      onOccurrence: async (_s: Schedule, _at: number, info: OccurrenceInfo) => {
        await gate; // stalled between the claim and the broadcast
        try {
          await info.recordFired!({} as never, 'b-slow');
        } catch (err) {
          lost = err;
          throw err; // the caller's transaction rolls back: no broadcast
        }
        return 'b-slow';
      },
      onMissed: () => undefined,
    });
    await a.start();
    await advance(a, 3 * MIN);
    expect(await expireOnAnotherNode(repo)).toEqual(['slow']);
    open();
    await a.stop();
    expect(lost).toBeInstanceOf(ClaimLostError);
    expect(settle).not.toHaveBeenCalled();
    expect((await repo.occurrences('slow', 1)).map((o) => [o.nodeId, o.outcome, o.broadcastId])).toEqual([['a', 'missed', undefined]]);
  });
});

describe('Scheduler restart recovery (SQLite file)', () => {
  let dir: string;
  let state: StateDb | undefined;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'keng-sched-'));
    vi.useFakeTimers({ now: t('2026-03-06T12:00:00Z') });
  });
  afterEach(async () => {
    vi.useRealTimers();
    await state?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  // The state store as the server opens it (every migration), the repo on its Db port.
  const open = async () => {
    state = new StateDb({ dataDir: dir, logger, migrations: ALL_MIGRATIONS });
    await state.start();
    const db = { close: async () => { await state!.stop(); state = undefined; } };
    return { db, repo: new SqlScheduleRepo(stateSqlitePort(state)) };
  };

  it('persists last_fired_at; records occurrences missed while down; fires one inside grace once', async () => {
    let { db, repo } = await open();
    const s = await add(repo, { cron: '0 6 * * 1-5', volume: 55, priority: 'priority' }, 'sang');
    await add(repo, { cron: '30 6 * * *' }, 'nhac');
    expect(await repo.get('sang')).toEqual(s);
    let run = make(repo);
    await run.scheduler.start();
    await advance(run.scheduler, t('2026-03-09T06:10:00+07:00') - Date.now()); // Monday fired
    expect(run.rec.fired.map((f) => `${f.id} ${f.planned}`)).toEqual([
      'nhac 2026-03-06T23:30:00.000Z', 'nhac 2026-03-07T23:30:00.000Z', 'sang 2026-03-08T23:00:00.000Z',
    ]);
    await run.scheduler.stop();
    await db.close();

    // down from Monday 06:10 until Wednesday 06:00:40 (+07): Tuesday missed, Wednesday inside the 60 s grace
    vi.setSystemTime(t('2026-03-11T06:00:40+07:00'));
    ({ db, repo } = await open());
    expect((await repo.get('sang'))!.lastFiredAt).toBe(t('2026-03-08T23:00:00Z'));
    run = make(repo, { graceMs: 60_000 });
    await run.scheduler.start();
    expect(run.rec.missed.map((m) => `${m.id} ${m.planned}`).sort()).toEqual([
      'nhac 2026-03-08T23:30:00.000Z', 'nhac 2026-03-09T23:30:00.000Z',
      'sang 2026-03-09T23:00:00.000Z',
    ]);
    expect(run.rec.fired.map((f) => [f.id, f.planned, f.info.lateMs, f.info.catchUp])).toEqual([
      ['sang', '2026-03-10T23:00:00.000Z', 40_000, true],
    ]);
    expect(run.scheduler.jitter()).toEqual([]); // catch-up fires are not start jitter
    expect((await repo.get('sang'))!.lastFiredAt).toBe(t('2026-03-10T23:00:00Z'));
    await run.scheduler.stop();
    await db.close();

    // an immediate second restart neither replays nor re-reports anything
    vi.setSystemTime(t('2026-03-11T06:00:50+07:00'));
    ({ db, repo } = await open());
    run = make(repo, { graceMs: 60_000 });
    await run.scheduler.start();
    expect(run.rec.missed).toEqual([]);
    expect(run.rec.fired).toEqual([]);
    // and it goes on: 06:30 today, then Thursday 06:00
    await advance(run.scheduler, t('2026-03-12T06:00:00+07:00') - Date.now());
    expect(run.rec.fired.map((f) => `${f.id} ${f.planned}`)).toEqual(['nhac 2026-03-10T23:30:00.000Z', 'sang 2026-03-11T23:00:00.000Z']);
    await run.scheduler.stop();
    await db.close();
  });

  it('outside the grace window everything is missed, nothing is played late', async () => {
    let { db, repo } = await open();
    await add(repo, { cron: '0 6 * * *' }, 'daily');
    await add(repo, { at: t('2026-03-07T09:00:00+07:00') }, 'once');
    await db.close();
    vi.setSystemTime(t('2026-03-08T06:05:00+07:00'));
    ({ db, repo } = await open());
    const run = make(repo, { graceMs: 60_000 });
    await run.scheduler.start();
    expect(run.rec.fired).toEqual([]);
    expect(run.rec.missed.map((m) => `${m.id} ${m.planned}`)).toEqual([
      'daily 2026-03-06T23:00:00.000Z', 'daily 2026-03-07T23:00:00.000Z', 'once 2026-03-07T02:00:00.000Z',
    ]);
    expect((await repo.get('once'))!.lastFiredAt).toBe(t('2026-03-07T02:00:00Z'));
    await run.scheduler.stop();
    await db.close();
  });

  it('repo round trip: update keeps last_fired_at, cursor only moves forward, delete', async () => {
    const { db, repo } = await open();
    const s = await add(repo, { content: { streamUrl: 'https://radio.example/live' }, startDate: 1, endDate: 2e12, target: { areas: ['a'], devices: ['loa-01'] } }, 'r');
    // the cursor is the latest claimed occurrence
    const claim = (t: number) => repo.claim({ scheduleId: 'r', version: s.updatedAt, times: [t], nodeId: 'n1', now: Date.now(), outcome: 'missed' });
    await claim(1000);
    await claim(500);
    expect((await repo.get('r'))!.lastFiredAt).toBe(1000);
    expect(await repo.update({ ...s, name: 'renamed', lastFiredAt: 1 })).toBe(true);
    expect(await repo.get('r')).toEqual({ ...s, name: 'renamed', lastFiredAt: 1000 });
    expect(await repo.update({ ...s, id: 'nope' })).toBe(false);
    await expect(repo.insert(s)).rejects.toThrow();
    expect((await repo.list()).map((x) => x.id)).toEqual(['r']);
    expect(await repo.delete('r')).toBe(true);
    expect(await repo.get('r')).toBeUndefined();
    await db.close();
  });
});

describe('Scheduler start jitter (real timers)', () => {
  it('measures actual − planned fire time', async () => {
    const repo = new MemoryScheduleRepo();
    const base = Math.ceil((Date.now() + 200) / 1000) * 1000;
    for (let i = 0; i < 5; i++) await repo.insert(newSchedule(spec({ at: base + i * 100 }), { now: Date.now(), id: `j${i}` }));
    const { scheduler, rec } = make(repo);
    await scheduler.start();
    await new Promise((r) => setTimeout(r, base + 600 - Date.now()));
    expect(rec.fired).toHaveLength(5);
    const j = scheduler.jitter();
    expect(j).toHaveLength(5);
    expect(j).toEqual(rec.fired.map((f) => f.info.lateMs));
    for (const v of j) {
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThan(100);
    }
    const st = scheduler.jitterStats();
    expect(st.count).toBe(5);
    expect(st.p99).toBe(Math.max(...j));
    await scheduler.stop();
  });
});

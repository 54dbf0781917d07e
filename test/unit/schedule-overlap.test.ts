import { describe, expect, it } from 'vitest';
import { formatTime } from '../../src/core/time.js';
import { newSchedule, type Schedule, type ScheduleSpec, type ScheduleTarget } from '../../src/broadcast/schedule/model.js';
import { runsBetween } from '../../src/broadcast/schedule/occurrences.js';
import { findClashes, toClashError } from '../../src/broadcast/schedule/overlap.js';

const NOW = Date.parse('2026-03-02T03:00:00Z'); // Monday 10:00 +07
const DAY = 86_400_000;
const villages: Record<string, string[]> = { 'thon-1': ['loa-01', 'loa-02'], 'thon-2': ['loa-03'], 'thon-3': ['loa-02', 'loa-04'] };
const resolve = (t: ScheduleTarget): Set<string> =>
  new Set([...(t.devices ?? []), ...(t.areas ?? []).flatMap((a) => villages[a] ?? [])]);

let n = 0;
function sched(p: Partial<ScheduleSpec> & { id?: string }): Schedule {
  const spec: ScheduleSpec = {
    name: `s${++n}`, target: { areas: ['thon-1'] }, content: { mediaId: 'm' }, timezone: 'Asia/Ho_Chi_Minh',
    volume: 70, priority: 'normal', enabled: true, durationSec: 600, ...p,
  };
  if (spec.at !== undefined) delete spec.cron;
  else spec.cron ??= '0 6 * * *';
  return newSchedule(spec, { now: NOW - DAY, id: p.id ?? spec.name });
}
const opts = { now: NOW, resolve };
const at = (s: string) => Date.parse(s);

describe('findClashes', () => {
  it('refuses two normal schedules at the same time on the same speakers, naming the clash', () => {
    const existing = sched({ name: 'Bản tin sáng' });
    const clashes = findClashes(sched({ name: 'Nhạc' }), [existing], opts);
    expect(clashes).toEqual([{
      scheduleId: existing.id, name: 'Bản tin sáng', priority: 'normal', deviceIds: ['loa-01', 'loa-02'], deviceCount: 2,
      at: at('2026-03-03T06:00:00+07:00'),
    }]);
    const err = toClashError(clashes, (ms) => formatTime(ms, 'Asia/Ho_Chi_Minh'));
    expect(err.statusCode).toBe(409);
    expect(err.code).toBe('KENG_ERR_CONFLICT');
    expect(err.message).toContain('Bản tin sáng');
    expect(err.message).toContain('loa-01');
    expect(err.message).toContain('2026-03-03T06:00:00.000+07:00');
  });

  it('reports the first overlap start and respects half-open intervals', () => {
    const existing = sched({ cron: '0 6 * * *', durationSec: 600 });
    expect(findClashes(sched({ cron: '5 6 * * *' }), [existing], opts)[0]!.at).toBe(at('2026-03-03T06:05:00+07:00'));
    expect(findClashes(sched({ cron: '10 6 * * *' }), [existing], opts)).toEqual([]); // 06:00-06:10 then 06:10
    expect(findClashes(sched({ cron: '55 5 * * *', durationSec: 300 }), [existing], opts)).toEqual([]);
    expect(findClashes(sched({ cron: '55 5 * * *', durationSec: 301 }), [existing], opts)[0]!.at).toBe(at('2026-03-03T06:00:00+07:00'));
  });

  it('ignores schedules on other speakers, disabled ones, weekday/weekend splits and itself (PATCH)', () => {
    const existing = sched({ id: 'morning' });
    expect(findClashes(sched({ target: { areas: ['thon-2'] } }), [existing], opts)).toEqual([]);
    expect(findClashes(sched({}), [{ ...existing, enabled: false }], opts)).toEqual([]);
    expect(findClashes(sched({ enabled: false }), [existing], opts)).toEqual([]);
    expect(findClashes(sched({ id: 'morning', cron: '5 6 * * *' }), [existing], opts)).toEqual([]);
    const weekdays = sched({ cron: '0 6 * * 1-5' });
    expect(findClashes(sched({ cron: '0 6 * * 0,6' }), [weekdays], opts)).toEqual([]);
    // overlapping through a shared speaker of another area
    const c = findClashes(sched({ target: { areas: ['thon-3'] } }), [existing], opts);
    expect(c[0]!.deviceIds).toEqual(['loa-02']);
  });

  it('allows the new schedule when it has higher priority, refuses it otherwise', () => {
    const normal = sched({ priority: 'normal' });
    const prio = sched({ priority: 'priority' });
    expect(findClashes(sched({ priority: 'priority' }), [normal], opts)).toEqual([]);
    expect(findClashes(sched({ priority: 'normal' }), [prio], opts)).toHaveLength(1);
    expect(findClashes(sched({ priority: 'priority' }), [prio], opts)).toHaveLength(1);
    expect(findClashes(sched({ priority: 'priority' }), [normal, prio], opts).map((c) => c.scheduleId)).toEqual([prio.id]);
  });

  it('checks one-offs, also beyond the 30-day horizon, and respects start/end dates', () => {
    const daily = sched({ cron: '0 6 * * *' });
    const oneOff = at('2026-03-05T06:05:00+07:00');
    expect(findClashes(sched({ at: oneOff }), [daily], opts)[0]!.at).toBe(oneOff);
    const far = at('2026-09-01T06:03:00+07:00');
    expect(findClashes(sched({ at: far }), [daily], opts)[0]!.at).toBe(far);
    expect(findClashes(sched({ at: at('2026-03-05T07:00:00+07:00') }), [daily], opts)).toEqual([]);
    const ended = sched({ endDate: at('2026-03-04T23:59:59+07:00') });
    expect(findClashes(sched({ at: oneOff }), [ended], opts)).toEqual([]);
    // an existing one-off against a new daily schedule: clash on that day only
    const existingOneOff = sched({ at: at('2026-03-20T06:08:00+07:00') });
    expect(findClashes(sched({}), [existingOneOff], opts)[0]!.at).toBe(at('2026-03-20T06:08:00+07:00'));
  });

  it('a dense schedule against a sparse one', () => {
    const every5 = sched({ cron: '*/5 * * * *', durationSec: 60 });
    expect(findClashes(sched({ cron: '2 6 * * *', durationSec: 60 }), [every5], opts)).toEqual([]);
    expect(findClashes(sched({ cron: '3 6 * * *', durationSec: 180 }), [every5], opts)[0]!.at)
      .toBe(at('2026-03-03T06:05:00+07:00'));
  });

  it('agrees with a naive pairwise check over the horizon', () => {
    const crons = ['0 6 1 * *', '0 6 * * 0', '30 17 * * 1-5', '*/20 6-8 * * *', '0 7 */3 * *', '45 6 * * 6', '0 */6 * * *'];
    const durs = [600, 1800, 3600];
    const horizon = 120 * DAY;
    const runsOf = new Map<string, number[]>();
    for (const c of crons) runsOf.set(c, runsBetween(sched({ cron: c }), NOW - DAY, NOW + horizon + 40 * DAY, 100_000));
    let compared = 0;
    for (const ca of crons) for (const cb of crons) for (const da of durs) {
      const db = durs[(da / 600) % 3]!;
      const A = sched({ cron: ca, durationSec: da });
      const B = sched({ cron: cb, durationSec: db });
      const got = findClashes(A, [B], { ...opts, horizonMs: horizon })[0]?.at;
      let want: number | undefined;
      const fromNow = runsOf.get(ca)!.filter((t) => t >= NOW);
      const as = fromNow.filter((t) => t < fromNow[0]! + horizon); // horizon starts at A's first run
      const bs = runsOf.get(cb)!.filter((t) => t > NOW - db * 1000);
      for (const a of as) for (const b of bs) {
        if (a < b + db * 1000 && b < a + da * 1000) {
          const s = Math.max(a, b);
          if (want === undefined || s < want) want = s;
        }
      }
      expect(got, `${ca} (${da}s) vs ${cb} (${db}s)`).toBe(want);
      compared++;
    }
    expect(compared).toBe(crons.length * crons.length * durs.length);
  });

  it('stays fast with hundreds of schedules sharing speakers', () => {
    const existing: Schedule[] = [];
    for (let i = 0; i < 400; i++) {
      const area = ['thon-1', 'thon-2', 'thon-3'][i % 3]!;
      existing.push(sched({ cron: `${i % 60} ${5 + (i % 12)} * * ${i % 7}`, durationSec: 30, target: { areas: [area] } }));
    }
    const candidate = sched({ cron: '30 6 * * *', durationSec: 1200, target: { areas: ['thon-1', 'thon-2', 'thon-3'] } });
    const t0 = performance.now();
    const first = findClashes(candidate, existing, opts); // builds the occurrence lists
    const t1 = performance.now();
    const again = findClashes({ ...candidate, cron: '31 6 * * *' }, existing, opts);
    const t2 = performance.now();
    // 06:30-06:50 daily meets the weekly runs at 06:30..06:49 on days 0-6
    const expected = existing.filter((s) => /^(3\d|4\d) 6 /.test(s.cron!)).length;
    expect(first.length).toBe(Math.min(10, expected));
    expect(again.length).toBeGreaterThan(0);
    expect(t1 - t0).toBeLessThan(2000);
    expect(t2 - t1).toBeLessThan(100);
  });
});

import { describe, expect, it } from 'vitest';
import type { ScheduleTiming } from '../../src/broadcast/schedule/model.js';
import { lastRunAtOrBefore, nextRuns, runsBetween } from '../../src/broadcast/schedule/occurrences.js';
import { fixedOffsetMinutes } from '../../src/core/time.js';

const iso = (ts: number[]) => ts.map((t) => new Date(t).toISOString());
const hcm = (cron: string, extra: Partial<ScheduleTiming> = {}): ScheduleTiming => ({ cron, timezone: 'Asia/Ho_Chi_Minh', enabled: true, ...extra });

describe('occurrences', () => {
  it('"0 6 * * 1-5" in Asia/Ho_Chi_Minh fires at 23:00Z the day before, weekdays only', () => {
    // Friday 2026-03-06 12:00Z → next: Mon 06:00 +07 = Sun 23:00Z
    const runs = nextRuns(hcm('0 6 * * 1-5'), Date.parse('2026-03-06T12:00:00Z'), 6);
    expect(iso(runs)).toEqual([
      '2026-03-08T23:00:00.000Z', '2026-03-09T23:00:00.000Z', '2026-03-10T23:00:00.000Z',
      '2026-03-11T23:00:00.000Z', '2026-03-12T23:00:00.000Z', '2026-03-15T23:00:00.000Z',
    ]);
    expect(fixedOffsetMinutes('Asia/Ho_Chi_Minh')).toBe(420);
  });

  it('nextRuns is strictly after `from`; runsBetween is half-open [from, to)', () => {
    const s = hcm('0 6 * * *');
    const six = Date.parse('2026-03-09T23:00:00Z');
    expect(nextRuns(s, six, 1)).toEqual([six + 86_400_000]);
    expect(nextRuns(s, six - 1, 1)).toEqual([six]);
    expect(runsBetween(s, six, six + 2 * 86_400_000)).toEqual([six, six + 86_400_000]);
    const capped = runsBetween(hcm('* * * * *'), six, six + 3_600_000, 10);
    expect(capped).toHaveLength(10);
    expect(capped.truncated).toBe(true);
    expect(runsBetween(hcm('* * * * *'), six, six + 3_600_000)).toHaveLength(60);
    expect(lastRunAtOrBefore(s, 0, six + 5_000)).toBe(six);
    expect(lastRunAtOrBefore(s, 0, six)).toBe(six);
    expect(lastRunAtOrBefore(s, six, six + 5_000)).toBeUndefined();
  });

  it('Europe/Berlin follows DST; Asia/Ho_Chi_Minh does not', () => {
    const berlin: ScheduleTiming = { cron: '0 6 * * *', timezone: 'Europe/Berlin', enabled: true };
    // DST starts 2026-03-29: 06:00 is 05:00Z before, 04:00Z after
    expect(iso(nextRuns(berlin, Date.parse('2026-03-27T12:00:00Z'), 3))).toEqual([
      '2026-03-28T05:00:00.000Z', '2026-03-29T04:00:00.000Z', '2026-03-30T04:00:00.000Z',
    ]);
    // 02:30 does not exist on 2026-03-29 in Berlin: croner runs it once, at the first valid time
    const gap = nextRuns({ ...berlin, cron: '30 2 * * *' }, Date.parse('2026-03-28T12:00:00Z'), 2);
    expect(iso(gap)).toEqual(['2026-03-29T01:00:00.000Z', '2026-03-30T00:30:00.000Z']);
    // 02:30 happens twice on 2026-10-25: run once
    const twice = nextRuns({ ...berlin, cron: '30 2 * * *' }, Date.parse('2026-10-24T12:00:00Z'), 2);
    expect(iso(twice)).toEqual(['2026-10-25T00:30:00.000Z', '2026-10-26T01:30:00.000Z']);
    expect(fixedOffsetMinutes('Europe/Berlin')).toBeNull();
    const vn = nextRuns(hcm('0 6 * * *'), Date.parse('2026-03-27T12:00:00Z'), 3);
    expect(iso(vn)).toEqual(['2026-03-27T23:00:00.000Z', '2026-03-28T23:00:00.000Z', '2026-03-29T23:00:00.000Z']);
  });

  it('honours startDate and endDate (inclusive) and enabled', () => {
    const start = Date.parse('2026-03-10T00:00:00+07:00');
    const end = Date.parse('2026-03-12T06:00:00+07:00');
    const s = hcm('0 6 * * *', { startDate: start, endDate: end });
    expect(iso(nextRuns(s, Date.parse('2026-03-01T00:00:00Z'), 10))).toEqual([
      '2026-03-09T23:00:00.000Z', '2026-03-10T23:00:00.000Z', '2026-03-11T23:00:00.000Z',
    ]);
    expect(nextRuns(s, end, 5)).toEqual([]);
    expect(nextRuns({ ...s, enabled: false }, 0, 5)).toEqual([]);
    expect(lastRunAtOrBefore(s, 0, Date.parse('2026-04-01T00:00:00Z'))).toBe(end);
  });

  it('one-offs have the single `at`', () => {
    const at = Date.parse('2026-03-10T07:15:00+07:00');
    const s: ScheduleTiming = { at, timezone: 'Asia/Ho_Chi_Minh', enabled: true };
    expect(nextRuns(s, at - 1, 5)).toEqual([at]);
    expect(nextRuns(s, at, 5)).toEqual([]);
    expect(runsBetween(s, 0, at + 1)).toEqual([at]);
    expect(runsBetween(s, 0, at)).toEqual([]);
    expect(nextRuns({ ...s, enabled: false }, 0, 1)).toEqual([]);
  });
});

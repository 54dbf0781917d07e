import { describe, expect, it } from 'vitest';
import {
  applySpec, newSchedule, toValidationError, validateSchedule, validateSchedulePatch, type FieldError,
} from '../../src/broadcast/schedule/model.js';

const NOW = Date.parse('2026-03-02T03:00:00Z'); // Monday 10:00 in Hanoi
const opts = { now: NOW, defaultTz: 'Asia/Ho_Chi_Minh' };
const base = { name: 'Bản tin sáng', target: { areas: ['xa-an-binh'] }, content: { mediaId: 'm1' }, cron: '0 6 * * 1-5' };

function errorsOf(input: unknown): FieldError[] {
  const r = validateSchedule(input, opts);
  if (r.ok) throw new Error('expected errors');
  return r.errors;
}
const fields = (input: unknown) => errorsOf(input).map((e) => e.field);

describe('validateSchedule', () => {
  it('normalises a minimal recurring schedule with defaults', () => {
    const r = validateSchedule(base, opts);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value).toEqual({
      name: 'Bản tin sáng', target: { areas: ['xa-an-binh'] }, content: { mediaId: 'm1' }, cron: '0 6 * * 1-5',
      timezone: 'Asia/Ho_Chi_Minh', volume: 70, priority: 'normal', enabled: true,
    });
  });

  it('accepts one-offs as ISO with offset or epoch ms, and date-only bounds in the zone', () => {
    const a = validateSchedule({ ...base, cron: undefined, at: '2026-03-03T06:30:00+07:00' }, opts);
    expect(a.ok && a.value.at).toBe(Date.parse('2026-03-02T23:30:00Z'));
    const b = validateSchedule({ ...base, cron: undefined, at: NOW + 60_000 }, opts);
    expect(b.ok && b.value.at).toBe(NOW + 60_000);
    const c = validateSchedule({ ...base, startDate: '2026-03-10', endDate: '2026-03-20' }, opts);
    expect(c.ok).toBe(true);
    if (!c.ok) return;
    expect(c.value.startDate).toBe(Date.parse('2026-03-10T00:00:00+07:00'));
    expect(c.value.endDate).toBe(Date.parse('2026-03-21T00:00:00+07:00') - 1);
  });

  it('refuses invalid cron, seconds fields, nicknames and never-running patterns', () => {
    expect(fields({ ...base, cron: '61 6 * * *' })).toEqual(['cron']);
    const six = errorsOf({ ...base, cron: '0 0 6 * * 1' });
    expect(six[0]!.message).toMatch(/exactly 5 fields.*seconds/);
    expect(fields({ ...base, cron: '@daily' })).toEqual(['cron']);
    expect(fields({ ...base, cron: 'every morning' })).toEqual(['cron']);
    expect(errorsOf({ ...base, cron: '0 6 30 2 *' })[0]!.message).toMatch(/never runs/);
  });

  it('refuses unknown zones, past one-offs, reversed dates, volume out of range', () => {
    expect(fields({ ...base, timezone: 'Asia/Hanoi_City' })).toEqual(['timezone']);
    expect(fields({ ...base, timezone: '+07:00' })).toEqual(['timezone']);
    expect(fields({ ...base, cron: undefined, at: NOW - 1 })).toEqual(['at']);
    expect(errorsOf({ ...base, startDate: '2026-04-01', endDate: '2026-03-01' }).map((e) => e.message)).toContain('is before startDate');
    expect(fields({ ...base, volume: 101 })).toEqual(['volume']);
    expect(fields({ ...base, volume: -1 })).toEqual(['volume']);
    expect(fields({ ...base, volume: 50.5 })).toEqual(['volume']);
    expect(fields({ ...base, at: '2026-03-05T06:00:00+07:00' })).toEqual(['at']); // both cron and at
    expect(fields({ name: 'x', target: { devices: ['loa-01'] }, content: { mediaId: 'm' } })).toEqual(['cron']); // neither
    expect(fields({ ...base, cron: undefined, at: '2026-03-05 06:00' })).toEqual(['at']); // no offset
  });

  it('checks content shape, stream URLs, targets and priority', () => {
    expect(fields({ ...base, content: { mediaId: 'm', ttsText: 'x' } })).toEqual(['content']);
    expect(fields({ ...base, content: {} })).toEqual(['content']);
    expect(fields({ ...base, content: { streamUrl: 'rtsp://radio.vn/live' }, durationSec: 600 })).toEqual(['content.streamUrl']);
    expect(fields({ ...base, content: { streamUrl: 'https://radio.vn/live' } })).toEqual(['durationSec']);
    expect(validateSchedule({ ...base, content: { streamUrl: 'https://radio.vn/live' }, durationSec: 600 }, opts).ok).toBe(true);
    expect(fields({ ...base, target: {} })).toEqual(['target']);
    expect(fields({ ...base, target: { areas: [], devices: [] } })).toEqual(['target']);
    expect(fields({ ...base, target: { devices: ['Bad Id'] } })).toEqual(['target.devices[0]']);
    expect(errorsOf({ ...base, priority: 'emergency' })[0]!.message).toMatch(/alerts/);
    expect(fields({ ...base, surprise: 1 })).toEqual(['surprise']);
  });

  it('refuses a duration longer than the gap between runs (self-overlap)', () => {
    expect(fields({ ...base, cron: '*/5 * * * *', durationSec: 400 })).toEqual(['durationSec']);
    expect(validateSchedule({ ...base, cron: '*/5 * * * *', durationSec: 300 }, opts).ok).toBe(true);
  });

  it('reports every error at once and builds a 400 KENG_ERR_VALIDATION', () => {
    const errs = errorsOf({ name: '', target: {}, content: { x: 1 }, cron: 'nope', volume: 999 });
    expect(errs.map((e) => e.field).sort()).toEqual(['content', 'cron', 'name', 'target', 'volume']);
    const e = toValidationError(errs);
    expect(e.code).toBe('KENG_ERR_VALIDATION');
    expect(e.statusCode).toBe(400);
    expect(e.details).toEqual(errs);
  });

  it('patches: null clears a field, old one-offs can be renamed, timing edits are re-checked', () => {
    const r = validateSchedule({ ...base, cron: undefined, at: NOW + 3_600_000 }, opts);
    if (!r.ok) throw new Error('setup');
    const s = newSchedule(r.value, { now: NOW, createdBy: 'op1' });
    const later = { now: NOW + 7_200_000, defaultTz: 'Asia/Ho_Chi_Minh' }; // `at` now in the past
    const renamed = validateSchedulePatch(s, { name: 'Renamed' }, later);
    expect(renamed.ok).toBe(true);
    const moved = validateSchedulePatch(s, { at: NOW }, later);
    expect(moved.ok).toBe(false);
    const toCron = validateSchedulePatch(s, { at: null, cron: '30 17 * * *' }, later);
    expect(toCron.ok).toBe(true);
    if (!toCron.ok) return;
    const updated = applySpec({ ...s, lastFiredAt: 5 }, toCron.value, later.now);
    expect(updated).toMatchObject({ id: s.id, createdAt: NOW, updatedAt: later.now, createdBy: 'op1', lastFiredAt: 5, cron: '30 17 * * *' });
    expect(updated.at).toBeUndefined();
  });
});

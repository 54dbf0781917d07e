import { describe, expect, it } from 'vitest';
import { formatTime, localDate, parseDuration, parseIsoWithOffset, parseTime, timeFormatter, tzOffsetMinutes } from '../../src/core/time.js';
import { DEFAULT_RANGE_MS, resolveRange, windowCount } from '../../src/api/range.js';

const VN = 'Asia/Ho_Chi_Minh';
const code = (fn: () => unknown): string | undefined => {
  try { fn(); return undefined; } catch (e) { return (e as { code?: string }).code; }
};

describe('parseTime', () => {
  it('accepts ISO 8601 with an offset', () => {
    expect(parseTime('2025-11-30T07:00:00+07:00', 'from')).toBe(Date.parse('2025-11-30T00:00:00Z'));
    expect(parseTime('2025-11-30T00:00:00Z', 'from')).toBe(Date.parse('2025-11-30T00:00:00Z'));
    expect(parseTime('2025-11-30T00:00:00.123z', 'from')).toBe(Date.parse('2025-11-30T00:00:00.123Z'));
    expect(parseTime('2025-11-29T19:30:00-04:30', 'from')).toBe(Date.parse('2025-11-30T00:00:00Z'));
    expect(parseTime('2025-11-30T07:00+0700', 'from')).toBe(Date.parse('2025-11-30T00:00:00Z'));
    expect(parseTime('2025-11-30T07:00:00.5+07', 'from')).toBe(Date.parse('2025-11-30T00:00:00.500Z'));
  });

  it('accepts epoch milliseconds as string or number', () => {
    expect(parseTime('1764460800000', 'to')).toBe(1764460800000);
    expect(parseTime(1764460800000, 'to')).toBe(1764460800000);
    expect(parseTime('0', 'to')).toBe(0);
  });

  it('accepts a space where an unencoded "+" of the offset arrived', () => {
    expect(parseTime('2025-11-30T07:00:00 07:00', 'from')).toBe(Date.parse('2025-11-30T00:00:00Z'));
  });

  it.each([
    ['2025-11-30T07:00:00', 'no offset'],
    ['2025-11-30', 'date only'],
    ['yesterday', 'words'],
    ['', 'empty'],
    ['2025-02-30T00:00:00Z', 'no such day'],
    ['2025-13-01T00:00:00Z', 'no such month'],
    ['2025-11-30T24:00:00Z', 'hour 24'],
    ['2025-11-30T07:00:00+25:00', 'offset out of range'],
    ['-5', 'negative epoch'],
    ['1.5', 'fractional epoch'],
    ['99999999999999999', 'beyond year 9999'],
    ['1969-12-31T23:59:59Z', 'before the epoch'],
  ])('refuses %j (%s) with KENG_ERR_BAD_TIME naming the parameter', (raw) => {
    expect(code(() => parseTime(raw, 'from'))).toBe('KENG_ERR_BAD_TIME');
    try { parseTime(raw, 'from'); } catch (e) { expect((e as Error).message).toContain('"from"'); }
  });

  it('leap days are valid only in leap years', () => {
    expect(parseTime('2024-02-29T00:00:00Z', 'x')).toBe(Date.parse('2024-02-29T00:00:00Z'));
    expect(code(() => parseTime('2025-02-29T00:00:00Z', 'x'))).toBe('KENG_ERR_BAD_TIME');
  });
});

describe('formatTime', () => {
  it('formats in the configured zone with its offset and milliseconds', () => {
    expect(formatTime(Date.parse('2025-11-30T00:00:00Z'), VN)).toBe('2025-11-30T07:00:00.000+07:00');
    expect(formatTime(Date.parse('2025-11-30T17:30:00.042Z'), VN)).toBe('2025-12-01T00:30:00.042+07:00');
    expect(formatTime(0, 'UTC')).toBe('1970-01-01T00:00:00.000+00:00');
  });

  it('follows daylight saving time and non-hour offsets', () => {
    expect(formatTime(Date.parse('2025-07-01T12:00:00Z'), 'Europe/Berlin')).toBe('2025-07-01T14:00:00.000+02:00');
    expect(formatTime(Date.parse('2025-01-01T12:00:00Z'), 'Europe/Berlin')).toBe('2025-01-01T13:00:00.000+01:00');
    expect(formatTime(Date.parse('2025-01-01T12:00:00Z'), 'America/St_Johns')).toBe('2025-01-01T08:30:00.000-03:30');
    expect(formatTime(Date.parse('2025-01-01T12:00:00Z'), 'Asia/Kathmandu')).toBe('2025-01-01T17:45:00.000+05:45');
    expect(tzOffsetMinutes(Date.parse('2025-11-30T00:00:00Z'), VN)).toBe(420);
  });

  it('round-trips through parseTime', () => {
    for (const ms of [0, 1, 999, 1764460800123, Date.parse('2024-02-29T23:59:59.999Z')]) {
      for (const tz of [VN, 'UTC', 'America/New_York', 'Asia/Kathmandu']) expect(parseTime(formatTime(ms, tz), 't')).toBe(ms);
    }
  });
});

describe('parseDuration', () => {
  it.each([['1s', 1000], ['30s', 30_000], ['5m', 300_000], ['1h', 3_600_000], ['1d', 86_400_000], ['2w', 1_209_600_000], ['90m', 5_400_000]])(
    '%s = %d ms', (raw, ms) => expect(parseDuration(raw)).toBe(ms));

  it.each(['0s', '500ms', '1', 'h', '1.5h', '-1h', '1y', '1 h', '', '367d', '9999999s'])('refuses %j with KENG_ERR_BAD_WINDOW', (raw) => {
    expect(code(() => parseDuration(raw))).toBe('KENG_ERR_BAD_WINDOW');
  });
});

describe('windowCount', () => {
  it('counts epoch-aligned windows touched by [from, to)', () => {
    expect(windowCount(0, 3_600_000, 60_000)).toBe(60);
    expect(windowCount(30_000, 90_000, 60_000)).toBe(2);
    expect(windowCount(60_000, 60_001, 60_000)).toBe(1);
    expect(windowCount(5, 5, 60_000)).toBe(0);
  });
});

describe('resolveRange', () => {
  const now = Date.parse('2025-11-30T12:00:00Z');

  it('defaults to the last 24 h ending now', () => {
    expect(resolveRange({}, now, 10_000)).toEqual({ from: now - DEFAULT_RANGE_MS, to: now });
  });

  it('from alone runs to now; to alone starts 24 h before it', () => {
    expect(resolveRange({ from: '2025-11-30T00:00:00Z' }, now, 10_000)).toEqual({ from: Date.parse('2025-11-30T00:00:00Z'), to: now });
    const to = Date.parse('2025-11-01T00:00:00Z');
    expect(resolveRange({ to: String(to) }, now, 10_000)).toEqual({ from: to - DEFAULT_RANGE_MS, to });
  });

  it('refuses from >= to with KENG_ERR_VALIDATION', () => {
    expect(code(() => resolveRange({ from: String(now), to: String(now) }, now, 10_000))).toBe('KENG_ERR_VALIDATION');
  });

  it('accepts exactly the maximum number of windows and refuses one more', () => {
    expect(resolveRange({ every: '1m', from: '0', to: String(10_000 * 60_000) }, now, 10_000).everyMs).toBe(60_000);
    expect(code(() => resolveRange({ every: '1m', from: '0', to: String(10_000 * 60_000 + 1) }, now, 10_000))).toBe('KENG_ERR_WINDOW_TOO_LARGE');
    expect(code(() => resolveRange({ every: '1s' }, now, 10_000))).toBe('KENG_ERR_WINDOW_TOO_LARGE'); // 86,400 windows in 24 h
    expect(resolveRange({ every: '10s' }, now, 10_000).everyMs).toBe(10_000); // 8,640 windows
  });

  it('reports a bad every or time before counting', () => {
    expect(code(() => resolveRange({ every: 'soon' }, now, 10_000))).toBe('KENG_ERR_BAD_WINDOW');
    expect(code(() => resolveRange({ to: 'later' }, now, 10_000))).toBe('KENG_ERR_BAD_TIME');
  });
});

describe('one rule for every time Keng reads and writes', () => {
  it('the API and the device codec read the same ISO forms the same way', () => {
    for (const s of ['2025-11-30T07:00:00+07:00', '2025-11-30T07:00:00+0700', '2025-11-30T07:00:00+07', '2025-11-30t00:00:00z', '2025-11-30T00:00:00,5Z']) {
      expect(parseTime(s, 'at')).toBe(parseIsoWithOffset(s));
    }
  });

  it('fractions of a millisecond are truncated, never rounded up into the next one', () => {
    expect(parseIsoWithOffset('2025-11-30T00:00:00.9999Z')).toBe(Date.UTC(2025, 10, 30, 0, 0, 0, 999));
    expect(parseTime('2025-11-30T00:00:00.0005Z', 'at')).toBe(Date.UTC(2025, 10, 30));
  });

  it('UTC is written with its offset like every other zone, and the hot-path formatter agrees with formatTime', () => {
    expect(formatTime(Date.UTC(2025, 10, 30), 'UTC')).toBe('2025-11-30T00:00:00.000+00:00');
    const f = timeFormatter(VN);
    for (const ms of [0, Date.UTC(2025, 10, 30, 16, 59, 59, 999), Date.UTC(2025, 10, 30, 17), 253_402_300_799_999]) {
      expect(f(ms)).toBe(formatTime(ms, VN));
    }
    expect(localDate(Date.UTC(2025, 10, 30, 17), VN)).toBe('2025-12-01');
  });
});

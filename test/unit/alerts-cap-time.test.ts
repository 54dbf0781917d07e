/**
 * CAP 1.2 dateTime (core/time.ts): "YYYY-MM-DDThh:mm:ssXzh:zm", no "Z", no
 * fraction, UTC written "-00:00" (CAP-v1.2-os §3.2.1, §3.3.2).
 */
import { describe, expect, it } from 'vitest';
import { formatCapTime, parseCapTime } from '../../src/core/time.js';

const VN = 'Asia/Ho_Chi_Minh';

describe('parseCapTime', () => {
  it('reads the CAP form with any numeric offset', () => {
    expect(parseCapTime('2003-06-17T14:57:00-07:00')).toBe(Date.parse('2003-06-17T21:57:00Z'));
    expect(parseCapTime('2025-11-30T07:00:00+07:00')).toBe(Date.parse('2025-11-30T00:00:00Z'));
    expect(parseCapTime('2025-11-30T00:00:00-00:00')).toBe(Date.parse('2025-11-30T00:00:00Z'));
    expect(parseCapTime('2025-11-30T00:00:00+00:00')).toBe(Date.parse('2025-11-30T00:00:00Z'));
    expect(parseCapTime('  2025-11-30T07:00:00+07:00\n')).toBe(Date.parse('2025-11-30T00:00:00Z'));
  });

  it.each([
    ['2025-11-30T00:00:00Z', 'alphabetic designator'],
    ['2025-11-30T00:00:00z', 'lower-case designator'],
    ['2025-11-30T07:00:00.000+07:00', 'fraction'],
    ['2025-11-30T07:00:00', 'no offset'],
    ['2025-11-30T07:00+07:00', 'no seconds'],
    ['2025-11-30T07:00:00+0700', 'offset without colon'],
    ['2025-11-30t07:00:00+07:00', 'lower-case t'],
    ['2025-02-30T07:00:00+07:00', 'no such day'],
    ['2025-11-30T24:00:00+07:00', 'hour 24'],
    ['2025-11-30T07:00:00,+07:00', 'comma (the XSD pattern class [-,+] lets it through, xs:dateTime does not)'],
    ['', 'empty'],
  ])('refuses %s (%s)', (s) => {
    expect(parseCapTime(s)).toBeNaN();
  });
});

describe('formatCapTime', () => {
  it('writes whole seconds with the zone offset', () => {
    expect(formatCapTime(Date.parse('2025-11-30T00:00:00.999Z'), VN)).toBe('2025-11-30T07:00:00+07:00');
  });

  it('writes UTC as -00:00, never Z or +00:00', () => {
    expect(formatCapTime(Date.parse('2025-11-30T00:00:00Z'), 'UTC')).toBe('2025-11-30T00:00:00-00:00');
  });

  it('round-trips through parseCapTime', () => {
    const ms = Date.parse('2026-01-01T23:59:59Z');
    for (const tz of [VN, 'UTC', 'America/Los_Angeles']) expect(parseCapTime(formatCapTime(ms, tz))).toBe(ms);
  });
});

/** Target state machine of broadcast execution, CSV export (RFC 4180) and log times. */
import { describe, expect, it } from 'vitest';
import {
  PLAY_RESPONSE_TO_STATE, PLAYBACK_TO_STATE, TERMINAL_STATES, checkTransition, csvField, toCsv, type TargetState,
} from '../../src/broadcast/execution/index.js';
import { formatTime } from '../../src/core/time.js';

const ALL: TargetState[] = ['pending', 'sent', 'accepted', 'playing', 'completed', 'failed', 'rejected', 'offline', 'expired', 'preempted', 'stopped', 'unconfirmed'];

/** The allowed transitions, written out as a table. */
const ALLOWED: Record<TargetState, TargetState[]> = {
  pending: ['sent', 'offline', 'expired', 'stopped'],
  offline: ['sent', 'expired', 'stopped'],
  sent: ['accepted', 'playing', 'completed', 'failed', 'rejected', 'preempted', 'stopped', 'expired'],
  accepted: ['playing', 'completed', 'failed', 'preempted', 'stopped', 'unconfirmed'],
  playing: ['completed', 'failed', 'preempted', 'stopped', 'unconfirmed'],
  completed: [], failed: [], rejected: [], expired: [], preempted: [], stopped: [],
  // An inference (no end reported): the speaker's own late report of the end replaces it.
  unconfirmed: ['completed', 'failed', 'preempted', 'stopped'],
};

describe('target state machine', () => {
  it.each(ALL)('from %s: exactly the table\'s transitions are ok', (from) => {
    for (const to of ALL) {
      const r = checkTransition(from, to);
      if (from === to) expect(r).toBe('same');
      else if (ALLOWED[from].includes(to)) expect(r, `${from} → ${to}`).toBe('ok');
      else expect(r, `${from} → ${to}`).toBe(TERMINAL_STATES.has(from) ? 'from_terminal' : 'backwards');
    }
  });

  it('no way back from a terminal state: a late accepted after completed is refused', () => {
    expect(checkTransition('completed', 'accepted')).toBe('from_terminal');
    expect(checkTransition('playing', 'accepted')).toBe('backwards');
    expect(checkTransition('accepted', 'sent')).toBe('backwards');
    expect([...TERMINAL_STATES].sort()).toEqual(['completed', 'expired', 'failed', 'preempted', 'rejected', 'stopped', 'unconfirmed']);
  });

  it('maps playback events and play responses (device protocol §12.5, §11.2)', () => {
    expect(PLAYBACK_TO_STATE).toEqual({ started: 'playing', completed: 'completed', failed: 'failed', preempted: 'preempted', stopped: 'stopped' });
    expect(PLAY_RESPONSE_TO_STATE).toEqual({ accepted: 'accepted', ok: 'accepted', rejected: 'rejected', error: 'failed' });
  });
});

describe('CSV (RFC 4180, UTF-8 with BOM)', () => {
  it('quotes fields with commas, quotes and line breaks; doubles quotes', () => {
    expect(csvField('plain')).toBe('plain');
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField('line1\nline2')).toBe('"line1\nline2"');
    expect(csvField('cr\r\nlf')).toBe('"cr\r\nlf"');
    expect(csvField(null)).toBe('');
    expect(csvField(undefined)).toBe('');
    expect(csvField(12.5)).toBe('12.5');
    expect(csvField(-3)).toBe('-3');
  });

  it('keeps Vietnamese text intact and neutralises spreadsheet formulas', () => {
    expect(csvField('Thôn Đông – loa Đình làng')).toBe('Thôn Đông – loa Đình làng');
    expect(csvField('Xã Ẳng Nưa, "bản Mường"')).toBe('"Xã Ẳng Nưa, ""bản Mường"""');
    expect(csvField('=HYPERLINK("http://x")')).toBe('"\'=HYPERLINK(""http://x"")"');
    expect(csvField('+84 912')).toBe("'+84 912");
    expect(csvField('@cmd')).toBe("'@cmd");
  });

  it('a document: BOM, header, CRLF after every record; round-trips through a strict parser', () => {
    const doc = toCsv(['a', 'b'], [['Thôn Tây', 'x,"y"\nz'], [1, null]]);
    expect(doc.startsWith('\uFEFF')).toBe(true);
    expect(Buffer.from(doc, 'utf8').subarray(0, 3)).toEqual(Buffer.from([0xef, 0xbb, 0xbf]));
    expect(doc).toBe('\uFEFFa,b\r\nThôn Tây,"x,""y""\nz"\r\n1,\r\n');
    expect(parseCsv(doc.slice(1))).toEqual([['a', 'b'], ['Thôn Tây', 'x,"y"\nz'], ['1', '']]);
  });
});

describe('log times', () => {
  it('ISO 8601 with the commune offset', () => {
    expect(formatTime(1764460800000, 'Asia/Ho_Chi_Minh')).toBe('2025-11-30T07:00:00.000+07:00');
    // One shape for every time Keng writes: UTC too has its offset spelled out.
    expect(formatTime(1764460805120, 'UTC')).toBe('2025-11-30T00:00:05.120+00:00');
  });
});

/** Minimal RFC 4180 parser for the round-trip check. */
function parseCsv(s: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let f = '';
  let q = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (q) {
      if (c === '"' && s[i + 1] === '"') { f += '"'; i++; } else if (c === '"') q = false; else f += c;
    } else if (c === '"') q = true;
    else if (c === ',') { row.push(f); f = ''; } else if (c === '\r' && s[i + 1] === '\n') { row.push(f); rows.push(row); row = []; f = ''; i++; } else f += c;
  }
  return rows;
}

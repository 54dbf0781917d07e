import { describe, expect, it } from 'vitest';
import { Backoff } from '../../src/storage/telemetry/backoff.js';
import { buildFlux, fluxString, fluxTime } from '../../src/storage/telemetry/flux.js';
import { aggStatement, parseRows, quoteIdent, quoteLiteral, rawStatement } from '../../src/storage/telemetry/influxql.js';
import { PrefixCache, escapeMeasurement, escapeTag, formatFieldValue, quoteString, recordsToLines } from '../../src/storage/telemetry/line-protocol.js';
import { parseReading, splitLine, splitLines } from '../../src/storage/telemetry/line-split.js';
import { parseConflictMessage } from '../../src/storage/telemetry/field-types.js';
import { PointBuilder, windowStart } from '../../src/storage/telemetry/windows.js';

describe('line protocol', () => {
  it('escapes measurement: comma and space only', () => {
    expect(escapeMeasurement('tele metry,x=y')).toBe('tele\\ metry\\,x=y');
    expect(escapeMeasurement('a"b\\c')).toBe('a"b\\c');
  });
  it('escapes tag keys/values and field keys: comma, equals, space', () => {
    expect(escapeTag('a b,c=d')).toBe('a\\ b\\,c\\=d');
    expect(escapeTag('quo"te\\back')).toBe('quo"te\\back');
    expect(escapeTag('line\nbreak\ttab\r')).toBe('line\\nbreak\\ttab\\r');
    expect(escapeTag('sensor-01.farm_2')).toBe('sensor-01.farm_2');
  });
  it('quotes string field values escaping double quote and backslash', () => {
    expect(quoteString('say "hi" \\o/')).toBe('"say \\"hi\\" \\\\o/"');
    expect(quoteString('a,b c=d')).toBe('"a,b c=d"');
    expect(quoteString('multi\nline')).toBe('"multi\nline"');
  });
  it('writes numbers as floats (never i), booleans as t/f', () => {
    expect(formatFieldValue(1)).toBe('1');
    expect(formatFieldValue(1.5)).toBe('1.5');
    expect(formatFieldValue(-0.000001)).toBe('-0.000001');
    expect(formatFieldValue(1e21)).toBe('1e+21');
    expect(formatFieldValue(true)).toBe('t');
    expect(formatFieldValue(false)).toBe('f');
    expect(formatFieldValue(Number.NaN)).toBeUndefined();
    expect(formatFieldValue(Infinity)).toBeUndefined();
  });
  it('builds one line per record with device_id and kind tags, ms timestamp', () => {
    const out: string[] = [];
    const st = recordsToLines('telemetry', [
      { deviceId: 'dev 1', kind: 'sensor', ts: 1764460800000, values: { soil_moisture: 31.5, ok: true, note: 'a "b"', n: 2 } },
      { deviceId: 'd,2', kind: '', ts: 1764460800001, values: { x: Number.NaN } },
      { deviceId: 'd=3', kind: 'speaker', ts: 1764460800002, values: { volume: 80 } },
    ], out);
    expect(out).toEqual([
      'telemetry,device_id=dev\\ 1,kind=sensor soil_moisture=31.5,ok=t,note="a \\"b\\"",n=2 1764460800000',
      'telemetry,device_id=d\\=3,kind=speaker volume=80 1764460800002',
    ]);
    expect(st).toEqual({ lines: 2, readings: 5, bytes: Buffer.byteLength(out.join('\n')) + 1 });
  });
});

describe('area tag', () => {
  it('tags each line with the device\'s area (sorted first), omitted when the device has none', () => {
    const out: string[] = [];
    recordsToLines('telemetry', [
      { deviceId: 'd1', kind: 'sensor', area: '00004', ts: 1, values: { a: 1 } },
      { deviceId: 'd1', kind: 'sensor', area: '00004', ts: 2, values: { a: 2 } },
      { deviceId: 'd1', kind: 'sensor', area: 'thôn 3,x', ts: 3, values: { a: 3 } }, // moved: same device, new area
      { deviceId: 'd1', kind: 'sensor', area: '', ts: 4, values: { a: 4 } },
      { deviceId: 'd1', kind: 'sensor', ts: 5, values: { a: 5 } },
    ], out);
    expect(out).toEqual([
      'telemetry,area=00004,device_id=d1,kind=sensor a=1 1',
      'telemetry,area=00004,device_id=d1,kind=sensor a=2 2',
      'telemetry,area=thôn\\ 3\\,x,device_id=d1,kind=sensor a=3 3',
      'telemetry,device_id=d1,kind=sensor a=4 4',
      'telemetry,device_id=d1,kind=sensor a=5 5',
    ]);
  });
  it('the prefix cache (kept across batches) follows a device\'s new area or kind', () => {
    const cache = new PrefixCache('tele metry', 2);
    const lines = (recs: Parameters<typeof recordsToLines>[1]): string[] => { const out: string[] = []; recordsToLines('ignored', recs, out, undefined, cache); return out; };
    expect(lines([{ deviceId: 'd1', kind: 'sensor', area: 'a1', ts: 1, values: { x: 1 } }, { deviceId: 'd2', kind: 'sensor', ts: 1, values: { x: 1 } }]))
      .toEqual(['tele\\ metry,area=a1,device_id=d1,kind=sensor x=1 1', 'tele\\ metry,device_id=d2,kind=sensor x=1 1']);
    expect(lines([{ deviceId: 'd1', kind: 'sensor', area: 'a2', ts: 2, values: { x: 2 } }, { deviceId: 'd1', kind: 'gateway', area: 'a2', ts: 3, values: { x: 3 } },
      { deviceId: 'd3', kind: 'sensor', area: 'a1', ts: 4, values: { x: 4 } }, { deviceId: 'd2', kind: 'sensor', ts: 5, values: { x: 5 } }]))
      .toEqual(['tele\\ metry,area=a2,device_id=d1,kind=sensor x=2 2', 'tele\\ metry,area=a2,device_id=d1,kind=gateway x=3 3',
        'tele\\ metry,area=a1,device_id=d3,kind=sensor x=4 4', 'tele\\ metry,device_id=d2,kind=sensor x=5 5']);
  });
});

describe('reading back our own line protocol (forwarder, dead-letter table)', () => {
  const lines = [
    'telemetry,area=00004,device_id=dev\\ 1,kind=sensor soil_moisture=31.5,ok=t,note="a \\"b\\", c=d\nnext \\\\",n=2 1764460800000',
    'telemetry,device_id=d\\=3,kind=speaker volume=80 1764460800002',
  ];
  it('splits a body into lines, a raw newline inside a string value does not end one', () => {
    expect(splitLines(lines.join('\n'))).toEqual(lines);
    expect(splitLines('')).toEqual([]);
  });
  it('splits a line into prefix, fields and timestamp, and a single-field line into its reading', () => {
    const p = splitLine(lines[0]!)!;
    expect(p.prefix).toBe('telemetry,area=00004,device_id=dev\\ 1,kind=sensor');
    expect(p.fields).toEqual(['soil_moisture=31.5', 'ok=t', 'note="a \\"b\\", c=d\nnext \\\\"', 'n=2']);
    expect(p.ts).toBe('1764460800000');
    const readings = p.fields.map((f) => parseReading(`${p.prefix} ${f} ${p.ts}`));
    expect(readings.map((r) => r && [r.tags.device_id, r.tags.area, r.field, r.value, r.ts])).toEqual([
      ['dev 1', '00004', 'soil_moisture', 31.5, 1764460800000],
      ['dev 1', '00004', 'ok', true, 1764460800000],
      ['dev 1', '00004', 'note', 'a "b", c=d\nnext \\', 1764460800000],
      ['dev 1', '00004', 'n', 2, 1764460800000],
    ]);
    expect(parseReading(lines[1]!)).toEqual({ tags: { device_id: 'd=3', kind: 'speaker' }, field: 'volume', value: 80, ts: 1764460800002 });
    expect(parseReading(lines[0]!)).toBeNull(); // several fields
    expect(splitLine('garbage')).toBeNull();
  });
  it('reads the field and existing type from InfluxDB\'s conflict message', () => {
    expect(parseConflictMessage('partial write: field type conflict: input field "rssi" on measurement "telemetry" is type string, already exists as type float dropped=1'))
      .toEqual({ field: 'rssi', existing: 'float' });
    expect(parseConflictMessage('unable to parse')).toBeNull();
  });
});

describe('windows', () => {
  it('aligns windows to the Unix epoch', () => {
    expect(windowStart(1764460999999, 300_000)).toBe(1764460800000);
    expect(windowStart(1764460800000, 300_000)).toBe(1764460800000);
    expect(windowStart(1764460800000 + 86_399_999, 86_400_000)).toBe(1764460800000); // 1d windows: UTC midnight
    expect(windowStart(-1, 1000)).toBe(-1000);
    expect(windowStart(7, 5)).toBe(5);
  });
  it('builds sorted points without absent fields, capped by limit', () => {
    const pb = new PointBuilder();
    pb.add(20, 'b', 2); pb.add(10, 'a', 1); pb.add(10, 'z', null); pb.add(30, 'a', 'x');
    expect(pb.build()).toEqual([{ ts: 10, values: { a: 1 } }, { ts: 20, values: { b: 2 } }, { ts: 30, values: { a: 'x' } }]);
    expect(pb.build(2)).toHaveLength(2);
  });
});

describe('back-off', () => {
  it('grows exponentially between min and max with jitter in [base/2, base]', () => {
    const lo = new Backoff(500, 30_000, () => 0);
    expect([1, 2, 3, 4, 5, 6, 7, 8].map(() => lo.next())).toEqual([500, 500, 1000, 2000, 4000, 8000, 15000, 15000]);
    const hi = new Backoff(500, 30_000, () => 1);
    expect([1, 2, 3, 4, 5, 6, 7, 8].map(() => hi.next())).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    hi.reset();
    expect(hi.attempts).toBe(0);
    expect(hi.next()).toBe(500);
    for (let i = 0; i < 2000; i++) hi.next(); // no overflow, no give-up
    expect(hi.next()).toBe(30_000);
  });
});

describe('InfluxQL', () => {
  const q = { deviceId: "o'brien\\", fields: ['a', 'we"ird'], from: 1000, to: 2000 };
  it('quotes identifiers and string literals', () => {
    expect(quoteIdent('we"ird')).toBe('"we\\"ird"');
    expect(quoteLiteral("o'brien\\")).toBe("'o\\'brien\\\\'");
  });
  it('raw and aggregate statements', () => {
    expect(rawStatement('telemetry', { ...q, limit: 10 })).toBe(
      `SELECT "a", "we\\"ird" FROM "telemetry" WHERE "device_id" = 'o\\'brien\\\\' AND time >= 1000ms AND time < 2000ms ORDER BY time ASC LIMIT 10`);
    expect(rawStatement('telemetry', { ...q, fields: [] })).toContain('SELECT *::field FROM');
    expect(aggStatement('telemetry', { ...q, everyMs: 300_000 }, 'mean', ['a'])).toBe(
      `SELECT mean("a") AS "a" FROM "telemetry" WHERE "device_id" = 'o\\'brien\\\\' AND time >= 1000ms AND time < 2000ms GROUP BY time(300000ms) fill(none)`);
  });
  it('parses and merges series by time', () => {
    const r = { series: [
      { columns: ['time', 'a', 'b'], values: [[1000, 1, null], [2000, null, 'x']] },
      { columns: ['time', 'a', 'b'], values: [[1000, null, true]] },
    ] };
    expect(parseRows(r)).toEqual([{ ts: 1000, values: { a: 1, b: true } }, { ts: 2000, values: { b: 'x' } }]);
  });
});

describe('Flux', () => {
  it('escapes string literals', () => {
    expect(fluxString('a"b\\c${d}\n')).toBe('"a\\"b\\\\c\\${d}\\n"');
    expect(fluxTime(1764460800123)).toBe('2025-11-30T00:00:00.123Z');
  });
  it('raw query text', () => {
    expect(buildFlux('keng', 'telemetry', { deviceId: 'd1', fields: ['a', 'b'], from: 1764460800000, to: 1764464400000, limit: 100 })).toBe([
      'from(bucket: "keng")',
      '  |> range(start: 2025-11-30T00:00:00.000Z, stop: 2025-11-30T01:00:00.000Z)',
      '  |> filter(fn: (r) => r._measurement == "telemetry" and r.device_id == "d1")',
      '  |> filter(fn: (r) => r._field == "a" or r._field == "b")',
      '  |> group(columns: ["_field"])',
      '  |> sort(columns: ["_time"])',
      '  |> limit(n: 100)',
      '  |> keep(columns: ["_time", "_field", "_value"])',
    ].join('\n'));
  });
  it('numeric aggregate filters floats; count/last do not', () => {
    const base = { deviceId: 'd1', fields: [], from: 0, to: 600_000, everyMs: 300_000 };
    const mean = buildFlux('b', 'telemetry', { ...base, agg: 'mean' });
    expect(mean.startsWith('import "types"\n\nfrom(bucket: "b")')).toBe(true);
    expect(mean).toContain('  |> filter(fn: (r) => types.isType(v: r._value, type: "float"))');
    expect(mean).toContain('  |> aggregateWindow(every: 300000ms, fn: mean, createEmpty: false, timeSrc: "_start")');
    expect(mean).not.toContain('r._field ==');
    const last = buildFlux('b', 'telemetry', { ...base, agg: 'last' });
    expect(last).not.toContain('types');
    expect(last).toContain('fn: last, createEmpty: false, timeSrc: "_start"');
    expect(buildFlux('b', 'telemetry', base)).toContain('fn: mean'); // default agg
  });
});

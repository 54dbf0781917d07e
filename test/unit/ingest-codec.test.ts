import { describe, expect, it } from 'vitest';
import { decodeTelemetry, type DecodeResult, type TelemetryLimits } from '../../src/ingest/codec.js';
import { parseIsoWithOffset } from '../../src/core/time.js';
import { exceedsDepth, parseJson, parseObject, validateTree } from '../../src/ingest/json.js';

const NOW = Date.UTC(2025, 11, 1, 0, 0, 0); // 2025-12-01T00:00:00Z
const DAY = 86_400_000;
const LIMITS: TelemetryLimits = { futureToleranceMs: 300_000, retentionDays: 365 };
const T = NOW - 60_000; // a valid past timestamp

const buf = (s: string | object): Buffer => Buffer.from(typeof s === 'string' ? s : JSON.stringify(s), 'utf8');
const decode = (p: string | object | Buffer, limits: TelemetryLimits = LIMITS): DecodeResult =>
  decodeTelemetry(Buffer.isBuffer(p) ? p : buf(p), NOW, limits);

function ok(p: string | object | Buffer, limits?: TelemetryLimits) {
  const r = decode(p, limits);
  if (!r.ok) throw new Error(`expected ok, got ${r.reason}: ${r.detail}`);
  return r;
}
function reason(p: string | object | Buffer, limits?: TelemetryLimits): string {
  const r = decode(p, limits);
  return r.ok ? 'ok' : r.reason;
}

describe('decodeTelemetry: accepted shapes (device protocol §6)', () => {
  it('flat object: timestamp = time of receipt', () => {
    const r = ok({ soil_moisture: 31.5, temperature: 24.1 });
    expect(r.records).toEqual([{ ts: NOW, values: { soil_moisture: 31.5, temperature: 24.1 } }]);
    expect(r.readings).toBe(2);
  });

  it('{ts, values} with epoch ms', () => {
    expect(ok({ ts: T, values: { soil_moisture: 31.5 } }).records).toEqual([{ ts: T, values: { soil_moisture: 31.5 } }]);
  });

  it('fractional epoch ms fall in their millisecond (truncated, like ISO fractions and the API)', () => {
    expect(ok({ ts: T + 0.6, values: { a: 1 } }).records[0]!.ts).toBe(T);
    expect(ok({ ts: T + 0.4, values: { a: 1 } }).records[0]!.ts).toBe(T);
    expect(ok({ ts: new Date(T).toISOString().replace('Z', '9Z'), values: { a: 1 } }).records[0]!.ts).toBe(T);
  });

  it.each([
    ['2025-11-30T17:00:00Z', Date.UTC(2025, 10, 30, 17)],
    ['2025-12-01T00:00:00+07:00', Date.UTC(2025, 10, 30, 17)],
    ['2025-11-30T12:00:00-05:00', Date.UTC(2025, 10, 30, 17)],
    ['2025-11-30T17:00:00.123Z', Date.UTC(2025, 10, 30, 17, 0, 0, 123)],
    ['2025-11-30T17:00:00.1234567+00:00', Date.UTC(2025, 10, 30, 17, 0, 0, 123)],
    ['2025-11-30T17:00Z', Date.UTC(2025, 10, 30, 17)],
    ['2025-11-30t17:00:00z', Date.UTC(2025, 10, 30, 17)],
    ['2024-02-29T00:00:00Z', Date.UTC(2024, 1, 29)],
  ])('ISO 8601 with offset %s', (iso, expected) => {
    expect(parseIsoWithOffset(iso)).toBe(expected);
  });

  it('ISO ts in a payload', () => {
    expect(ok({ ts: '2025-12-01T06:00:00+07:00', values: { a: 1 } }).records[0]!.ts).toBe(Date.UTC(2025, 10, 30, 23));
  });

  it('array of flat and {ts, values} entries (store-and-forward backlog)', () => {
    const r = ok([{ ts: T - 2000, values: { a: 1 } }, { ts: T - 1000, values: { a: 2, b: true } }, { a: 3 }]);
    expect(r.records.map((x) => x.ts)).toEqual([T - 2000, T - 1000, NOW]);
    expect(r.readings).toBe(4);
  });

  it('arrays out of order are sorted by ts, stable for equal ts', () => {
    const r = ok([
      { ts: T, values: { a: 3 } },
      { ts: T - 5000, values: { a: 1 } },
      { ts: T - 1000, values: { a: 2, tag: 'first' } },
      { ts: T - 1000, values: { a: 2, tag: 'second' } },
      { ts: T - 9000, values: { a: 0 } },
    ]);
    expect(r.records.map((x) => x.ts)).toEqual([T - 9000, T - 5000, T - 1000, T - 1000, T]);
    expect(r.records[2]!.values.tag).toBe('first');
    expect(r.records[3]!.values.tag).toBe('second');
  });

  it('booleans, strings up to 256 characters, negative and zero numbers', () => {
    const r = ok({ playing: false, pump_on: true, power_source: 'solar', s: 'x'.repeat(256), rssi: -71, z: 0 });
    expect(r.records[0]!.values).toMatchObject({ playing: false, pump_on: true, rssi: -71, z: 0 });
  });

  it('string length counts characters, not bytes or UTF-16 units', () => {
    ok({ note: 'ệ'.repeat(256) });            // 256 chars, 768 UTF-8 bytes
    ok({ note: '😀'.repeat(256) });           // 256 code points, 512 UTF-16 units
    expect(reason({ note: '😀'.repeat(257) })).toBe('string_too_long');
  });

  it('a UTF-8 byte order mark is tolerated', () => {
    ok(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), buf({ a: 1 })]));
  });

  it('brackets inside strings do not count as nesting', () => {
    ok({ note: '[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{' });
    ok({ note: 'quote \\" then [[[[[[[[[[[[[[[[[[[[[[[[' });
  });

  it('field names: 1 to 64 characters of [A-Za-z0-9_], starting with a letter', () => {
    ok({ a: 1, a_1: 2, battery_v: 3, ['x'.repeat(64)]: 4 });
  });

  it('camelCase field names as ThingsBoard firmware sends them; case is kept (two fields)', () => {
    const r = ok({ currentFirmwareVersion: '1.2.3', Temp: 20, temp: 21, X: 1 });
    expect(r.records[0]!.values).toEqual({ currentFirmwareVersion: '1.2.3', Temp: 20, temp: 21, X: 1 });
    expect(r.readings).toBe(4);
  });

  it('256 fields per record and 10,000 records per array are accepted', () => {
    const values: Record<string, number> = {};
    for (let i = 0; i < 256; i++) values[`f${i}`] = i;
    expect(ok(values).readings).toBe(256);
    const backlog = Array.from({ length: 10_000 }, (_, i) => ({ ts: T - i * 1000, values: { a: i } }));
    const r = ok(backlog);
    expect(r.records).toHaveLength(10_000);
    expect(r.records[0]!.ts).toBe(T - 9_999_000); // device sent newest first: sorted
  });

  it('a 1 MB valid backlog decodes quickly', () => {
    const backlog = Array.from({ length: 10_000 }, (_, i) => ({
      ts: T - i * 1000, values: { soil_moisture: 31.5, temperature: 24.1, humidity: 80, battery_v: 3.71, note: 'ok'.repeat(12) },
    }));
    const p = buf(backlog);
    expect(p.length).toBeGreaterThan(1_000_000);
    const t0 = performance.now();
    expect(ok(p).readings).toBe(50_000);
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});

describe('decodeTelemetry: time window', () => {
  it('exactly 5 minutes in the future is accepted; 1 ms more is refused', () => {
    ok({ ts: NOW + 300_000, values: { a: 1 } });
    expect(reason({ ts: NOW + 300_001, values: { a: 1 } })).toBe('future_ts');
    expect(reason({ ts: new Date(NOW + 3_600_000).toISOString(), values: { a: 1 } })).toBe('future_ts');
  });

  it('older than the retention is refused; exactly at the edge is accepted', () => {
    ok({ ts: NOW - 365 * DAY, values: { a: 1 } });
    expect(reason({ ts: NOW - 365 * DAY - 1, values: { a: 1 } })).toBe('too_old');
    expect(reason({ ts: 0, values: { a: 1 } })).toBe('too_old');
    expect(reason({ ts: 1764460800, values: { a: 1 } })).toBe('too_old'); // epoch seconds by mistake
    expect(reason({ ts: T - 2 * DAY, values: { a: 1 } }, { ...LIMITS, retentionDays: 1 })).toBe('too_old');
  });

  it('the tolerance comes from the limits', () => {
    expect(reason({ ts: NOW + 1, values: { a: 1 } }, { ...LIMITS, futureToleranceMs: 0 })).toBe('future_ts');
    ok({ ts: NOW, values: { a: 1 } }, { ...LIMITS, futureToleranceMs: 0 });
  });

  it('one bad record in an array refuses the whole payload', () => {
    const r = decode([{ ts: T, values: { a: 1 } }, { ts: NOW + DAY, values: { a: 2 } }]);
    expect(r).toMatchObject({ ok: false, reason: 'future_ts' });
    expect(r.ok ? '' : r.detail).toMatch(/^\[1\] /);
  });
});

describe('decodeTelemetry: refusals (each with a stable reason)', () => {
  it.each<[string, string | Buffer]>([
    // encoding and syntax
    ['not_utf8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d])],
    ['not_utf8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d])], // lone surrogate
    ['not_utf8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc0, 0xaf, 0x22, 0x7d])],       // overlong
    ['not_json', ''],
    ['not_json', 'hello'],
    ['not_json', '{"a":1'],
    ['not_json', "{'a':1}"],
    ['not_json', '{"a":NaN}'],
    ['not_json', '{"a":Infinity}'],
    ['not_json', '{"a":1,}'],
    // top-level and item types
    ['not_object', '42'],
    ['not_object', '"text"'],
    ['not_object', 'null'],
    ['not_object', 'true'],
    ['not_object', '[1,2]'],
    ['not_object', '[null]'],
    ['not_object', '[[{"a":1}]]'],
    // empty
    ['empty', '{}'],
    ['empty', '[]'],
    ['empty', `{"ts":${T},"values":{}}`],
    ['empty', `[{"a":1},{}]`],
    // values
    ['bad_value', '{"a":null}'],
    ['bad_value', '{"a":[1,2]}'],
    ['bad_value', '{"a":{"b":1}}'],
    ['bad_value', '{"a":1e999}'],
    ['bad_value', '{"a":-1e999}'],
    ['bad_value', `{"ts":${T},"values":{"a":1e999}}`],
    ['string_too_long', JSON.stringify({ a: 'x'.repeat(257) })],
    // field names
    ['bad_field_name', '{"Temp-1":1}'],
    ['bad_field_name', '{"1a":1}'],
    ['bad_field_name', '{"_a":1}'],
    ['bad_field_name', '{"a-b":1}'],
    ['bad_field_name', '{"a b":1}'],
    ['bad_field_name', '{"":1}'],
    ['bad_field_name', '{"nhiệt_độ":1}'],
    ['bad_field_name', '{"__proto__":1}'],
    ['bad_field_name', JSON.stringify({ ['x'.repeat(65)]: 1 })],
    // timestamps
    ['bad_ts', '{"ts":"2025-11-30T17:00:00","values":{"a":1}}'],       // ISO without offset
    ['bad_ts', '{"ts":"2025-11-30","values":{"a":1}}'],
    ['bad_ts', '{"ts":"2025-11-30 17:00:00Z","values":{"a":1}}'],
    ['bad_ts', '{"ts":"2025-02-30T00:00:00Z","values":{"a":1}}'],
    ['bad_ts', '{"ts":"2025-02-29T00:00:00Z","values":{"a":1}}'],
    ['bad_ts', '{"ts":"2025-11-30T24:00:00Z","values":{"a":1}}'],
    ['bad_ts', '{"ts":"2025-11-30T17:00:00+24:00","values":{"a":1}}'],
    ['bad_ts', '{"ts":"2025-11-30T17:00:00+7:00","values":{"a":1}}'],
    ['bad_ts', '{"ts":"1764460800000","values":{"a":1}}'],
    ['bad_ts', '{"ts":-1,"values":{"a":1}}'],
    ['bad_ts', '{"ts":1e999,"values":{"a":1}}'],
    ['bad_ts', '{"ts":true,"values":{"a":1}}'],
    ['bad_ts', '{"ts":null,"values":{"a":1}}'],
    ['bad_ts', '{"ts":{},"values":{"a":1}}'],
    // envelope shape
    ['bad_shape', `{"ts":${T}}`],
    ['bad_shape', `{"ts":${T},"temperature":24}`],
    ['bad_shape', '{"values":{"a":1}}'],
    ['bad_shape', `{"ts":${T},"values":{"a":1},"extra":1}`],
    ['bad_shape', `{"ts":${T},"values":[1]}`],
    ['bad_shape', `{"ts":${T},"values":5}`],
    ['bad_shape', `{"ts":${T},"values":null}`],
  ])('%s: %s', (expected, payload) => {
    const r = decode(typeof payload === 'string' ? buf(payload) : payload);
    expect(r.ok ? 'ok' : r.reason).toBe(expected);
    if (!r.ok) expect(typeof r.detail).toBe('string');
  });

  it('too_many_fields above 256 per record', () => {
    const values: Record<string, number> = {};
    for (let i = 0; i < 257; i++) values[`f${i}`] = i;
    expect(reason(values)).toBe('too_many_fields');
    expect(reason({ ts: T, values })).toBe('too_many_fields');
    expect(reason({ a: 1, b: 2 }, { ...LIMITS, maxFields: 1 })).toBe('too_many_fields');
  });

  it('too_many_records above 10,000', () => {
    expect(reason(Array.from({ length: 10_001 }, () => ({ a: 1 })))).toBe('too_many_records');
    expect(reason([{ a: 1 }, { a: 2 }], { ...LIMITS, maxRecords: 1 })).toBe('too_many_records');
  });

  it('too_deep: 100,000 nested arrays (and objects) are refused without parsing', () => {
    const deepArrays = '['.repeat(100_000) + ']'.repeat(100_000);
    expect(reason(deepArrays)).toBe('too_deep');
    expect(reason('{"a":'.repeat(100_000) + '1' + '}'.repeat(100_000))).toBe('too_deep');
    expect(reason('['.repeat(100_000))).toBe('too_deep'); // unterminated too
  });

  it('a 1 MB single string is refused (string_too_long), a 1 MB non-JSON blob is not_json', () => {
    expect(reason(JSON.stringify({ a: 'x'.repeat(1_048_576) }))).toBe('string_too_long');
    expect(reason(Buffer.alloc(1_048_576, 0x61))).toBe('not_json');
  });

  it('a detail quotes at most 64 characters of a device-supplied name', () => {
    const r = decode({ ['Z'.repeat(10_000)]: 1 });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.detail.length).toBeLessThan(200);
  });
});

describe('json helpers', () => {
  it('exceedsDepth counts nesting outside strings only', () => {
    expect(exceedsDepth(buf('[[[]]]'), 3)).toBe(false);
    expect(exceedsDepth(buf('[[[[]]]]'), 3)).toBe(true);
    expect(exceedsDepth(buf('{"a":"[[[[[[[["}'), 3)).toBe(false);
    expect(exceedsDepth(buf('{"a":"\\"[[[[[[[["}'), 3)).toBe(false);
    expect(exceedsDepth(buf('[1],[2],[3],[4],[5]'), 1)).toBe(false);
  });

  it('parseJson reports reasons instead of throwing', () => {
    expect(parseJson(buf('{"a":1}'))).toEqual({ ok: true, value: { a: 1 } });
    expect(parseJson(buf('{'))).toMatchObject({ ok: false, reason: 'not_json' });
  });

  it('validateTree: keys, finite numbers, strings, node count, prototype keys', () => {
    expect(validateTree({ fw: '1.2.3', caps: { audio: true, codecs: ['mp3', 'opus'] }, n: null })).toBeNull();
    expect(validateTree({ ['k'.repeat(65)]: 1 })).toMatchObject({ reason: 'bad_field_name' });
    expect(validateTree({ a: { __proto__: 1 } as unknown as Record<string, unknown> })).toBeNull(); // literal __proto__ sets the prototype, not a key
    expect(validateTree(JSON.parse('{"a":{"__proto__":{"x":1}}}') as Record<string, unknown>)).toMatchObject({ reason: 'bad_field_name' });
    expect(validateTree(JSON.parse('{"constructor":{"prototype":{}}}') as Record<string, unknown>)).toMatchObject({ reason: 'bad_field_name' });
    expect(validateTree({ a: [1, Infinity] })).toMatchObject({ reason: 'bad_value' });
    expect(validateTree({ a: 'x'.repeat(5000) })).toMatchObject({ reason: 'string_too_long' });
    expect(validateTree({ a: Array.from({ length: 2000 }, () => 1) })).toMatchObject({ reason: 'too_many_fields' });
  });

  it('parseObject: object required, empty refused unless allowed', () => {
    expect(parseObject(buf('[1]'), 8)).toMatchObject({ ok: false, reason: 'not_object' });
    expect(parseObject(buf('{}'), 8)).toMatchObject({ ok: false, reason: 'empty' });
    expect(parseObject(buf('{}'), 8, undefined, true)).toEqual({ ok: true, value: {} });
    expect(parseObject(buf('{"a":{"b":{"c":1}}}'), 2)).toMatchObject({ ok: false, reason: 'too_deep' });
  });
});

describe('parseJson text decoding (ASCII fast path, UTF-8 otherwise)', () => {
  it('ASCII from a Buffer, a plain Uint8Array or a sub-view decodes as before', () => {
    const text = '{"soil_moisture":31.5,"note":"ok"}';
    const bytes = new TextEncoder().encode(`xx${text}yy`);
    expect(parseJson(Buffer.from(text))).toEqual({ ok: true, value: { soil_moisture: 31.5, note: 'ok' } });
    expect(parseJson(bytes.subarray(2, 2 + text.length))).toEqual({ ok: true, value: { soil_moisture: 31.5, note: 'ok' } });
  });
  it('non-ASCII still goes through the strict UTF-8 decoder (BOM dropped, bad bytes refused)', () => {
    expect(parseJson(Buffer.from('\uFEFF{"a":"Đồng"}', 'utf8'))).toEqual({ ok: true, value: { a: 'Đồng' } });
    expect(parseJson(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]))).toMatchObject({ ok: false, reason: 'not_utf8' });
  });
});

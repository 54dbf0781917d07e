/**
 * Register maps: the shipped maps load and decode their source's documented
 * example frames; the schema and rules refuse what cannot work; the read
 * plan asks for every contiguous block in one request and never reads
 * across a gap.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MapCatalog, loadMaps, shippedMapsDir } from '../../src/modbus/maps.js';
import { inlineMapErrors, transportErrors } from '../../src/modbus/map-schema.js';
import { blockReadings, planReads } from '../../src/modbus/plan.js';
import type { RegisterDef, RegisterMap } from '../../src/modbus/types.js';

const catalog = MapCatalog.shipped();

/** The readings of a map from one register array per block (as a sensor would answer). */
function readAll(map: RegisterMap, answers: (number | boolean)[][]): Record<string, unknown> {
  const blocks = planReads(map.registers);
  expect(blocks).toHaveLength(answers.length);
  const out: Record<string, unknown> = {};
  blocks.forEach((b, i) => { for (const [r, v] of blockReadings(b, answers[i]!)) out[r.field] = v; });
  return out;
}

describe('shipped register maps', () => {
  it('load, each named like its file and naming its source', () => {
    const maps = catalog.list();
    expect(maps.map((m) => m.name).sort()).toEqual([
      'rain-gauge-xunchip', 'soil-3in1', 'soil-4in1-ph', 'soil-7in1-npk', 'soil-npk-dfrobot-sen0605', 'water-level-apg-mnu', 'weather-sensecap-one',
    ]);
    for (const m of maps) {
      expect(m.source.length).toBeGreaterThan(20);
      expect(m.registers.length).toBeGreaterThan(0);
    }
  });

  it('soil-3in1 decodes DFRobot SEN0601\'s example frame (02 92 FF 9B 03 E8) in one request', () => {
    expect(planReads(catalog.get('soil-3in1')!.registers)).toEqual([expect.objectContaining({ function: 'holding', start: 0, count: 3 })]);
    expect(readAll(catalog.get('soil-3in1')!, [[0x0292, 0xff9b, 0x03e8]])).toEqual({ soil_moisture: 65.8, temperature: -10.1, soil_ec: 1000 });
  });

  it('soil-4in1-ph decodes DFRobot SEN0604\'s example frame', () => {
    expect(readAll(catalog.get('soil-4in1-ph')!, [[0x0292, 0xff9b, 0x03e8, 0x0038]]))
      .toEqual({ soil_moisture: 65.8, temperature: -10.1, soil_ec: 1000, soil_ph: 5.6 });
  });

  it('soil-7in1-npk decodes the myduino 4-in-1 example plus N, P, K in one request', () => {
    expect(readAll(catalog.get('soil-7in1-npk')!, [[0x0262, 0x0167, 0x0006, 0x0037, 0x0020, 0x0011, 0x0050]]))
      .toEqual({ soil_moisture: 61, temperature: 35.9, soil_ec: 6, soil_ph: 5.5, nitrogen: 32, phosphorus: 17, potassium: 80 });
  });

  it('rain-gauge-xunchip decodes XM9505\'s example (02 18 = 536 tips = 53.6 mm)', () => {
    expect(readAll(catalog.get('rain-gauge-xunchip')!, [[0x0218]])).toEqual({ rain_total_mm: 53.6 });
  });

  it('water-level-apg-mnu reads its two registers with two requests (30301 is not listed)', () => {
    const blocks = planReads(catalog.get('water-level-apg-mnu')!.registers);
    expect(blocks.map((b) => [b.function, b.start, b.count])).toEqual([['input', 299, 1], ['input', 301, 1]]);
    expect(readAll(catalog.get('water-level-apg-mnu')!, [[1234], [0xfffb]])).toEqual({ distance_mm: 1234, temperature: -5 });
  });

  it('weather-sensecap-one reads ten int32 values in one request', () => {
    const map = catalog.get('weather-sensecap-one')!;
    expect(planReads(map.registers).map((b) => [b.function, b.start, b.count])).toEqual([['input', 0, 20]]);
    const int32 = (v: number): number[] => [Math.floor((v >>> 0) / 65536), (v >>> 0) % 65536];
    const words = [27_650, 65_810, 101_325_000, 5_000_000, 10_000, 350_000, 180_500, 0, 12_300, 3_450].flatMap(int32);
    expect(readAll(map, [words])).toEqual({
      temperature: 27.65, humidity: 65.81, pressure_hpa: 1013.25, light_lux: 5000,
      wind_direction_min: 10, wind_direction_max: 350, wind_direction: 180.5, wind_speed_min: 0, wind_speed_max: 12.3, wind_speed: 3.45,
    });
    expect(readAll(map, [int32(-5_250).concat(words.slice(2))]).temperature).toBe(-5.25);
  });

  it('an unknown map name is 422; an inline map resolves to itself', () => {
    expect(() => catalog.resolve('no-such-map')).toThrow(expect.objectContaining({ statusCode: 422 }));
    const inline = { registers: [{ field: 'x', function: 'input', address: 0, type: 'uint16' }] } as RegisterMap;
    expect(catalog.resolve(inline)).toBe(inline);
  });

  it('loading refuses a broken map file, naming the file and the field', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keng-maps-'));
    writeFileSync(path.join(dir, 'bad.json'), JSON.stringify({
      name: 'bad', title: 'Bad', source: 'nowhere', registers: [{ field: 'x', function: 'coil', address: 0, type: 'uint16' }],
    }));
    expect(() => loadMaps(dir)).toThrow(/bad\.json: registers\[0\]\.type: a coil holds one bit/);
    writeFileSync(path.join(dir, 'bad.json'), JSON.stringify({ name: 'other', title: 'x', source: 'y', registers: [{ field: 'x', function: 'input', address: 0, type: 'uint16' }] }));
    expect(() => loadMaps(dir)).toThrow(/differs from the file name/);
    expect(shippedMapsDir()).toMatch(/firmware-protocols[/\\]modbus$/);
  });
});

describe('register map rules (inline maps, POST /api/v1/devices)', () => {
  const r = (more: Partial<RegisterDef> & Record<string, unknown>): Record<string, unknown> => ({ field: 'v', function: 'holding', address: 0, type: 'uint16', ...more });
  const fields = (registers: unknown[]): string[] => inlineMapErrors({ registers }).map((e) => `${e.field}: ${e.message}`);

  it('accepts every type with its options', () => {
    expect(fields([
      r({ field: 'a', type: 'int16', scale: 0.1, offset: -40, unit: '°C', min: -40, max: 80 }),
      r({ field: 'b', type: 'uint32', wordOrder: 'little', address: 1 }),
      r({ field: 'c', type: 'float32', address: 3, function: 'input' }),
      r({ field: 'd', type: 'bool', function: 'coil' }),
      r({ field: 'e', type: 'bool', function: 'discrete', address: 65535 }),
    ])).toEqual([]);
  });

  it('refuses what cannot work, field by field', () => {
    expect(fields([r({ type: 'int16', function: 'coil' })])).toEqual(['registerMap.registers[0].type: a coil holds one bit: type must be bool']);
    expect(fields([r({}), r({ address: 1 })])).toEqual(['registerMap.registers[1].field: field "v" appears twice']);
    expect(fields([r({ wordOrder: 'big' })])).toEqual(['registerMap.registers[0].wordOrder: wordOrder applies to int32, uint32 and float32 only']);
    expect(fields([r({ type: 'bool', scale: 2 })])).toEqual(['registerMap.registers[0].scale: a bool value has no scale']);
    expect(fields([r({ scale: 0 })])).toEqual(['registerMap.registers[0].scale: scale must not be 0']);
    expect(fields([r({ min: 5, max: 1 })])).toEqual(['registerMap.registers[0].min: min is above max']);
    expect(fields([r({ type: 'int32', address: 65535 })])).toEqual(['registerMap.registers[0].address: the value runs past register 65535']);
    expect(fields([r({ field: 'soil-moisture' })])[0]).toMatch(/^registerMap\.registers\[0\]\.field: /);
    expect(fields([r({ colour: 'red' })])).toEqual(['registerMap.registers[0].colour: unknown field']);
    expect(fields([r({ address: 70000 })])[0]).toMatch(/^registerMap\.registers\[0\]\.address: /);
    expect(fields([])[0]).toMatch(/^registerMap\.registers: /);
  });

  it('transports: TCP gateway or serial line, nothing else', () => {
    expect(transportErrors({ type: 'modbus-tcp', host: '192.168.1.10', port: 502, unitId: 1 })).toEqual([]);
    expect(transportErrors({ type: 'modbus-rtu', path: '/dev/ttyUSB0', baudRate: 9600, parity: 'none', unitId: 1 })).toEqual([]);
    expect(transportErrors({ type: 'modbus-rtu', path: '/dev/ttyUSB0', baudRate: 9600, parity: 'mark', unitId: 1 }).length).toBeGreaterThan(0);
    expect(transportErrors({ type: 'modbus-rtu', path: '/dev/ttyUSB0', baudRate: 9600, parity: 'none', unitId: 0 }).length).toBeGreaterThan(0);
    expect(transportErrors({ type: 'modbus-tcp', host: 'gw', port: 0, unitId: 1 }).length).toBeGreaterThan(0);
    expect(transportErrors({ type: 'modbus-ascii', path: '/dev/ttyUSB0' }).length).toBeGreaterThan(0);
  });
});

describe('read plan: one request per contiguous block', () => {
  const h = (address: number, type: RegisterDef['type'] = 'uint16', fn: RegisterDef['function'] = 'holding'): RegisterDef =>
    ({ field: `f${fn}${address}`, function: fn, address, type });
  const shape = (regs: RegisterDef[], limits = {}): [string, number, number][] => planReads(regs, limits).map((b) => [b.function, b.start, b.count]);

  it('merges touching registers, splits at gaps and by table', () => {
    expect(shape([h(2), h(0), h(1)])).toEqual([['holding', 0, 3]]);
    expect(shape([h(0), h(1), h(5)])).toEqual([['holding', 0, 2], ['holding', 5, 1]]);
    expect(shape([h(0, 'int32'), h(2), h(3, 'float32')])).toEqual([['holding', 0, 5]]);
    expect(shape([h(0), h(1, 'uint16', 'input'), h(0, 'bool', 'coil'), h(1, 'bool', 'coil'), h(0, 'bool', 'discrete')]))
      .toEqual([['holding', 0, 1], ['input', 1, 1], ['coil', 0, 2], ['discrete', 0, 1]]);
  });

  it('reads overlapping registers once', () => {
    expect(shape([h(0, 'int32'), { ...h(1), field: 'low' }])).toEqual([['holding', 0, 2]]);
  });

  it('keeps within the protocol limits (125 registers, 2000 bits) and never splits a 32-bit value', () => {
    const many = Array.from({ length: 130 }, (_, i) => h(i));
    expect(shape(many)).toEqual([['holding', 0, 125], ['holding', 125, 5]]);
    const bits = Array.from({ length: 2001 }, (_, i) => h(i, 'bool', 'coil'));
    expect(shape(bits)).toEqual([['coil', 0, 2000], ['coil', 2000, 1]]);
    expect(shape([h(0), h(1), h(2), h(3, 'int32')], { registers: 4 })).toEqual([['holding', 0, 3], ['holding', 3, 2]]);
  });

  it('maps an answer back to its registers', () => {
    const [b] = planReads([h(10, 'int16'), { ...h(11, 'uint32'), wordOrder: 'little' }]);
    const got = blockReadings(b!, [0xffff, 0x0002, 0x0001]);
    expect([...got.values()]).toEqual([-1, 0x0001_0002]);
    const [bits] = planReads([h(3, 'bool', 'discrete'), h(5, 'bool', 'discrete'), h(4, 'bool', 'discrete')]);
    expect(bits).toMatchObject({ start: 3, count: 3 });
    expect(Object.fromEntries([...blockReadings(bits!, [true, false, true, false, false]).entries()].map(([r, v]) => [r.address, v]))).toEqual({ 3: true, 4: false, 5: true });
  });
});

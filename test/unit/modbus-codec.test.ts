/**
 * Register decoding and encoding (src/modbus/codec.ts) against registers
 * computed by hand: every type, both word orders, the limits of each integer
 * type, IEEE 754 floats (Modbus spec §4.2: a register is 16 bits, high byte
 * first; a 32-bit value is two registers in the sensor's word order).
 */
import { describe, expect, it } from 'vitest';
import { decodeRegister, encodeRegister, rawValue, readingProblem, scaled } from '../../src/modbus/codec.js';
import type { RegisterDef, RegisterType, WordOrder } from '../../src/modbus/types.js';

const reg = (type: RegisterType, more: Partial<RegisterDef> = {}): RegisterDef => ({ field: 'v', function: 'holding', address: 0, type, ...more });
const raw = (type: RegisterType, words: number[], wordOrder?: WordOrder): number | boolean => rawValue(reg(type, { wordOrder }), words, 0);

describe('modbus codec: 16-bit types', () => {
  it('uint16 is the register as it is', () => {
    expect(raw('uint16', [0x0000])).toBe(0);
    expect(raw('uint16', [0x0292])).toBe(658);
    expect(raw('uint16', [0xffff])).toBe(65535);
  });

  it('int16 is two\'s complement', () => {
    expect(raw('int16', [0x7fff])).toBe(32767);
    expect(raw('int16', [0x8000])).toBe(-32768);
    expect(raw('int16', [0xffff])).toBe(-1);
    expect(raw('int16', [0xff9b])).toBe(-101); // DFRobot SEN0601 example: -10.1 °C
  });

  it('bool of a register is "not zero"', () => {
    expect(raw('bool', [0])).toBe(false);
    expect(raw('bool', [1])).toBe(true);
    expect(raw('bool', [0x8000])).toBe(true);
  });

  it('reads the register at the offset it is given', () => {
    expect(rawValue(reg('int16'), [0x0001, 0x0002, 0xfffe], 2)).toBe(-2);
  });
});

describe('modbus codec: 32-bit types and word order', () => {
  it('uint32: big = high word first, little = low word first', () => {
    // Seeed SenseCAP S4 manual example: 0x0001 (MSB), 0x87D5 (LSB) = 100309 Pa.
    expect(raw('uint32', [0x0001, 0x87d5], 'big')).toBe(100_309);
    expect(raw('uint32', [0x0001, 0x87d5])).toBe(100_309); // big is the default
    expect(raw('uint32', [0x87d5, 0x0001], 'little')).toBe(100_309);
    expect(raw('uint32', [0xffff, 0xffff], 'big')).toBe(4_294_967_295);
    expect(raw('uint32', [0x8000, 0x0000], 'big')).toBe(2_147_483_648);
  });

  it('int32: two\'s complement over both words', () => {
    expect(raw('int32', [0xffff, 0xfffe], 'big')).toBe(-2);
    expect(raw('int32', [0xfffe, 0xffff], 'little')).toBe(-2);
    expect(raw('int32', [0x8000, 0x0000], 'big')).toBe(-2_147_483_648);
    expect(raw('int32', [0x0000, 0x8000], 'little')).toBe(-2_147_483_648);
    expect(raw('int32', [0x7fff, 0xffff], 'big')).toBe(2_147_483_647);
    expect(raw('int32', [0x0000, 0x9c40], 'big')).toBe(40_000); // above int16, below 2^16
  });

  it('float32: IEEE 754 single precision', () => {
    expect(raw('float32', [0x3fc0, 0x0000], 'big')).toBe(1.5);
    expect(raw('float32', [0x0000, 0x3fc0], 'little')).toBe(1.5);
    expect(raw('float32', [0xc020, 0x0000], 'big')).toBe(-2.5);
    expect(raw('float32', [0x41cc, 0x0000], 'big')).toBe(25.5);
    expect(raw('float32', [0x0000, 0x0000], 'big')).toBe(0);
    // 0x40490FDB is π rounded to single precision: exactly 3.1415927410125732 as a double.
    expect(raw('float32', [0x4049, 0x0fdb], 'big')).toBe(3.1415927410125732);
    expect(raw('float32', [0x0fdb, 0x4049], 'little')).toBe(3.1415927410125732);
    expect(raw('float32', [0x7fc0, 0x0000], 'big')).toBeNaN();
    expect(raw('float32', [0x7f80, 0x0000], 'big')).toBe(Infinity);
  });

  it('the wrong word order gives another number (the map must say which)', () => {
    expect(raw('uint32', [0x0001, 0x87d5], 'little')).toBe(0x87d5_0001);
  });
});

describe('modbus codec: scale, offset, validity', () => {
  it('applies scale and offset, with decimal scales exact', () => {
    expect(scaled(658, 0.1)).toBe(65.8); // not 65.80000000000001
    expect(scaled(-101, 0.1)).toBe(-10.1);
    expect(scaled(56, 0.1)).toBe(5.6);
    expect(scaled(101_325_000, 0.00001)).toBe(1013.25);
    expect(scaled(27_650, 0.001)).toBe(27.65);
    expect(scaled(3, 2.5)).toBe(7.5);
    expect(scaled(100, 1, -40)).toBe(60);
    expect(scaled(123, 0.01, 1)).toBe(2.23);
  });

  it('decodeRegister returns the scaled reading', () => {
    expect(decodeRegister(reg('int16', { scale: 0.1 }), [0xff9b], 0)).toBe(-10.1);
    expect(decodeRegister(reg('int32', { wordOrder: 'big', scale: 0.001 }), [0x0000, 0x6c02], 0)).toBe(27.65);
    expect(decodeRegister(reg('bool'), [2], 0)).toBe(true);
  });

  it('readingProblem: non-finite is bad_value, outside min..max is out_of_range', () => {
    const r = reg('int16', { min: -40, max: 80 });
    expect(readingProblem(r, 20)).toBeNull();
    expect(readingProblem(r, -40)).toBeNull();
    expect(readingProblem(r, 80)).toBeNull();
    expect(readingProblem(r, 80.1)).toBe('out_of_range');
    expect(readingProblem(r, -41)).toBe('out_of_range');
    expect(readingProblem(r, NaN)).toBe('bad_value');
    expect(readingProblem(reg('float32'), Infinity)).toBe('bad_value');
    expect(readingProblem(reg('bool'), true)).toBeNull();
  });
});

describe('modbus codec: encoding for writes is the inverse of decoding', () => {
  const roundTrip = (r: RegisterDef, value: number | boolean): unknown => {
    const e = encodeRegister(r, value);
    if (!e.ok) return e.message;
    return 'bit' in e ? e.bit : decodeRegister(r, e.words, 0);
  };

  it('every type and word order round-trips', () => {
    expect(encodeRegister(reg('uint16'), 65535)).toEqual({ ok: true, words: [0xffff] });
    expect(encodeRegister(reg('int16'), -101)).toEqual({ ok: true, words: [0xff9b] });
    expect(encodeRegister(reg('int32', { wordOrder: 'big' }), -2)).toEqual({ ok: true, words: [0xffff, 0xfffe] });
    expect(encodeRegister(reg('int32', { wordOrder: 'little' }), -2)).toEqual({ ok: true, words: [0xfffe, 0xffff] });
    expect(encodeRegister(reg('uint32', { wordOrder: 'big' }), 100_309)).toEqual({ ok: true, words: [0x0001, 0x87d5] });
    expect(encodeRegister(reg('uint32', { wordOrder: 'little' }), 100_309)).toEqual({ ok: true, words: [0x87d5, 0x0001] });
    expect(encodeRegister(reg('float32', { wordOrder: 'big' }), 1.5)).toEqual({ ok: true, words: [0x3fc0, 0x0000] });
    expect(encodeRegister(reg('float32', { wordOrder: 'little' }), -2.5)).toEqual({ ok: true, words: [0x0000, 0xc020] });
    expect(encodeRegister(reg('bool', { function: 'coil' }), true)).toEqual({ ok: true, bit: true });
    expect(encodeRegister(reg('bool'), true)).toEqual({ ok: true, words: [1] });
    expect(roundTrip(reg('int16', { scale: 0.1 }), -10.1)).toBe(-10.1);
    expect(roundTrip(reg('uint16', { scale: 0.1, offset: -40 }), 25.5)).toBe(25.5);
  });

  it('refuses values the register cannot hold', () => {
    expect(roundTrip(reg('uint16'), -1)).toMatch(/does not fit uint16/);
    expect(roundTrip(reg('int16'), 40_000)).toMatch(/does not fit int16/);
    expect(roundTrip(reg('uint16'), 1.5)).toMatch(/not a whole step of 1/);
    expect(roundTrip(reg('uint16', { scale: 0.1 }), 1.25)).toMatch(/not a whole step of 0.1/);
    expect(roundTrip(reg('uint16', { max: 100 }), 101)).toMatch(/outside/);
    expect(roundTrip(reg('uint16'), true)).toMatch(/takes a number/);
    expect(roundTrip(reg('bool', { function: 'coil' }), 1)).toMatch(/takes true or false/);
  });
});

/**
 * Register values ↔ readings. Pure functions, no I/O.
 *
 * Modbus spec §4.2: a register is 16 bits, sent high byte first. A 32-bit
 * value spans two consecutive registers in the order the sensor's table
 * gives (WordOrder). modbus-serial hands us each register as an unsigned
 * 16-bit number (its `data` array), which is what `words` holds here.
 */
import type { Scalar } from '../core/events.js';
import { wordsOf, type RegisterDef } from './types.js';

const TWO_16 = 0x1_0000;
const TWO_31 = 0x8000_0000;
const TWO_32 = 0x1_0000_0000;

/** The two words of a 32-bit value as [high, low]. */
function highLow(r: RegisterDef, words: readonly number[], at: number): [number, number] {
  const a = words[at]! & 0xffff, b = words[at + 1]! & 0xffff;
  return r.wordOrder === 'little' ? [b, a] : [a, b];
}

/** The raw (unscaled) value of `r`, its first register at words[at]. */
export function rawValue(r: RegisterDef, words: readonly number[], at: number): number | boolean {
  switch (r.type) {
    case 'bool': return (words[at]! & 0xffff) !== 0;
    case 'uint16': return words[at]! & 0xffff;
    case 'int16': { const w = words[at]! & 0xffff; return w >= 0x8000 ? w - TWO_16 : w; }
    case 'uint32': { const [h, l] = highLow(r, words, at); return h * TWO_16 + l; }
    case 'int32': { const [h, l] = highLow(r, words, at); const u = h * TWO_16 + l; return u >= TWO_31 ? u - TWO_32 : u; }
    case 'float32': {
      const [h, l] = highLow(r, words, at);
      const b = Buffer.allocUnsafe(4);
      b.writeUInt16BE(h, 0);
      b.writeUInt16BE(l, 2);
      return b.readFloatBE(0);
    }
  }
}

/**
 * raw × scale + offset. A scale such as 0.1 is applied as a division by 10:
 * 658 × 0.1 is 65.80000000000001 in binary floating point, 658 / 10 is the
 * double nearest 65.8, which is what the sensor's table means.
 */
export function scaled(raw: number, scale = 1, offset = 0): number {
  let v = raw;
  if (scale !== 1) {
    const inv = 1 / scale;
    const k = Math.round(inv);
    v = Math.abs(scale) < 1 && k !== 0 && Math.abs(inv - k) < 1e-9 * Math.abs(k) ? raw / k : raw * scale;
  }
  return offset === 0 ? v : v + offset;
}

/** The reading of `r` from its registers (bool for bool types, else the scaled number; NaN if the float is not finite). */
export function decodeRegister(r: RegisterDef, words: readonly number[], at: number): Scalar {
  const raw = rawValue(r, words, at);
  return typeof raw === 'boolean' ? raw : scaled(raw, r.scale, r.offset);
}

/** Why a decoded reading is refused, or null: non-finite numbers (a float NaN) and values outside min..max. */
export function readingProblem(r: RegisterDef, v: Scalar): 'bad_value' | 'out_of_range' | null {
  if (typeof v !== 'number') return null;
  if (!Number.isFinite(v)) return 'bad_value';
  if ((r.min !== undefined && v < r.min) || (r.max !== undefined && v > r.max)) return 'out_of_range';
  return null;
}

/** Integer ranges of the integer types. */
const RANGE: Record<string, [number, number]> = {
  int16: [-0x8000, 0x7fff], uint16: [0, 0xffff], int32: [-TWO_31, TWO_31 - 1], uint32: [0, TWO_32 - 1],
};

export type Encoded = { ok: true; words: number[] } | { ok: true; bit: boolean } | { ok: false; message: string };

/**
 * A reading → what to write: the inverse of decodeRegister. The value must
 * fit the map's valid range and become an integer of the register's type
 * after (value − offset) / scale (within rounding noise), so that writing
 * and reading back agree.
 */
export function encodeRegister(r: RegisterDef, value: Scalar): Encoded {
  if (r.type === 'bool') {
    if (typeof value !== 'boolean') return { ok: false, message: `"${r.field}" takes true or false` };
    return r.function === 'coil' ? { ok: true, bit: value } : { ok: true, words: [value ? 1 : 0] };
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) return { ok: false, message: `"${r.field}" takes a number` };
  if (readingProblem(r, value) === 'out_of_range') return { ok: false, message: `${value} is outside ${r.min ?? '-∞'}..${r.max ?? '∞'} for "${r.field}"` };
  const raw = (value - (r.offset ?? 0)) / (r.scale ?? 1);
  if (r.type === 'float32') {
    const b = Buffer.allocUnsafe(4);
    b.writeFloatBE(raw, 0);
    return { ok: true, words: order(r, b.readUInt16BE(0), b.readUInt16BE(2)) };
  }
  const int = Math.round(raw);
  if (Math.abs(raw - int) > 1e-6 * Math.max(1, Math.abs(raw))) return { ok: false, message: `${value} is not a whole step of ${r.scale ?? 1} for "${r.field}"` };
  const [lo, hi] = RANGE[r.type]!;
  if (int < lo || int > hi) return { ok: false, message: `${value} does not fit ${r.type} for "${r.field}"` };
  if (wordsOf(r.type) === 1) return { ok: true, words: [int & 0xffff] };
  const u = int < 0 ? int + TWO_32 : int;
  return { ok: true, words: order(r, Math.floor(u / TWO_16), u % TWO_16) };
}

function order(r: RegisterDef, high: number, low: number): number[] {
  return r.wordOrder === 'little' ? [low, high] : [high, low];
}

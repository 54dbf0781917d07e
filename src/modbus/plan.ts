/**
 * A register map → the fewest read requests it allows, and the readings of
 * their answers.
 *
 * Registers of one table whose address ranges touch or overlap are read in
 * one request, up to the protocol's limits (Modbus spec §6.1-6.4: 2000 coils
 * or discrete inputs, 125 registers per request). A gap is never bridged:
 * many cheap sensors answer a read over an address they do not define with
 * exception 2 (illegal data address), so reading across a gap could cost the
 * whole block.
 */
import type { Scalar } from '../core/events.js';
import { decodeRegister } from './codec.js';
import { REGISTER_FUNCTIONS, isBitTable, wordsOf, type RegisterDef, type RegisterFunction } from './types.js';

export const MAX_READ_REGISTERS = 125;
export const MAX_READ_BITS = 2000;

export interface ReadBlock {
  function: RegisterFunction;
  /** First address read. */
  start: number;
  /** Registers (or bits) read. */
  count: number;
  /** The map's registers answered by this request. */
  registers: RegisterDef[];
}

export interface PlanLimits { registers?: number; bits?: number }

export function planReads(registers: readonly RegisterDef[], limits: PlanLimits = {}): ReadBlock[] {
  const blocks: ReadBlock[] = [];
  for (const fn of REGISTER_FUNCTIONS) {
    const max = isBitTable(fn) ? limits.bits ?? MAX_READ_BITS : limits.registers ?? MAX_READ_REGISTERS;
    const sorted = registers.filter((r) => r.function === fn).sort((a, b) => a.address - b.address || wordsOf(b.type) - wordsOf(a.type));
    let cur: ReadBlock | null = null;
    for (const r of sorted) {
      const end = r.address + wordsOf(r.type); // exclusive
      if (cur !== null && r.address <= cur.start + cur.count && Math.max(end, cur.start + cur.count) - cur.start <= max) {
        cur.count = Math.max(end, cur.start + cur.count) - cur.start;
        cur.registers.push(r);
      } else {
        cur = { function: fn, start: r.address, count: end - r.address, registers: [r] };
        blocks.push(cur);
      }
    }
  }
  return blocks;
}

/** The readings of one answered block: `data` is modbus-serial's array (register words, or bits for coils/discrete inputs). */
export function blockReadings(block: ReadBlock, data: readonly (number | boolean)[]): Map<RegisterDef, Scalar> {
  const out = new Map<RegisterDef, Scalar>();
  for (const r of block.registers) {
    const at = r.address - block.start;
    if (isBitTable(block.function)) out.set(r, data[at] === true);
    else out.set(r, decodeRegister(r, data as readonly number[], at));
  }
  return out;
}

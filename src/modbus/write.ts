/**
 * Writes to a Modbus device: one value of its register map, by field name,
 * to a holding register (function 6, or 16 for a 32-bit value) or a coil
 * (function 5). The value is encoded as the map decodes it (codec.ts
 * encodeRegister), sent on the device's line in turn with the polls, and the
 * device's echo is checked against what was sent: a write is done when the
 * device confirmed it.
 *
 * Refused before anything is sent: a device that is not a Modbus device or
 * is disabled, a field that is not in its map or lives in a read-only table
 * (input registers, discrete inputs), a value the register cannot hold.
 */
import { Errors, withDetails, type KengError } from '../core/errors.js';
import { encodeRegister } from './codec.js';
import type { ModbusDevices } from './devices.js';
import { EXCEPTION_NAMES, ModbusError, type ModbusLine, type WriteOp } from './line.js';
import type { ModbusMetrics } from './metrics.js';
import type { ModbusSettings, RegisterDef } from './types.js';

export interface WriteResult {
  deviceId: string;
  field: string;
  value: number | boolean;
  function: 'holding' | 'coil';
  address: number;
  /** What was sent: register words, or the coil's state. */
  sent: number[] | boolean;
  /** The device's echo (modbus-serial's reading of the answer): {address, value} (6), {address, length} (16), {address, state} (5). */
  confirmation: Record<string, unknown>;
}

export interface WriteDeps {
  devices: Pick<ModbusDevices, 'get' | 'registers'>;
  isEnabled(deviceId: string): boolean;
  lineFor(settings: ModbusSettings): ModbusLine;
  metrics: ModbusMetrics;
  /**
   * Called when the write has the line, right before it is sent; a throw (a ModbusError) refuses it
   * unsent. The poller checks there that the line is still this node's, and that a forwarded write
   * can still finish before its caller stops waiting.
   */
  beforeSend?: () => void;
}

/** A write checked and encoded, ready to go on the line. */
export interface PreparedWrite { settings: ModbusSettings; register: RegisterDef; op: WriteOp; sent: number[] | boolean }

/** The register a write goes to; KengErrors for what cannot be written. */
export async function writableRegister(deps: Pick<WriteDeps, 'devices'>, deviceId: string, field: string): Promise<{ settings: ModbusSettings; register: RegisterDef }> {
  const settings = await deps.devices.get(deviceId);
  if (!settings) throw Errors.UNPROCESSABLE(`device "${deviceId}" is not a Modbus device`);
  const register = deps.devices.registers(settings).registers.find((r) => r.field === field);
  if (!register) throw Errors.UNPROCESSABLE(`field "${field}" is not in the register map of device "${deviceId}"`);
  if (register.function !== 'holding' && register.function !== 'coil') {
    throw Errors.UNPROCESSABLE(`field "${field}" is ${register.function === 'input' ? 'an input register' : 'a discrete input'}: read-only by the Modbus protocol`);
  }
  return { settings, register };
}

/** Every check a write passes before anything is sent (the same on the node asked and on the node that writes). */
export async function prepareWrite(deps: Pick<WriteDeps, 'devices' | 'isEnabled'>, deviceId: string, field: string, value: number | boolean): Promise<PreparedWrite> {
  const { settings, register } = await writableRegister(deps, deviceId, field);
  if (!deps.isEnabled(deviceId)) throw Errors.CONFLICT(`device "${deviceId}" is disabled; enable it first`);
  const enc = encodeRegister(register, value);
  if (!enc.ok) throw withDetails(Errors.VALIDATION(enc.message), [{ in: 'body', field: 'value', message: enc.message }]);
  const unitId = settings.transport.unitId;
  const op: WriteOp = 'bit' in enc
    ? { fn: 'coil', unitId, address: register.address, bit: enc.bit }
    : { fn: 'holding', unitId, address: register.address, words: enc.words };
  return { settings, register, op, sent: 'bit' in enc ? enc.bit : enc.words };
}

export async function writeField(deps: WriteDeps, deviceId: string, field: string, value: number | boolean): Promise<WriteResult> {
  const { settings, register, op, sent } = await prepareWrite(deps, deviceId, field, value);
  let confirmation: Record<string, unknown>;
  try {
    confirmation = await deps.lineFor(settings).exclusive((io) => {
      deps.beforeSend?.();
      return io.write(op);
    });
  } catch (err) {
    const e = toKengError(err);
    deps.metrics.writes.labels(err instanceof ModbusError ? err.kind : 'error').inc();
    throw e;
  }
  const problem = echoProblem(op, confirmation);
  if (problem) {
    deps.metrics.writes.labels('error').inc();
    throw withDetails(Errors.MODBUS_BAD_ANSWER(problem), { confirmation });
  }
  deps.metrics.writes.labels('ok').inc();
  return { deviceId, field, value, function: op.fn, address: register.address, sent, confirmation };
}

/** The echo must name the address written and the value (6), count (16) or state (5) sent. */
function echoProblem(op: WriteOp, echo: Record<string, unknown>): string | null {
  if (echo.address !== op.address) return `the device confirmed address ${String(echo.address)}, not ${op.address}`;
  if (op.fn === 'coil') return echo.state === op.bit ? null : `the device confirmed the coil ${echo.state ? 'on' : 'off'}`;
  if (op.words.length === 1) return echo.value === op.words[0] ? null : `the device confirmed ${String(echo.value)}, not ${op.words[0]}`;
  return echo.length === op.words.length ? null : `the device confirmed ${String(echo.length)} registers, not ${op.words.length}`;
}

function toKengError(err: unknown): KengError {
  if (!(err instanceof ModbusError)) return Errors.MODBUS_BAD_ANSWER(String((err as Error)?.message ?? err));
  switch (err.kind) {
    case 'timeout': return Errors.MODBUS_TIMEOUT(err.message);
    case 'not_connected': return Errors.MODBUS_UNREACHABLE(err.message);
    case 'exception': {
      const code = err.exceptionCode ?? 0;
      return withDetails(Errors.MODBUS_EXCEPTION(err.message), { exceptionCode: code, meaning: EXCEPTION_NAMES[code] ?? 'unknown' });
    }
    case 'error': return Errors.MODBUS_BAD_ANSWER(err.message);
  }
}

/**
 * Modbus field sensors: the shapes shared by the register maps, the decoder,
 * the poller and the device registry's Modbus side table.
 *
 * Terms follow the Modbus Application Protocol Specification V1.1b3
 * (modbus.org): four tables, each addressed 0..65535 in the PDU ("holding"
 * registers = function 3, "input" registers = 4, "coil" = 1, "discrete"
 * inputs = 2). Addresses here are PDU addresses (0-based), as the sensors'
 * register tables print them in hex (0x0000 = "40001" in PLC notation).
 */

export const REGISTER_FUNCTIONS = ['holding', 'input', 'coil', 'discrete'] as const;
export type RegisterFunction = typeof REGISTER_FUNCTIONS[number];

export const REGISTER_TYPES = ['int16', 'uint16', 'int32', 'uint32', 'float32', 'bool'] as const;
export type RegisterType = typeof REGISTER_TYPES[number];

/**
 * Order of the two 16-bit registers of a 32-bit value. Bytes within a
 * register are always big-endian (Modbus spec §4.2); the spec says nothing
 * about multi-register values, so sensors differ: "big" = high word at the
 * lower address (most sensors, e.g. SenseCAP ONE), "little" = low word first.
 */
export const WORD_ORDERS = ['big', 'little'] as const;
export type WordOrder = typeof WORD_ORDERS[number];

/** One value of a register map: where it is, how to decode it, and what is a plausible reading. */
export interface RegisterDef {
  /** The telemetry field name (same rule as MQTT telemetry, ingest/codec.ts FIELD_NAME_RE). */
  field: string;
  function: RegisterFunction;
  /** PDU address of the first register (or bit). */
  address: number;
  type: RegisterType;
  /** 32-bit types only; default big. */
  wordOrder?: WordOrder;
  /** value = raw × scale + offset (numbers only; defaults 1 and 0). */
  scale?: number;
  offset?: number;
  unit?: string;
  /** Valid range of the decoded value; a reading outside is rejected and counted (reason out_of_range). */
  min?: number;
  max?: number;
}

/** What a device polls: a list of registers (inline in the API, or a shipped map's). */
export interface RegisterMap { registers: RegisterDef[] }

/** A map Keng ships (firmware-protocols/modbus/<name>.json). */
export interface ShippedMap extends RegisterMap {
  name: string;
  title: string;
  /** Where the register table comes from (document and URL). */
  source: string;
  notes?: string[];
  /** The sensor's factory serial settings, as its table gives them (informational). */
  defaults?: { unitId?: number; baudRate?: number; parity?: SerialParity };
}

export const SERIAL_PARITIES = ['none', 'even', 'odd'] as const;
export type SerialParity = typeof SERIAL_PARITIES[number];

export interface TcpTransport { type: 'modbus-tcp'; host: string; port: number; unitId: number }
export interface RtuTransport { type: 'modbus-rtu'; path: string; baudRate: number; parity: SerialParity; unitId: number }
export type ModbusTransport = TcpTransport | RtuTransport;

/** The Modbus settings of one registered device (the modbus_devices side table). */
export interface ModbusSettings {
  deviceId: string;
  transport: ModbusTransport;
  /** A shipped map's name, or an inline map. */
  registerMap: string | RegisterMap;
  pollIntervalSec: number;
}

/** Registers (16-bit words) a value of this type occupies; bits for coils and discrete inputs. */
export function wordsOf(type: RegisterType): number {
  return type === 'int32' || type === 'uint32' || type === 'float32' ? 2 : 1;
}

export function isBitTable(fn: RegisterFunction): boolean {
  return fn === 'coil' || fn === 'discrete';
}

/** The line a transport talks over: one TCP connection per gateway, one port per serial line. */
export function lineKey(t: ModbusTransport): string {
  return t.type === 'modbus-tcp' ? `tcp:${t.host}:${t.port}` : `rtu:${t.path}`;
}

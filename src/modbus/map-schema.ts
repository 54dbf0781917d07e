/**
 * Register maps and Modbus transports as TypeBox schemas: the API publishes
 * them in OpenAPI (POST /api/v1/devices), the map loader checks every shipped
 * map file with them at start, and `checkMap` adds what a schema cannot say
 * (unique fields, types that fit their table, ranges that make sense).
 */
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { Errors, withDetails, type KengError } from '../core/errors.js';
import { StringEnum, shapeErrors, type FieldError } from '../core/schema.js';
import { FIELD_NAME_RE } from '../ingest/codec.js';
import {
  REGISTER_FUNCTIONS, REGISTER_TYPES, SERIAL_PARITIES, WORD_ORDERS, isBitTable, wordsOf,
  type ModbusTransport, type RegisterMap,
} from './types.js';

/** Most registers one map may list (a poll of a larger map would hold a serial line too long). */
export const MAX_MAP_REGISTERS = 256;
/** Shipped map names: the file name without .json. */
export const MAP_NAME_RE = /^[a-z0-9][a-z0-9-]{1,63}$/;

export const Register = Type.Object({
  field: Type.String({ pattern: FIELD_NAME_RE.source, description: 'Telemetry field name of this value' }),
  function: StringEnum(REGISTER_FUNCTIONS, {
    description: 'Modbus table: holding (function 3), input (4), coil (1), discrete input (2)',
  }),
  address: Type.Integer({ minimum: 0, maximum: 65535, description: 'PDU address, 0-based (0x0000 = PLC 40001 for a holding register)' }),
  type: StringEnum(REGISTER_TYPES, { description: '32-bit types take two registers; coils and discrete inputs are bool' }),
  wordOrder: Type.Optional(StringEnum(WORD_ORDERS, {
    description: '32-bit types: big = high word at the lower address (default), little = low word first',
  })),
  scale: Type.Optional(Type.Number({ description: 'value = raw × scale + offset (default 1)' })),
  offset: Type.Optional(Type.Number({ description: 'Added after scaling (default 0)' })),
  unit: Type.Optional(Type.String({ maxLength: 32, description: 'Unit of the scaled value, e.g. °C, %, µS/cm' })),
  min: Type.Optional(Type.Number({ description: 'Smallest valid reading; below it the reading is rejected (out_of_range)' })),
  max: Type.Optional(Type.Number({ description: 'Largest valid reading; above it the reading is rejected (out_of_range)' })),
}, { additionalProperties: false });

export const InlineMap = Type.Object({
  registers: Type.Array(Register, { minItems: 1, maxItems: MAX_MAP_REGISTERS }),
}, { additionalProperties: false, description: 'A register map given with the device' });

export const RegisterMapRef = Type.Union([
  Type.String({ pattern: MAP_NAME_RE.source, description: 'Name of a map Keng ships (GET /api/v1/modbus/maps)' }),
  InlineMap,
]);

export const ShippedMapFile = Type.Object({
  name: Type.String({ pattern: MAP_NAME_RE.source }),
  title: Type.String({ minLength: 1, maxLength: 200 }),
  source: Type.String({ minLength: 1, maxLength: 1000, description: 'The published register table this map follows' }),
  notes: Type.Optional(Type.Array(Type.String({ maxLength: 1000 }))),
  defaults: Type.Optional(Type.Object({
    unitId: Type.Optional(Type.Integer({ minimum: 1, maximum: 247 })),
    baudRate: Type.Optional(Type.Integer({ minimum: 300, maximum: 921_600 })),
    parity: Type.Optional(StringEnum(SERIAL_PARITIES)),
  }, { additionalProperties: false })),
  registers: InlineMap.properties.registers,
}, { additionalProperties: false });

export const TcpTransport = Type.Object({
  type: Type.Literal('modbus-tcp'),
  host: Type.String({ minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9._:-]+$', description: 'Gateway host name or IP address' }),
  port: Type.Integer({ minimum: 1, maximum: 65535, description: 'Gateway TCP port (502 is the Modbus default)' }),
  unitId: Type.Integer({ minimum: 0, maximum: 255, description: 'Unit identifier: the RS485 address of the sensor behind the gateway' }),
}, { additionalProperties: false });

export const RtuTransport = Type.Object({
  type: Type.Literal('modbus-rtu'),
  path: Type.String({ minLength: 2, maxLength: 200, pattern: '^/', description: 'Serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/…' }),
  baudRate: Type.Integer({ minimum: 300, maximum: 921_600, description: 'Every device on one serial line shares it' }),
  parity: StringEnum(SERIAL_PARITIES, { description: 'Every device on one serial line shares it; 8 data bits, 1 stop bit' }),
  unitId: Type.Integer({ minimum: 1, maximum: 247, description: 'RS485 address of the sensor' }),
}, { additionalProperties: false });

export const Transport = Type.Union([TcpTransport, RtuTransport], {
  description: 'How Keng reaches the sensor: a Modbus TCP gateway, or a serial line (RS485 adapter) under Modbus RTU',
});

export const PollIntervalSec = Type.Integer({ minimum: 1, maximum: 86_400, description: 'Seconds between polls' });

export type ShippedMapFileBody = Static<typeof ShippedMapFile>;

const TransportShape = Compile(Transport);
const InlineMapShape = Compile(InlineMap);
const ShippedMapShape = Compile(ShippedMapFile);

/** Shape errors of a shipped map file (each field path prefixed with `where`). */
export function shippedMapErrors(value: unknown): FieldError[] {
  const shape = shapeErrors(ShippedMapShape, value);
  return shape.length ? shape : checkMap(value as RegisterMap);
}

/** Shape and rule errors of an inline map. */
export function inlineMapErrors(value: unknown, where = 'registerMap'): FieldError[] {
  const shape = shapeErrors(InlineMapShape, value).map((e) => ({ ...e, field: join(where, e.field) }));
  return shape.length ? shape : checkMap(value as RegisterMap, where);
}

export function transportErrors(value: unknown, where = 'transport'): FieldError[] {
  return shapeErrors(TransportShape, value).map((e) => ({ ...e, field: join(where, e.field) }));
}

/**
 * What the schema cannot say. Field names are unique (they become telemetry
 * fields); coils and discrete inputs hold single bits, so bool; a word order
 * belongs to 32-bit values; bool values are neither scaled nor ranged; a
 * scale of 0 would make every reading the offset (and a write impossible).
 */
export function checkMap(map: RegisterMap, where = ''): FieldError[] {
  const errors: FieldError[] = [];
  const seen = new Set<string>();
  map.registers.forEach((r, i) => {
    const at = (k: string): string => join(where, `registers[${i}]${k ? '.' + k : ''}`);
    if (seen.has(r.field)) errors.push({ field: at('field'), message: `field "${r.field}" appears twice` });
    seen.add(r.field);
    if (isBitTable(r.function) && r.type !== 'bool') errors.push({ field: at('type'), message: `a ${r.function} holds one bit: type must be bool` });
    if (r.wordOrder !== undefined && wordsOf(r.type) !== 2) errors.push({ field: at('wordOrder'), message: 'wordOrder applies to int32, uint32 and float32 only' });
    if (r.type === 'bool') {
      for (const k of ['scale', 'offset', 'min', 'max'] as const) {
        if (r[k] !== undefined) errors.push({ field: at(k), message: `a bool value has no ${k}` });
      }
    }
    if (r.scale === 0) errors.push({ field: at('scale'), message: 'scale must not be 0' });
    if (r.min !== undefined && r.max !== undefined && r.min > r.max) errors.push({ field: at('min'), message: 'min is above max' });
    if (r.address + wordsOf(r.type) - 1 > 65535) errors.push({ field: at('address'), message: 'the value runs past register 65535' });
  });
  return errors;
}

/** The 400 error for a list of field errors (details = the list). */
export function validationError(errors: FieldError[]): KengError {
  const summary = errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)).join('; ');
  return withDetails(Errors.VALIDATION(summary), errors);
}

/** Throws VALIDATION unless `value` is a valid transport. */
export function assertTransport(value: unknown): ModbusTransport {
  const errors = transportErrors(value);
  if (errors.length) throw validationError(errors);
  return value as ModbusTransport;
}

function join(parent: string, key: string): string {
  if (!parent) return key;
  if (!key) return parent;
  return key.startsWith('[') ? parent + key : `${parent}.${key}`;
}

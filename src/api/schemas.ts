/**
 * Shared TypeBox schemas: request validation, response serialization and the
 * OpenAPI document (/docs) all come from these.
 */
import { Type, type Static, type TSchema, type TUnsafe } from 'typebox';
import { StringEnum } from '../core/schema.js';
import { AREA_CODE_RE, DEVICE_ID_RE } from '../devices/types.js';
import { FIELD_NAME_RE } from '../ingest/codec.js';
import { PollIntervalSec, RegisterMapRef, Transport } from '../modbus/map-schema.js';
import { AGGS } from '../storage/telemetry/types.js';

export { StringEnum };

/** A JSON object map `{ [key]: T }` as `additionalProperties` (OpenAPI 3.0 has no patternProperties). */
export function Dict<S extends TSchema>(value: S, opts: Record<string, unknown> = {}): TUnsafe<Record<string, Static<S>>> {
  return Type.Unsafe<Record<string, Static<S>>>({ type: 'object', additionalProperties: value, ...opts });
}

/** The same schema with a description (OpenAPI uses it as the response's description). */
export function Described<S extends TSchema>(schema: S, description: string): TUnsafe<Static<S>> {
  return Type.Unsafe<Static<S>>({ ...(schema as Record<string, unknown>), description });
}

// Patterns owned by the registry (src/devices/types.ts) and the codec, as JSON Schema strings.
export const DEVICE_ID_PATTERN = DEVICE_ID_RE.source;
export const AREA_CODE_PATTERN = AREA_CODE_RE.source;
export const FIELD_PATTERN = FIELD_NAME_RE.source;

export const Time = Type.String({
  description: 'ISO 8601 with the offset of the configured time zone, e.g. 2025-11-30T07:00:00.000+07:00',
});
export const TimeInput = Type.String({
  minLength: 1, maxLength: 40,
  description: 'ISO 8601 with an offset (2025-11-30T07:00:00+07:00, 2025-11-30T00:00:00Z) or epoch milliseconds (1764460800000). URL-encode "+" as %2B.',
});

export const Scalar = Type.Union([Type.Number(), Type.Boolean(), Type.String()], { description: 'A reading: number, boolean or string' });

export const ErrorReply = Type.Object({
  error: Type.Object({
    code: Type.String({ description: 'Stable KENG_ERR_* code, see docs/errors.md' }),
    message: Type.String(),
    details: Type.Optional(Type.Unknown({ description: 'Machine-readable details, e.g. the failing fields' })),
  }),
}, { $id: 'ErrorReply', description: 'Every error reply has this shape' });

/** Standard error responses for a route, referencing the shared schema. */
export function errorResponses(...statuses: number[]): Record<number, TSchema> {
  const out: Record<number, TSchema> = {};
  for (const s of statuses) out[s] = Type.Ref('ErrorReply', { description: ERROR_DESCRIPTIONS[s] ?? 'Error' });
  return out;
}

/** One error status described for one route (the codes it answers with, and what they mean there). */
export function errorResponse(description: string): TSchema {
  return Type.Ref('ErrorReply', { description });
}

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid request (KENG_ERR_VALIDATION and more specific codes)',
  401: 'Missing or invalid bearer token (KENG_ERR_UNAUTHENTICATED)',
  403: 'Outside the caller\'s role or areas (KENG_ERR_FORBIDDEN)',
  404: 'Not found, or outside the caller\'s areas (KENG_ERR_NOT_FOUND)',
  409: 'Conflict with existing state',
  413: 'Body too large (KENG_ERR_PAYLOAD_TOO_LARGE)',
  415: 'Unsupported content type (KENG_ERR_UNSUPPORTED_MEDIA_TYPE)',
  422: 'Refers to something that does not exist or cannot be processed (KENG_ERR_UNPROCESSABLE)',
  503: 'Not ready or store unavailable',
};

/** Errors any authenticated /api/v1 route may answer. */
export const AUTH_ERRORS = [400, 401, 403] as const;

// ---- areas ----------------------------------------------------------------

export const AreaLevel = StringEnum(['province', 'commune', 'village'] as const, {
  description: 'province → commune → village (two-tier local government since July 2025: no districts)',
});

export const Area = Type.Object({
  code: Type.String({ description: 'Stable area code, e.g. an administrative code' }),
  name: Type.String(),
  level: AreaLevel,
  parent: Type.Union([Type.String(), Type.Null()], { description: 'Parent area code; null for a top-level area' }),
  createdAt: Time,
});

export const NewArea = Type.Object({
  code: Type.String({ pattern: AREA_CODE_PATTERN, description: 'Stable area code (letters, digits, _ . -; up to 64)' }),
  name: Type.String({ minLength: 1, maxLength: 200 }),
  level: AreaLevel,
  parent: Type.Optional(Type.Union([Type.String({ pattern: AREA_CODE_PATTERN }), Type.Null()], {
    description: 'Parent area code: a commune\'s province, a village\'s commune',
  })),
}, { additionalProperties: false });
export type NewAreaBody = Static<typeof NewArea>;

// ---- devices --------------------------------------------------------------

export const DeviceKind = StringEnum(['sensor', 'speaker', 'gateway'] as const);

export const Location = Type.Object({
  lat: Type.Number({ minimum: -90, maximum: 90 }),
  lon: Type.Number({ minimum: -180, maximum: 180 }),
}, { additionalProperties: false });

export const LatestValue = Type.Object({ ts: Time, value: Scalar });

/**
 * The Modbus part of a device (src/modbus): how Keng reaches it and what it
 * reads. A device with these is polled; its readings are its telemetry,
 * exactly like MQTT readings.
 */
const ModbusFields = {
  transport: Type.Optional(Transport),
  registerMap: Type.Optional(RegisterMapRef),
  pollIntervalSec: Type.Optional(PollIntervalSec),
};

/**
 * ThingsBoard-style gateways (src/gateway, firmware-protocols/gateway.md): a
 * gateway's setting and the names it was refused; a sub-device's gateway.
 */
const CreateSubDevices = Type.Boolean({
  description: 'Gateways only: may this gateway create the devices it reports on first sight (in its area)? Default false: '
    + 'names without a device are refused, counted and listed in refusedSubDevices',
});
const GatewayFields = {
  createSubDevices: Type.Optional(CreateSubDevices),
  refusedSubDevices: Type.Optional(Type.Array(Type.Object({
    name: Type.String({ description: 'The device name the gateway used' }),
    reason: Type.String({ description: 'not_allowed (the gateway may not create devices), other_gateway (the name is another gateway\'s), '
      + 'id_taken (the id made from the name belongs to another device), disabled (the sub-device is disabled), create_failed' }),
    count: Type.Integer({ description: 'Messages refused for this name since the server started' }),
    firstAt: Time, lastAt: Time,
  }), { description: 'Gateways only: names refused since the server started (at most 100, most recent first)' })),
  gateway: Type.Optional(Type.Object({
    id: Type.String({ description: 'The gateway the device is behind' }),
    name: Type.String({ description: 'The name the gateway calls it by' }),
  }, { description: 'Sub-devices of a gateway only' })),
};

export const Device = Type.Object({
  id: Type.String(),
  kind: DeviceKind,
  name: Type.String(),
  area: Type.String({ description: 'Area code' }),
  location: Type.Union([Location, Type.Null()]),
  model: Type.Union([Type.String(), Type.Null()]),
  enabled: Type.Boolean({ description: 'false: disabled by staff, refused at CONNECT (CONNACK 5)' }),
  online: Type.Boolean(),
  lastSeen: Type.Union([Time, Type.Null()], { description: 'Last message or connection; null if never seen' }),
  attributes: Dict(Type.Unknown(), { description: 'Client attributes the device reported (firmware, model, capabilities)' }),
  latest: Dict(LatestValue, { description: 'Newest reading of each field' }),
  ...ModbusFields,
  polledBy: Type.Optional(Type.Union([Type.String(), Type.Null()], {
    description: 'Modbus devices in cluster mode: the node (KENG_NODE_ID) polling the device\'s gateway or serial line now, from the line leases '
      + 'in PostgreSQL; null while no node holds the line (none claimed it yet, or its node died and the lease has not expired). Absent on a single node',
  })),
  ...GatewayFields,
});

export const CreatedDevice = Type.Object({
  ...Device.properties,
  secret: Type.String({ description: 'MQTT password (username = device id). Shown only here.' }),
  accessToken: Type.String({ description: 'ThingsBoard-style MQTT username. Shown only here.' }),
});

export const NewDevice = Type.Object({
  id: Type.String({ pattern: DEVICE_ID_PATTERN, description: 'Device id: lower-case letters, digits, _ and -, 2 to 64 characters' }),
  kind: DeviceKind,
  name: Type.String({ minLength: 1, maxLength: 200 }),
  area: Type.String({ pattern: AREA_CODE_PATTERN, description: 'Code of an existing area' }),
  location: Type.Optional(Type.Union([Location, Type.Null()])),
  model: Type.Optional(Type.Union([Type.String({ maxLength: 200 }), Type.Null()])),
  ...ModbusFields,
  createSubDevices: Type.Optional(CreateSubDevices),
  gateway: Type.Optional(Type.Object({
    id: Type.String({ pattern: DEVICE_ID_PATTERN, description: 'The gateway (a device of kind gateway, in the same area)' }),
    name: Type.String({ minLength: 1, maxLength: 200, description: 'The name the gateway calls this device by (its `device` in v1/gateway/... messages)' }),
  }, { additionalProperties: false, description: 'A device behind a ThingsBoard-style gateway, registered by hand instead of created by the gateway' })),
}, { additionalProperties: false });
export type NewDeviceBody = Static<typeof NewDevice>;

export const DeviceChanges = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  area: Type.Optional(Type.String({
    pattern: AREA_CODE_PATTERN,
    description: 'Move the device to this existing area (the caller needs devices.write on both areas); readings from then on carry it',
  })),
  location: Type.Optional(Type.Union([Location, Type.Null()])),
  model: Type.Optional(Type.Union([Type.String({ maxLength: 200 }), Type.Null()])),
  enabled: Type.Optional(Type.Boolean({
    description: 'false disables the device: its connection is closed at once and every CONNECT is refused with CONNACK 5 until it is enabled again',
  })),
  ...ModbusFields,
  createSubDevices: Type.Optional(CreateSubDevices),
}, { additionalProperties: false, minProperties: 1, description: 'Only the fields given change' });
export type DeviceChangesBody = Static<typeof DeviceChanges>;

export const RotatedSecret = Type.Object({
  id: Type.String(),
  secret: Type.String({ description: 'The new MQTT password (username = device id). Shown only here; the old one is refused from now on.' }),
});
export const RotatedToken = Type.Object({
  id: Type.String(),
  accessToken: Type.String({ description: 'The new ThingsBoard-style MQTT username. Shown only here; the old one is refused from now on.' }),
});

export const DeviceIdParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 128, description: 'Device id' }),
});

// ---- telemetry ------------------------------------------------------------

export const Agg = StringEnum(AGGS, { description: 'Aggregate per window (with every)' });

export const HistoryPoint = Type.Object({
  ts: Time,
  values: Dict(Scalar, { description: 'Field name → value (or aggregate)' }),
});

export const History = Type.Object({
  deviceId: Type.String(),
  points: Type.Array(HistoryPoint, { description: 'In time order; with every, one point per window (ts = window start)' }),
  nextFrom: Type.Optional(Type.Union([Time, Type.Null()], {
    description: 'Present when raw points were cut at the limit: pass it as from to get the next page',
  })),
});

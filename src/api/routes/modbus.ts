/**
 * Modbus: the register maps Keng ships (GET /api/v1/modbus/maps) and writes
 * to a Modbus device (POST /api/v1/devices/{id}/modbus/write). Modbus
 * devices themselves are registered, listed and changed with the other
 * devices (routes/devices.ts).
 *
 * A write changes a field device's configuration or an actuator (a pump's
 * coil): it is for those who may change the device (devices.write on its
 * area: operators of that area and admins), checked here, on the node the
 * request reached, before anything else. The Modbus module does the rest
 * (src/modbus/writes.ts): the write, its audit entry whatever its outcome
 * once something was sent, and in cluster mode the forwarding to the node
 * that polls the device's line.
 */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Errors, withDetails } from '../../core/errors.js';
import type { ModbusDevices, WriteRequest, WriteResult } from '../../modbus/index.js';
import { ShippedMapFile } from '../../modbus/index.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, Described, DeviceIdParams, FIELD_PATTERN, errorResponse, errorResponses } from '../schemas.js';
import { visibleDevice } from './devices.js';

/** What the API needs of the Modbus module: the devices' settings and, when the poller runs, writes. */
export interface ModbusApi {
  devices: ModbusDevices;
  /** Audits the write itself (the caller as actor); in cluster mode forwards it to the node polling the line. */
  write?(req: WriteRequest): Promise<WriteResult>;
}

export interface ModbusRouteOptions { ctx: RouteContext; modbus: ModbusApi }

const WriteBody = Type.Object({
  field: Type.String({ pattern: FIELD_PATTERN, description: 'A field of the device\'s register map, in a holding register or a coil' }),
  // A number or a boolean, checked by the handler: as a union the API's type coercion would turn `true` into 1 (or 1 into true).
  value: Type.Unknown({
    description: 'A number, or true/false for a coil or a bool register: the reading to write, as the map reads it (Keng sends (value − offset) / scale)',
  }),
}, { additionalProperties: false, required: ['field', 'value'] });

const Written = Type.Object({
  deviceId: Type.String(),
  field: Type.String(),
  value: Type.Union([Type.Number(), Type.Boolean()]),
  function: Type.Union([Type.Literal('holding'), Type.Literal('coil')]),
  address: Type.Integer({ description: 'PDU address written' }),
  sent: Type.Union([Type.Array(Type.Integer()), Type.Boolean()], { description: 'Register words sent (function 6, or 16 for two), or the coil state (function 5)' }),
  confirmation: Type.Record(Type.String(), Type.Unknown(), {
    description: 'The device\'s echo: {address, value} (function 6), {address, length} (16) or {address, state} (5); checked against what was sent',
  }),
});

export const modbusRoutes: FastifyPluginAsyncTypebox<ModbusRouteOptions> = async (app, { ctx, modbus }) => {
  app.get('/modbus/maps', {
    schema: {
      tags: ['modbus'], summary: 'The register maps Keng ships', security: [{ bearer: [] }],
      description: 'Each map names the published register table it follows (`source`) and the sensor\'s factory serial settings '
        + '(`defaults`). Give a map\'s `name` as `registerMap` when registering a Modbus device (POST /api/v1/devices). '
        + 'How to add one: firmware-protocols/modbus/README.md.',
      response: { 200: Type.Array(ShippedMapFile, { description: 'The shipped maps, by name' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    ctx.policy.assert(principalOf(req), 'devices.read');
    return modbus.devices.catalog.list().sort((a, b) => (a.name < b.name ? -1 : 1));
  });

  app.post('/devices/:id/modbus/write', {
    schema: {
      tags: ['modbus'], summary: 'Write one value of a Modbus device\'s register map', security: [{ bearer: [] }],
      description: 'Sets a holding register (function 6; 16 for a 32-bit value) or a coil (function 5) of the field named, encoded as '
        + 'the map reads it, on the device\'s gateway or serial line in turn with its polls. Answers with the device\'s confirmation; '
        + 'a timeout (504), a Modbus exception (502, `details.exceptionCode`) or an unreachable line (503) is said as such. '
        + 'For operators of the device\'s area and admins; audited. The new value shows in `latest` from the next poll. '
        + 'Cluster mode: any node takes the write and, when another node polls the device\'s line, forwards it to that node over '
        + 'the bus between nodes and waits for its answer (4 × `modbus.requestTimeoutMs` + 2.5 s at most: 6.5 s by default). '
        + 'When the write was sent but no answer came back in time, the answer is 504 `KENG_ERR_MODBUS_OUTCOME_UNKNOWN`: '
        + 'the write may have happened; read the register back before writing again (docs/cluster.md).',
      params: DeviceIdParams, body: WriteBody,
      response: {
        200: Described(Written, 'The device confirmed the write'), ...errorResponses(...AUTH_ERRORS, 404, 409, 413, 415, 422),
        502: errorResponse('The device refused the write (KENG_ERR_MODBUS_EXCEPTION, `details.exceptionCode`) or its answer was not understood (KENG_ERR_MODBUS_BAD_ANSWER)'),
        503: errorResponse('Not written: the device\'s gateway or serial line cannot be reached; in cluster mode also no node polls its line now, or '
          + 'the node polling it cannot be sent the write (KENG_ERR_MODBUS_UNREACHABLE); or the server is not ready (KENG_ERR_NOT_READY)'),
        504: errorResponse('The device did not answer in time (KENG_ERR_MODBUS_TIMEOUT), or, in cluster mode, the write was sent to the node '
          + 'polling its line and no answer came back in time (KENG_ERR_MODBUS_OUTCOME_UNKNOWN, `details.node`, `details.requestId`): '
          + 'either way the write may have happened; read the register back before writing again'),
      },
    },
  }, async (req) => {
    const p = principalOf(req);
    const view = visibleDevice(ctx, p, req.params.id, 'devices.read');
    ctx.policy.assert(p, 'devices.write', view.area);
    const { field } = req.body;
    const value = req.body.value;
    if (typeof value !== 'number' && typeof value !== 'boolean') {
      throw withDetails(Errors.VALIDATION('value must be a number or true/false'), [{ in: 'body', field: 'value', message: 'must be a number or true/false' }]);
    }
    const write = modbus.write;
    if (!write) throw Errors.NOT_READY('Modbus writes are not available on this server');
    // The caller's identity crosses to another node in cluster mode: its kind and id only (what the audit names).
    return write({ actor: { kind: p.kind, id: p.id }, ip: req.ip, deviceId: view.id, field, value, before: { field, value: view.latest[field]?.value ?? null } });
  });
};

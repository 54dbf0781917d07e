/** Devices: register (credentials shown once), list, view, change or move, disable, rotate credentials, delete. */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Errors, withDetails } from '../../core/errors.js';
import type { DeviceView } from '../../devices/types.js';
import type { ModbusDevices, ModbusSettings } from '../../modbus/index.js';
import type { Gateways } from '../../gateway/index.js';
import { formatTime } from '../../core/time.js';
import type { Principal } from '../../auth/types.js';
import type { Action } from '../../auth/policy.js';
import { actorString } from '../../audit/index.js';
import { principalOf, type RouteContext } from '../context.js';
import { createdDeviceDto, deviceDto, freshView, type DeviceDto } from '../present.js';
import {
  AUTH_ERRORS, CreatedDevice, Described, Device, DeviceChanges, DeviceIdParams, DeviceKind, NewDevice, RotatedSecret, RotatedToken, errorResponses,
} from '../schemas.js';

/**
 * The device if the principal may see it (404 otherwise, so existence does
 * not leak); 403 only when the role may not perform `action` at all.
 */
export function visibleDevice(ctx: RouteContext, p: Principal, id: string, action: Action): DeviceView {
  ctx.policy.assert(p, action);
  const view = ctx.registry.view(id);
  if (!view || !ctx.policy.inScope(p, view.area)) throw Errors.NOT_FOUND(`Device "${id}"`);
  return view;
}

export interface DeviceRouteOptions {
  ctx: RouteContext;
  /** Modbus devices (transport, register map, poll interval); absent: the API refuses them (422). */
  modbus?: ModbusDevices;
  /** ThingsBoard-style gateways; absent: `createSubDevices` is refused (422). */
  gateways?: GatewayApi;
}

/** What the device routes need of the gateway module. */
export type GatewayApi = Pick<Gateways, 'mayCreate' | 'setMayCreate' | 'refused' | 'gatewayOf' | 'checkLink' | 'link'>;

const MODBUS_KEYS = ['transport', 'registerMap', 'pollIntervalSec'] as const;

export const deviceRoutes: FastifyPluginAsyncTypebox<DeviceRouteOptions> = async (app, { ctx, modbus, gateways }) => {
  const { registry, policy, tz } = ctx;

  /** The device as the API shows it: with its Modbus settings, or its gateway part, when it has some. */
  const dto = async (v: DeviceView): Promise<DeviceDto> => {
    const s = await modbus?.get(v.id);
    return dtoWith(v, s, s ? await modbus?.lineHolders() : undefined);
  };
  const dtoWith = (v: DeviceView, s: ModbusSettings | undefined, holders?: ReadonlyMap<string, string>): DeviceDto => {
    const d = deviceDto(v, tz);
    const out: DeviceDto = s ? { ...d, transport: s.transport, registerMap: s.registerMap, pollIntervalSec: s.pollIntervalSec } : d;
    if (s && holders && modbus) out.polledBy = modbus.polledBy(s, holders);
    if (gateways) {
      if (v.kind === 'gateway') {
        out.createSubDevices = gateways.mayCreate(v.id);
        out.refusedSubDevices = gateways.refused(v.id).map((r) => ({
          name: r.name, reason: r.reason, count: r.count, firstAt: formatTime(r.firstAt, tz), lastAt: formatTime(r.lastAt, tz),
        }));
      }
      const gw = gateways.gatewayOf(v.id);
      if (gw) out.gateway = gw;
    }
    return out;
  };
  /** `createSubDevices` is a gateway's setting only. */
  const gatewaySetting = (kind: string, value: boolean | undefined): GatewayApi | undefined => {
    if (value === undefined) return undefined;
    if (!gateways) throw Errors.UNPROCESSABLE('gateways are not available on this server');
    if (kind !== 'gateway') {
      throw withDetails(Errors.VALIDATION('createSubDevices is a setting of gateways only'),
        [{ in: 'body', field: 'createSubDevices', message: 'only for a device of kind gateway' }]);
    }
    return gateways;
  };
  const modbusService = (): ModbusDevices => {
    if (!modbus) throw Errors.UNPROCESSABLE('Modbus devices are not available on this server');
    return modbus;
  };

  app.post('/devices', {
    schema: {
      tags: ['devices'], summary: 'Register a device', security: [{ bearer: [] }],
      description: 'Returns the device with its MQTT `secret` (password; username = id) and `accessToken` '
        + '(ThingsBoard-style username). Both are shown only in this reply. '
        + 'A Modbus sensor (reached through a Modbus TCP gateway or a serial line) is registered with `transport` and `registerMap` '
        + '(a map Keng ships, see GET /api/v1/modbus/maps, or an inline map), and `pollIntervalSec` (default 60): Keng polls it, '
        + 'and its readings are its telemetry like MQTT readings (history, latest values, live feed, InfluxDB). '
        + 'A gateway may get `createSubDevices`; a device behind a ThingsBoard-style gateway may be registered by hand with '
        + '`gateway: {id, name}` (firmware-protocols/gateway.md).',
      body: NewDevice,
      response: { 201: Described(CreatedDevice, 'The registered device with its credentials (shown only here)'), ...errorResponses(...AUTH_ERRORS, 409, 413, 415, 422) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    const b = req.body;
    policy.assert(p, 'devices.write', b.area);
    if (!registry.getArea(b.area)) throw Errors.UNPROCESSABLE(`area "${b.area}" does not exist`);
    const d = { id: b.id, kind: b.kind, name: b.name, area: b.area, location: b.location ?? null, model: b.model ?? null };
    const gwSetting = gatewaySetting(b.kind, b.createSubDevices);
    const behind = b.gateway;
    if (behind) {
      // A sub-device registered by hand: behind a gateway the caller may see, in its area, under an unused name.
      if (!gateways) throw Errors.UNPROCESSABLE('gateways are not available on this server');
      const gw = registry.getDevice(behind.id);
      if (!gw || gw.kind !== 'gateway' || !policy.inScope(p, gw.area)) throw Errors.UNPROCESSABLE(`"${behind.id}" is not a gateway in your areas`);
      if (gw.area !== b.area) throw Errors.UNPROCESSABLE(`a device behind gateway "${gw.id}" belongs to its area "${gw.area}"`);
      if (b.kind === 'gateway') throw Errors.UNPROCESSABLE('a gateway cannot be behind another gateway');
      gateways.checkLink(behind.name);
    }
    const isModbus = MODBUS_KEYS.some((k) => b[k] !== undefined);
    if (isModbus && (b.transport === undefined || b.registerMap === undefined)) {
      throw withDetails(Errors.VALIDATION('a Modbus device needs transport and registerMap'),
        [{ in: 'body', field: b.transport === undefined ? 'transport' : 'registerMap', message: 'required for a Modbus device' }]);
    }
    const { device, credentials } = isModbus
      ? await modbusService().create(d, { transport: b.transport, registerMap: b.registerMap, pollIntervalSec: b.pollIntervalSec })
      : await registry.createDevice(d);
    if (gwSetting && b.createSubDevices !== undefined) await gwSetting.setMayCreate(device.id, b.createSubDevices);
    if (behind && gateways) {
      try {
        await gateways.link(device.id, behind.id, behind.name);
      } catch (err) {
        await registry.deleteDevice(device.id); // nothing half-registered
        throw err;
      }
    }
    const view = registry.view(device.id) ?? freshView(device);
    const shown = await dto(view);
    // The audit entry never holds the credentials (and the log redacts secret-looking keys anyway).
    await ctx.audit.record({ actor: p, ip: req.ip, action: 'device.create', target: `device:${device.id}`, after: shown });
    reply.status(201).header('location', `/api/v1/devices/${encodeURIComponent(device.id)}`);
    return { ...createdDeviceDto(view, credentials, tz), ...shown };
  });

  app.get('/devices', {
    schema: {
      tags: ['devices'], summary: 'List devices', security: [{ bearer: [] }],
      description: 'Devices within the caller\'s areas. `area` includes the area\'s subtree.',
      querystring: Type.Object({
        area: Type.Optional(Type.String({ maxLength: 64, description: 'Area code (its subtree included)' })),
        kind: Type.Optional(DeviceKind),
        online: Type.Optional(Type.Boolean({ description: 'true: connected devices only; false: offline only' })),
      }),
      response: { 200: Type.Array(Device, { description: 'Devices within the caller\'s scope' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    const p = principalOf(req);
    policy.assert(p, 'devices.read');
    const { area, kind, online } = req.query;
    const views = registry.views({ area, kind, online });
    // One read of every Modbus device's settings, not one per device.
    const settings = new Map((await modbus?.all() ?? []).map((s) => [s.deviceId, s]));
    const holders = settings.size ? await modbus?.lineHolders() : undefined;
    return policy.filter(p, views, (v) => v.area).map((v) => dtoWith(v, settings.get(v.id), holders));
  });

  app.get('/devices/:id', {
    schema: {
      tags: ['devices'], summary: 'One device with presence, attributes and latest values', security: [{ bearer: [] }],
      params: DeviceIdParams,
      response: { 200: Described(Device, 'The device'), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => dto(visibleDevice(ctx, principalOf(req), req.params.id, 'devices.read')));

  app.patch('/devices/:id', {
    schema: {
      tags: ['devices'], summary: 'Change, move, disable or re-enable a device', security: [{ bearer: [] }],
      description: 'Only the fields given change. `area` moves the device: the caller needs devices.write on the old and the new area, '
        + 'readings from then on carry the new area (its history stays one device). `enabled: false` closes its MQTT connection at once '
        + 'and refuses every CONNECT with CONNACK 5 until `enabled: true`; commands for it stay queued until they expire. '
        + 'For a Modbus device `transport`, `registerMap` and `pollIntervalSec` change how it is polled, from the next poll on '
        + '(`enabled: false` stops polling it). For a gateway, `createSubDevices` says whether it may create the devices it reports '
        + 'on first sight (firmware-protocols/gateway.md).',
      params: DeviceIdParams, body: DeviceChanges,
      response: { 200: Described(Device, 'The device as changed'), ...errorResponses(...AUTH_ERRORS, 404, 413, 415, 422) },
    },
  }, async (req) => {
    const p = principalOf(req);
    const before = visibleDevice(ctx, p, req.params.id, 'devices.read');
    policy.assert(p, 'devices.write', before.area);
    const b = req.body;
    if (b.area !== undefined && b.area !== before.area) {
      policy.assert(p, 'devices.write', b.area);
      if (!registry.getArea(b.area)) throw Errors.UNPROCESSABLE(`area "${b.area}" does not exist`);
    }
    const { transport, registerMap, pollIntervalSec, createSubDevices, ...changes } = b;
    const gwSetting = gatewaySetting(before.kind, createSubDevices);
    const beforeDto = await dto(before);
    // Every check before anything is stored: a refused Modbus change leaves the name or area unchanged too.
    let planned: ModbusSettings | undefined;
    if (transport !== undefined || registerMap !== undefined || pollIntervalSec !== undefined) {
      planned = await modbusService().planUpdate(before.id, { transport, registerMap, pollIntervalSec });
      if (!planned) throw Errors.UNPROCESSABLE(`device "${before.id}" is not a Modbus device`);
    }
    if (Object.keys(changes).length > 0 && !await registry.updateDevice(before.id, changes)) throw Errors.NOT_FOUND(`Device "${before.id}"`);
    if (planned) await modbusService().save(planned);
    if (gwSetting && createSubDevices !== undefined) await gwSetting.setMayCreate(before.id, createSubDevices);
    const after = registry.view(before.id);
    if (!after) throw Errors.NOT_FOUND(`Device "${before.id}"`);
    const shown = await dto(after);
    await ctx.audit.record({
      actor: p, ip: req.ip, action: 'device.update', target: `device:${before.id}`, before: beforeDto, after: shown,
    });
    return shown;
  });

  /**
   * A new secret or access token for a device the caller may change; the connection that logged in
   * with the old one is closed. The audit entry says that it happened, never the new value.
   */
  const rotate = async (req: FastifyRequest, id: string, kind: 'secret' | 'token'): Promise<string> => {
    const p = principalOf(req);
    const view = visibleDevice(ctx, p, id, 'devices.read');
    policy.assert(p, 'devices.write', view.area);
    const value = await registry.rotateCredential(view.id, kind);
    if (value === undefined) throw Errors.NOT_FOUND(`Device "${view.id}"`);
    ctx.broker.kick(view.id, kind);
    await ctx.audit.record({ actor: p, ip: req.ip, action: kind === 'secret' ? 'device.rotate_secret' : 'device.rotate_token', target: `device:${view.id}` });
    return value;
  };

  app.post('/devices/:id/secret', {
    schema: {
      tags: ['devices'], summary: 'Rotate the device secret', security: [{ bearer: [] }],
      description: 'Makes a new MQTT secret (shown only in this reply). The old one is refused from now on, and a connection '
        + 'that logged in with it is closed; a connection made with the access token stays.',
      params: DeviceIdParams,
      response: { 200: Described(RotatedSecret, 'The new secret (shown only here)'), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => ({ id: req.params.id, secret: await rotate(req, req.params.id, 'secret') }));

  app.post('/devices/:id/token', {
    schema: {
      tags: ['devices'], summary: 'Rotate the device access token', security: [{ bearer: [] }],
      description: 'Makes a new ThingsBoard-style access token (shown only in this reply). The old one is refused from now on, and a '
        + 'connection that logged in with it is closed; a connection made with the secret stays.',
      params: DeviceIdParams,
      response: { 200: Described(RotatedToken, 'The new access token (shown only here)'), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => ({ id: req.params.id, accessToken: await rotate(req, req.params.id, 'token') }));

  app.delete('/devices/:id', {
    schema: {
      tags: ['devices'], summary: 'Delete a device', security: [{ bearer: [] }],
      description: 'Removes the device and its credentials, latest values and attributes, and disconnects it from the broker. '
        + 'Its stored readings are never shown under a device registered later with the same id; with the setting '
        + 'telemetry.onDeviceDelete = "purge" they are also removed from every store in the background (audited as device.purge), '
        + 'otherwise ("keep", the default) they stay until retention.',
      params: DeviceIdParams,
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    const view = visibleDevice(ctx, p, req.params.id, 'devices.read');
    policy.assert(p, 'devices.write', view.area);
    const shown = await dto(view); // before the delete: its Modbus settings go with it
    if (!await registry.deleteDevice(view.id, actorString(p))) throw Errors.NOT_FOUND(`Device "${view.id}"`);
    ctx.broker.forget(view.id);
    await ctx.audit.record({ actor: p, ip: req.ip, action: 'device.delete', target: `device:${view.id}`, before: shown,
      after: { readings: ctx.config.telemetry.onDeviceDelete } });
    return reply.status(204).send(null);
  });
};

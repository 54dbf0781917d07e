/**
 * Shared attributes (server-side settings pushed to devices, ThingsBoard's
 * shared scope): per device, and per area for every device below it.
 *
 * Reading is for everyone who sees the device or area (devices.read in its
 * scope); changing is for operators of the area and admins (devices.write),
 * audited (`shared_attributes.update`, before and after of the owner's own
 * values). Out of scope, or unknown: 404, so existence does not leak.
 */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Errors } from '../../core/errors.js';
import { checkPatch, MAX_KEYS, type Owner, type SharedAttributes, type SharedView } from '../../attributes/index.js';
import type { Principal } from '../../auth/types.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, Described, DeviceIdParams, errorResponses } from '../schemas.js';
import { visibleDevice } from './devices.js';

export interface SharedAttributeRouteOptions { ctx: RouteContext; attributes: SharedAttributes }

const AreaCodeParams = Type.Object({ code: Type.String({ minLength: 1, maxLength: 64, description: 'Area code' }) });

const Patch = Type.Record(Type.String(), Type.Unknown(), {
  maxProperties: MAX_KEYS,
  description: 'key: value to set (number, boolean, string up to 1024 characters, or a JSON object/array up to 4 KiB), '
    + 'key: null to delete. Keys as telemetry fields (`^[A-Za-z][A-Za-z0-9_]{0,63}$`); `deleted` and `fw_…` are reserved.',
});

const View = Type.Object({
  shared: Type.Record(Type.String(), Type.Unknown(), { description: 'The effective values: what the device gets (for an area: what its devices inherit)' }),
  sources: Type.Record(Type.String(), Type.String(), { description: 'Where each key comes from: `device`, `area:<code>`, or `firmware` (an assigned update)' }),
  own: Type.Record(Type.String(), Type.Unknown(), { description: 'The values set on this device or area itself (what PUT changes)' }),
});

const present = (view: SharedView, own: Record<string, unknown>) => ({ shared: view.shared, sources: view.sources, own });

export const sharedAttributeRoutes: FastifyPluginAsyncTypebox<SharedAttributeRouteOptions> = async (app, { ctx, attributes }) => {
  const { policy, registry } = ctx;

  const visibleArea = (p: Principal, code: string, action: 'devices.read' | 'devices.write'): string => {
    policy.assert(p, 'devices.read');
    if (!registry.getArea(code) || !policy.inScope(p, code)) throw Errors.NOT_FOUND(`Area "${code}"`);
    policy.assert(p, action, code);
    return code;
  };

  const update = async (p: Principal, ip: string, owner: Owner, body: unknown) => {
    const patch = checkPatch(body);
    // The entry is written in the change's own transaction: both are stored, or neither.
    await attributes.update(owner, patch, ({ before, after }, trx) =>
      ctx.audit.record({ actor: p, ip, action: 'shared_attributes.update', target: `${owner.kind}:${owner.id}`, before, after }, trx));
  };

  const deviceDoc = {
    tags: ['devices'], security: [{ bearer: [] }], params: DeviceIdParams,
  };
  const areaDoc = { tags: ['areas'], security: [{ bearer: [] }], params: AreaCodeParams };

  app.get('/devices/:id/attributes/shared', {
    schema: {
      ...deviceDoc, summary: 'A device\'s shared attributes',
      description: 'The values the device gets on `v1/devices/D/attributes` and under `shared` in attribute responses: its own, '
        + 'else the nearest area\'s above it, and the firmware assigned to it (`fw_…`).',
      response: { 200: Described(View, 'The effective shared attributes'), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    const view = visibleDevice(ctx, principalOf(req), req.params.id, 'devices.read');
    return present(attributes.effective(view.id), attributes.own({ kind: 'device', id: view.id }));
  });

  app.put('/devices/:id/attributes/shared', {
    schema: {
      ...deviceDoc, summary: 'Set or delete a device\'s shared attributes', body: Patch,
      description: 'Merges the body into the device\'s own values (`null` deletes a key: an area\'s value shows through again). '
        + 'A connected device gets the keys whose value changed for it at once. Operators of the device\'s area and admins; audited.',
      response: { 200: Described(View, 'The effective shared attributes after the change'), ...errorResponses(...AUTH_ERRORS, 404, 413, 415, 422) },
    },
  }, async (req) => {
    const p = principalOf(req);
    const view = visibleDevice(ctx, p, req.params.id, 'devices.read');
    policy.assert(p, 'devices.write', view.area);
    const owner: Owner = { kind: 'device', id: view.id };
    await update(p, req.ip, owner, req.body);
    return present(attributes.effective(view.id), attributes.own(owner));
  });

  app.get('/areas/:code/attributes/shared', {
    schema: {
      ...areaDoc, summary: 'An area\'s shared attributes',
      description: 'What every device in the area (and below it) inherits, from this area and the areas above it; '
        + 'a device\'s own value of a key wins.',
      response: { 200: Described(View, 'The inherited shared attributes'), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    const code = visibleArea(principalOf(req), req.params.code, 'devices.read');
    return present(attributes.areaView(code), attributes.own({ kind: 'area', id: code }));
  });

  app.put('/areas/:code/attributes/shared', {
    schema: {
      ...areaDoc, summary: 'Set or delete an area\'s shared attributes', body: Patch,
      description: 'Merges the body into the area\'s own values (`null` deletes a key). Every connected device below the area '
        + 'whose effective value changed gets it at once. Operators of the area and admins; audited.',
      response: { 200: Described(View, 'The inherited shared attributes after the change'), ...errorResponses(...AUTH_ERRORS, 404, 413, 415, 422) },
    },
  }, async (req) => {
    const p = principalOf(req);
    const code = visibleArea(p, req.params.code, 'devices.write');
    const owner: Owner = { kind: 'area', id: code };
    await update(p, req.ip, owner, req.body);
    return present(attributes.areaView(code), attributes.own(owner));
  });
};

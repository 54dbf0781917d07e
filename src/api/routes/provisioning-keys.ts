/**
 * Provisioning keys (OpenAPI at /docs, tag devices): who may register devices
 * in an area (policy devices.write: operators of that area, admins) may issue
 * a key and secret that lets ThingsBoard firmware register itself there
 * (firmware-protocols/provisioning.md), list the keys of their areas and
 * revoke them. The secret is shown once, in the 201 reply; keys outside the
 * caller's areas answer 404.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { Errors } from '../../core/errors.js';
import { formatTime, formatTimeOrNull, parseTime } from '../../core/time.js';
import type { ProvisioningKey, ProvisioningService } from '../../devices/provisioning.js';
import type { Principal } from '../../auth/types.js';
import { principalOf, type RouteContext } from '../context.js';
import { AREA_CODE_PATTERN, AUTH_ERRORS, Described, DeviceKind, Time, TimeInput, errorResponses } from '../schemas.js';

const KeyMeta = Type.Object({
  id: Type.String(),
  provisionDeviceKey: Type.String({ description: 'The public key firmware sends as provisionDeviceKey' }),
  area: Type.String({ description: 'Devices it registers go to this area' }),
  kind: DeviceKind,
  model: Type.Union([Type.String(), Type.Null()]),
  label: Type.Union([Type.String(), Type.Null()]),
  maxDevices: Type.Union([Type.Integer(), Type.Null()], { description: 'Devices it may register; null: no limit until it expires' }),
  used: Type.Integer({ description: 'Devices it has registered' }),
  expiresAt: Type.Union([Time, Type.Null()]),
  createdBy: Type.String(),
  createdAt: Time,
  revoked: Type.Boolean(),
  revokedAt: Type.Union([Time, Type.Null()]),
});

const CreatedKey = Type.Object({
  ...KeyMeta.properties,
  provisionDeviceSecret: Type.String({ description: 'Shown only in this reply (stored hashed)' }),
});

const NewKey = Type.Object({
  area: Type.String({ pattern: AREA_CODE_PATTERN }),
  expiresAt: Type.Optional(Type.Union([TimeInput, Type.Integer({ minimum: 0 }), Type.Null()], {
    description: 'When the key stops working; default 30 days from now; null: never',
  })),
  maxDevices: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 100_000 }), Type.Null()], { description: 'Default: no limit' })),
  kind: Type.Optional(DeviceKind),
  model: Type.Optional(Type.Union([Type.String({ maxLength: 128 }), Type.Null()])),
  label: Type.Optional(Type.Union([Type.String({ maxLength: 128 }), Type.Null()])),
}, { additionalProperties: false });

const KeyIdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

function keyDto(k: ProvisioningKey, tz: string) {
  return {
    id: k.id, provisionDeviceKey: k.key, area: k.area, kind: k.kind, model: k.model, label: k.label, maxDevices: k.maxDevices, used: k.used,
    expiresAt: formatTimeOrNull(k.expiresAt, tz), createdBy: k.createdBy, createdAt: formatTime(k.createdAt, tz),
    revoked: k.revokedAt !== null, revokedAt: formatTimeOrNull(k.revokedAt, tz),
  };
}

export const provisioningKeyRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext; provisioning: ProvisioningService }> = async (app, { ctx, provisioning }) => {
  const { policy, tz } = ctx;

  /** The key if the caller may manage it (404 otherwise: existence does not leak). */
  const visible = async (p: Principal, id: string): Promise<ProvisioningKey> => {
    policy.assert(p, 'devices.write');
    const k = await provisioning.get(id);
    if (!k || !policy.can(p, 'devices.write', k.area)) throw Errors.NOT_FOUND(`Provisioning key "${id}"`);
    return k;
  };

  app.post('/provisioning-keys', {
    schema: {
      tags: ['devices'], summary: 'Issue a provisioning key (operators of the area, admins)', security: [{ bearer: [] }],
      description: 'ThingsBoard firmware that sends this key and secret in its provision request (MQTT, username `provision`) '
        + 'registers itself in `area` as a device of `kind` and gets its access token. The secret is shown only in this reply.',
      body: NewKey,
      response: { 201: Described(CreatedKey, 'The key, its secret (shown only here) and its settings'), ...errorResponses(...AUTH_ERRORS, 413, 415, 422) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    const b = req.body;
    policy.assert(p, 'devices.write', b.area);
    const expiresAt = b.expiresAt === undefined || b.expiresAt === null ? b.expiresAt : parseTime(b.expiresAt, 'expiresAt');
    const { key, secret } = await provisioning.issue(
      { area: b.area, expiresAt, maxDevices: b.maxDevices, kind: b.kind, model: b.model, label: b.label }, { actor: p, ip: req.ip },
    );
    reply.status(201).header('cache-control', 'no-store').header('location', `/api/v1/provisioning-keys/${key.id}`);
    return { ...keyDto(key, tz), provisionDeviceSecret: secret };
  });

  app.get('/provisioning-keys', {
    schema: {
      tags: ['devices'], summary: 'List the provisioning keys of your areas (never their secrets)', security: [{ bearer: [] }],
      response: { 200: Type.Array(KeyMeta, { description: 'Newest first, revoked and expired ones included' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    const p = principalOf(req);
    policy.assert(p, 'devices.write');
    return policy.filter(p, await provisioning.list(), (k) => k.area).map((k) => keyDto(k, tz));
  });

  app.get('/provisioning-keys/:id', {
    schema: {
      tags: ['devices'], summary: 'One provisioning key', security: [{ bearer: [] }],
      params: KeyIdParams,
      response: { 200: KeyMeta, ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => keyDto(await visible(principalOf(req), req.params.id), tz));

  app.delete('/provisioning-keys/:id', {
    schema: {
      tags: ['devices'], summary: 'Revoke a provisioning key', security: [{ bearer: [] }],
      description: 'Firmware sending it is answered NOT_FOUND from then on; devices it registered stay.',
      params: KeyIdParams,
      response: { 204: Type.Null({ description: 'Revoked (also when it was revoked already)' }), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    await visible(p, req.params.id);
    await provisioning.revoke(req.params.id, { actor: p, ip: req.ip });
    return reply.status(204).send(null);
  });
};

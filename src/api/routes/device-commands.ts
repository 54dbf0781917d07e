/**
 * Commands to one device through the RPC service (firmware-protocols/
 * device-protocol.md §11, §12.3): a loudspeaker's volume, and the state of a
 * command sent to a device. Like every command, one for an offline speaker is
 * kept and sent when it reconnects, until it expires.
 *
 * Scope (docs/roles.md): the device must be visible to the caller (404
 * otherwise); setting the volume is loudspeaker work (broadcasts.write on the
 * speaker's area), reading a command's state is broadcasts.read.
 */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Errors } from '../../core/errors.js';
import { SET_VOLUME_METHOD } from '../../core/protocol.js';
import { formatTimeOrNull, formatTime } from '../../core/time.js';
import { redactStreamUrls } from '../../broadcast/stream-url.js';
import type { RpcRequest, RpcService } from '../../rpc/index.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, Described, DeviceIdParams, StringEnum, Time, errorResponses } from '../schemas.js';
import { visibleDevice } from './devices.js';

export interface DeviceCommandRouteOptions { ctx: RouteContext; rpc: RpcService }

/** A command sent less long ago than this is worth keeping for an offline speaker, whatever broadcast.offlineValiditySec says. */
const MIN_VALIDITY_SEC = 60;

const Command = Type.Object({
  id: Type.String({ description: 'Request id (the R of rpc/request/R)' }),
  deviceId: Type.String(),
  method: Type.String(),
  params: Type.Record(Type.String(), Type.Unknown()),
  state: StringEnum(['queued', 'sent', 'answered', 'expired', 'cancelled'] as const, {
    description: 'queued: the device is offline (sent when it reconnects, until expiresAt); sent: published, no answer yet; '
      + 'answered: see response; expired: not sent or not answered in time',
  }),
  createdAt: Time,
  expiresAt: Time,
  sentAt: Type.Union([Time, Type.Null()]),
  answeredAt: Type.Union([Time, Type.Null()]),
  response: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], {
    description: 'The device\'s answer, e.g. {"status": "ok", "volume": 65} (device protocol §11.2)',
  }),
});

const SetVolume = Type.Object({
  volume: Type.Integer({ minimum: 0, maximum: 100, description: 'Speaker volume, 0-100' }),
  validForSec: Type.Optional(Type.Integer({
    minimum: 1, maximum: 86_400,
    description: `How long an offline speaker may still get the command. Default: broadcast.offlineValiditySec (at least ${MIN_VALIDITY_SEC} s)`,
  })),
}, { additionalProperties: false });

const CommandParams = Type.Object({
  id: DeviceIdParams.properties.id,
  requestId: Type.String({ minLength: 1, maxLength: 128, description: 'Request id of the command' }),
});

function commandDto(r: RpcRequest, tz: string) {
  return {
    id: r.id, deviceId: r.deviceId, method: r.method, params: redactStreamUrls(r.params), state: r.state,
    createdAt: formatTime(r.createdAt, tz), expiresAt: formatTime(r.expiresAt, tz),
    sentAt: formatTimeOrNull(r.sentAt, tz), answeredAt: formatTimeOrNull(r.answeredAt, tz), response: r.response,
  };
}

export const deviceCommandRoutes: FastifyPluginAsyncTypebox<DeviceCommandRouteOptions> = async (app, { ctx, rpc }) => {
  const { policy, tz } = ctx;

  app.post('/devices/:id/volume', {
    schema: {
      tags: ['devices'], summary: 'Set a loudspeaker\'s volume', security: [{ bearer: [] }],
      description: 'Sends `speaker.setVolume` (device protocol §12.3). An offline speaker gets it when it reconnects, until `expiresAt`. '
        + 'The answer shows in `GET /api/v1/devices/{id}/commands/{requestId}` (the Location header), and the speaker reports '
        + 'its new `volume` in its telemetry (`latest.volume` of the device).',
      params: DeviceIdParams, body: SetVolume,
      response: { 202: Described(Command, 'The command, sent or queued'), ...errorResponses(...AUTH_ERRORS, 404, 413, 415, 422, 503) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    const view = visibleDevice(ctx, p, req.params.id, 'devices.read');
    policy.assert(p, 'broadcasts.write', view.area);
    if (view.kind !== 'speaker') throw Errors.UNPROCESSABLE(`device "${view.id}" is a ${view.kind}, not a speaker`);
    const validForSec = req.body.validForSec ?? Math.max(MIN_VALIDITY_SEC, ctx.config.broadcast.offlineValiditySec);
    const { volume } = req.body;
    const { requestId } = await rpc.send(view.id, SET_VOLUME_METHOD, { volume }, { expiresAt: ctx.clock.now() + validForSec * 1000 });
    const cmd = await rpc.get(requestId);
    if (!cmd) throw Errors.INTERNAL();
    await ctx.audit.record({ actor: p, ip: req.ip, action: 'device.set_volume', target: `device:${view.id}`, after: { volume, requestId, state: cmd.state } });
    reply.status(202).header('location', `/api/v1/devices/${encodeURIComponent(view.id)}/commands/${encodeURIComponent(requestId)}`);
    return commandDto(cmd, tz);
  });

  app.get('/devices/:id/commands/:requestId', {
    schema: {
      tags: ['devices'], summary: 'One command sent to a device, with its state and the device\'s answer', security: [{ bearer: [] }],
      params: CommandParams,
      response: { 200: Described(Command, 'The command'), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    const p = principalOf(req);
    const view = visibleDevice(ctx, p, req.params.id, 'devices.read');
    policy.assert(p, 'broadcasts.read', view.area);
    const cmd = await rpc.get(req.params.requestId);
    if (!cmd || cmd.deviceId !== view.id) throw Errors.NOT_FOUND(`Command "${req.params.requestId}"`);
    return commandDto(cmd, tz);
  });
};

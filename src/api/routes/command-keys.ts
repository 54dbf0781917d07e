/**
 * The command keys (OpenAPI at /docs, tag devices; firmware-protocols/device-protocol.md §11.6):
 * the Ed25519 public keys speakers use to verify signed `broadcast.play` / `broadcast.stop`.
 *
 * Reading them is open to every role (they are public keys; policy commandKeys.read). Rotating and
 * retiring are admin only (commandKeys.write) and audited: they decide which commands every
 * loudspeaker of the installation obeys.
 */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { CommandKeyInfo, CommandKeys } from '../../rpc/index.js';
import { COMMAND_KEY_ALG } from '../../core/protocol.js';
import { formatTime } from '../../core/time.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, Described, StringEnum, Time, errorResponses } from '../schemas.js';

export interface CommandKeyRouteOptions { ctx: RouteContext; keys: CommandKeys }

const CommandKey = Type.Object({
  kid: Type.String({ description: 'Key id: the `kid` of the commands it signs (hex of the first 8 bytes of SHA-256 of the raw public key)' }),
  alg: StringEnum([COMMAND_KEY_ALG] as const, { description: 'Always Ed25519 (RFC 8032)' }),
  publicKey: Type.String({ description: 'base64url (no padding) of the 32 raw bytes of the Ed25519 public key' }),
  active: Type.Boolean({ description: 'Signs new commands; the others were rotated out and still verify until retired' }),
  createdAt: Time,
});

const KidParams = Type.Object({ kid: Type.String({ minLength: 1, maxLength: 64, pattern: '^[0-9a-f]+$', description: 'Key id' }) });

export const commandKeyRoutes: FastifyPluginAsyncTypebox<CommandKeyRouteOptions> = async (app, { ctx, keys }) => {
  const { policy, tz } = ctx;
  const dto = (k: CommandKeyInfo) => ({ kid: k.kid, alg: k.alg, publicKey: k.publicKey, active: k.active, createdAt: formatTime(k.createdAt, tz) });

  app.get('/command-keys', {
    schema: {
      tags: ['devices'], summary: 'The public keys speakers use to verify signed commands', security: [{ bearer: [] }],
      description: 'Device protocol §11.6: `broadcast.play` and `broadcast.stop` carry `signed`, `sig` (Ed25519) and `kid`. '
        + 'A speaker that verifies accepts a signature by any key listed here. The active key comes first.',
      response: { 200: Type.Array(CommandKey, { description: 'Active key first, then rotated-out keys not yet retired' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'commandKeys.read');
    return keys.list().map(dto);
  });

  app.post('/command-keys/rotate', {
    schema: {
      tags: ['devices'], summary: 'Rotate the command key (admin)', security: [{ bearer: [] }],
      description: 'A new key signs every command from now on (re-sends too). The previous keys stay listed, and so valid at the speakers, '
        + 'until retired: give the speakers the new key, then retire the old one. In cluster mode the ring is shared: every node lists '
        + 'the new key and signs with it within about a second.',
      response: { 201: Described(CommandKey, 'The new active key'), ...errorResponses(...AUTH_ERRORS, 503) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'commandKeys.write');
    const before = keys.activeKid;
    const k = await keys.rotate();
    await ctx.audit.record({ actor: p, ip: req.ip, action: 'command_key.rotate', target: `command_key:${k.kid}`, before: { active: before }, after: dto(k) });
    reply.status(201);
    return dto(k);
  });

  app.delete('/command-keys/:kid', {
    schema: {
      tags: ['devices'], summary: 'Retire a rotated-out command key (admin)', security: [{ bearer: [] }],
      description: 'The key is no longer listed and its private part is deleted; speakers that refresh their key list stop accepting it. '
        + 'The active key cannot be retired (409 KENG_ERR_COMMAND_KEY_ACTIVE): rotate first.',
      params: KidParams,
      response: { 204: Type.Null({ description: 'Retired' }), ...errorResponses(...AUTH_ERRORS, 404, 409) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'commandKeys.write');
    const k = await keys.retire(req.params.kid);
    await ctx.audit.record({ actor: p, ip: req.ip, action: 'command_key.retire', target: `command_key:${k.kid}`, before: dto(k) });
    return reply.status(204).send(null);
  });
};

/**
 * Firmware updates (OTA): packages (admin uploads: firmware.write), staged
 * rollouts to devices (devices.write on every device's area), progress, a
 * device's update state, and the signed download link (public route, the
 * signature is the authorisation). Every change is audited in the transaction
 * of the change itself (both commit, or neither).
 */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Errors } from '../../core/errors.js';
import { formatTime, formatTimeOrNull } from '../../core/time.js';
import { CHECKSUM_ALGORITHMS, FW_STATES, MAX_PACKAGE_BYTES, type Firmware, type FirmwarePackage, type FirmwareView, type Rollout } from '../../firmware/index.js';
import type { Principal } from '../../auth/types.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, Described, DeviceIdParams, StringEnum, Time, errorResponses } from '../schemas.js';
import { visibleDevice } from './devices.js';

export interface FirmwareRouteOptions { ctx: RouteContext; firmware: Firmware; linkBase?: () => string }

const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

const Package = Type.Object({
  id: Type.String(),
  title: Type.String({ description: 'What firmware compares with its current_fw_title (fw_title)' }),
  version: Type.String({ description: 'fw_version' }),
  model: Type.Union([Type.String(), Type.Null()], { description: 'The device model it is for (informative)' }),
  size: Type.Integer({ description: 'Bytes (fw_size)' }),
  checksumAlgorithm: StringEnum(CHECKSUM_ALGORITHMS),
  checksum: Type.String({ description: 'Lower-case hex (fw_checksum)' }),
  sha256: Type.String(),
  createdAt: Time,
  createdBy: Type.Union([Type.String(), Type.Null()]),
  url: Type.String({ description: 'Signed download link (no token needed), valid until urlExpiresAt' }),
  urlExpiresAt: Time,
});

const UploadQuery = Type.Object({
  title: Type.String({ minLength: 1, maxLength: 64 }),
  version: Type.String({ minLength: 1, maxLength: 64 }),
  model: Type.Optional(Type.String({ maxLength: 64 })),
  checksumAlgorithm: Type.Optional(StringEnum(CHECKSUM_ALGORITHMS, { description: 'Default SHA256' })),
  checksum: Type.Optional(Type.String({ maxLength: 128, description: 'When given, the upload must hash to it (422 otherwise)' })),
});

const Target = Type.Object({
  areas: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 200, description: 'Every device in these areas and below' })),
  devices: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { maxItems: 10_000 })),
}, { additionalProperties: false });

const NewRollout = Type.Object({
  packageId: Type.String({ minLength: 1, maxLength: 64 }),
  target: Target,
  percent: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: 'First stage: this share of the devices (default 100: all at once)' })),
}, { additionalProperties: false });

const StateCounts = Type.Record(Type.String(), Type.Integer(), { description: `Devices by state: PENDING (assigned, nothing reported since), ${FW_STATES.join(', ')}` });

const RolloutItem = Type.Object({
  deviceId: Type.String(),
  stage: StringEnum(['first', 'rest'] as const),
  assigned: Type.Boolean({ description: 'The device has the package as its fw_* attributes' }),
  state: Type.String({ description: 'NOT_YET (rest, before the rollout continues), PENDING, or the fw_state it reported' }),
  error: Type.Union([Type.String(), Type.Null()]),
  currentVersion: Type.Union([Type.String(), Type.Null()]),
});

const RolloutDto = Type.Object({
  id: Type.String(),
  packageId: Type.String(),
  title: Type.String(),
  version: Type.String(),
  percent: Type.Integer(),
  stage: StringEnum(['first', 'all'] as const, { description: 'first: only the first share has it; all: every device' }),
  createdAt: Time,
  completedAt: Type.Union([Time, Type.Null()]),
  total: Type.Integer({ description: 'Devices of the rollout (those the caller sees)' }),
  firstStage: Type.Integer({ description: 'Of them, in the first stage' }),
  states: StateCounts,
  devices: Type.Array(RolloutItem),
});

const DeviceFirmwareDto = Type.Object({
  deviceId: Type.String(),
  packageId: Type.Union([Type.String(), Type.Null()]),
  rolloutId: Type.Union([Type.String(), Type.Null()]),
  state: Type.String({ description: 'NONE, PENDING, or the fw_state reported (UPDATED once it runs the package)' }),
  error: Type.Union([Type.String(), Type.Null()]),
  currentTitle: Type.Union([Type.String(), Type.Null()]),
  currentVersion: Type.Union([Type.String(), Type.Null()]),
  reportedAt: Type.Union([Time, Type.Null()]),
});

export const firmwareRoutes: FastifyPluginAsyncTypebox<FirmwareRouteOptions> = async (app, { ctx, firmware, linkBase }) => {
  const { policy, registry, tz } = ctx;

  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: MAX_PACKAGE_BYTES }, (_req, body, done) => done(null, body));

  const packageDto = (p: FirmwarePackage) => {
    const link = firmware.signedPath(p.id);
    return {
      id: p.id, title: p.title, version: p.version, model: p.model, size: p.size, checksumAlgorithm: p.checksumAlgorithm, checksum: p.checksum,
      sha256: p.sha256, createdAt: formatTime(p.createdAt, tz), createdBy: p.createdBy,
      url: `${linkBase?.() ?? ''}${link.path}`, urlExpiresAt: formatTime(link.expiresAt, tz),
    };
  };

  /** A rollout the caller sees: one of its areas is in scope (else 404); its devices filtered to the scope. */
  const rolloutDto = (p: Principal, r: Rollout, view: FirmwareView) => {
    const pkg = view.package(r.packageId);
    const scope = policy.scope(p);
    const states: Record<string, number> = {};
    const devices = r.devices.flatMap((deviceId, i) => {
      const d = registry.getDevice(deviceId);
      if (!d || !policy.inScope(p, d.area, scope)) return [];
      const f = view.device(deviceId);
      const assigned = f.rolloutId === r.id;
      const state = assigned ? f.state : r.stage === 'first' && i >= r.firstCount ? 'NOT_YET' : f.state === 'UPDATED' ? 'UPDATED' : 'REPLACED';
      states[state] = (states[state] ?? 0) + 1;
      return [{ deviceId, stage: i < r.firstCount ? 'first' as const : 'rest' as const, assigned, state, error: f.error, currentVersion: f.currentVersion }];
    });
    return {
      id: r.id, packageId: r.packageId, title: pkg?.title ?? '', version: pkg?.version ?? '', percent: r.percent, stage: r.stage,
      createdAt: formatTime(r.createdAt, tz), completedAt: formatTimeOrNull(r.completedAt, tz),
      total: devices.length, firstStage: devices.filter((d) => d.stage === 'first').length, states, devices,
    };
  };

  const visibleRollout = async (p: Principal, id: string): Promise<Rollout> => {
    policy.assert(p, 'devices.read');
    const r = await firmware.getRollout(id);
    const scope = policy.scope(p);
    if (!r || !r.areas.some((a) => policy.inScope(p, a, scope))) throw Errors.NOT_FOUND(`Rollout "${id}"`);
    return r;
  };

  app.post('/firmware/packages', {
    schema: {
      tags: ['firmware'], summary: 'Upload a firmware package', security: [{ bearer: [] }], querystring: UploadQuery,
      consumes: ['application/octet-stream'],
      description: `The binary as the body (application/octet-stream, at most ${MAX_PACKAGE_BYTES} bytes); title and version are what `
        + 'ThingsBoard firmware compares with its own (fw_title, fw_version). Admin only; audited.',
      response: { 201: Described(Package, 'The stored package'), ...errorResponses(...AUTH_ERRORS, 409, 413, 415, 422) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'firmware.write');
    const body = req.body as unknown;
    if (!Buffer.isBuffer(body)) throw Errors.UNSUPPORTED_MEDIA_TYPE('send the binary as application/octet-stream');
    const q = req.query;
    const input = { title: q.title, version: q.version, model: q.model ?? null, checksumAlgorithm: q.checksumAlgorithm, checksum: q.checksum };
    const pkg = await firmware.addPackage(input, body, `${p.kind}:${p.id}`, (trx, added) => {
      const { url: _u, urlExpiresAt: _e, ...audited } = packageDto(added);
      return ctx.audit.record({ actor: p, ip: req.ip, action: 'firmware.upload', target: `firmware:${added.id}`, after: audited }, trx);
    });
    reply.status(201);
    return packageDto(pkg);
  });

  app.get('/firmware/packages', {
    schema: {
      tags: ['firmware'], summary: 'List firmware packages', security: [{ bearer: [] }],
      response: { 200: Type.Array(Package), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'devices.read');
    return (await firmware.listPackages()).map(packageDto);
  });

  app.get('/firmware/packages/:id', {
    schema: {
      tags: ['firmware'], summary: 'A firmware package, with a fresh signed download link', security: [{ bearer: [] }], params: IdParams,
      response: { 200: Package, ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'devices.read');
    const pkg = await firmware.getPackage(req.params.id);
    if (!pkg) throw Errors.NOT_FOUND(`Firmware package "${req.params.id}"`);
    return packageDto(pkg);
  });

  app.delete('/firmware/packages/:id', {
    schema: {
      tags: ['firmware'], summary: 'Delete a firmware package', security: [{ bearer: [] }], params: IdParams,
      description: 'Refused (409) while a rollout names it. Admin only; audited.',
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(...AUTH_ERRORS, 404, 409) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'firmware.write');
    const pkg = await firmware.getPackage(req.params.id);
    const audit = (trx: Parameters<typeof ctx.audit.record>[1]) => ctx.audit.record({
      actor: p, ip: req.ip, action: 'firmware.delete', target: `firmware:${pkg!.id}`, before: { title: pkg!.title, version: pkg!.version },
    }, trx);
    if (!pkg || !(await firmware.deletePackage(pkg.id, audit))) throw Errors.NOT_FOUND(`Firmware package "${req.params.id}"`);
    reply.status(204);
  });

  app.post('/firmware/rollouts', {
    schema: {
      tags: ['firmware'], summary: 'Roll a package out to devices, in two stages', security: [{ bearer: [] }], body: NewRollout,
      description: 'The devices of `target` (areas include their subtrees) get the package as their fw_* shared attributes: the first '
        + '`percent` of them now (a stable pseudo-random pick), the rest on POST /firmware/rollouts/{id}/continue. Needs devices.write '
        + 'on every device; audited.',
      response: { 201: Described(RolloutDto, 'The rollout and its progress'), ...errorResponses(...AUTH_ERRORS, 404, 413, 415, 422) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'devices.write');
    const { packageId, target, percent = 100 } = req.body;
    const ids = new Set<string>();
    for (const code of target.areas ?? []) {
      if (!registry.getArea(code) || !policy.inScope(p, code)) throw Errors.NOT_FOUND(`Area "${code}"`);
      for (const d of registry.listDevices({ area: code })) ids.add(d.id);
    }
    for (const id of target.devices ?? []) ids.add(visibleDevice(ctx, p, id, 'devices.read').id);
    for (const id of ids) policy.assert(p, 'devices.write', registry.getDevice(id)!.area);
    const pkg = await firmware.getPackage(packageId);
    const r = await firmware.createRollout(packageId, [...ids], percent, `${p.kind}:${p.id}`, (trx, made) => ctx.audit.record({
      actor: p, ip: req.ip, action: 'firmware.rollout', target: `rollout:${made.id}`,
      after: { packageId, title: pkg?.title ?? '', version: pkg?.version ?? '', percent, devices: made.devices.length, firstStage: made.firstCount, target },
    }, trx));
    reply.status(201);
    return rolloutDto(p, r, await firmware.view());
  });

  app.post('/firmware/rollouts/:id/continue', {
    schema: {
      tags: ['firmware'], summary: 'Second stage: the rest of the devices get the package', security: [{ bearer: [] }], params: IdParams,
      description: 'Needs devices.write on every device of the rollout; 409 when it already reached all. Audited.',
      response: { 200: Described(RolloutDto, 'The rollout and its progress'), ...errorResponses(...AUTH_ERRORS, 404, 409) },
    },
  }, async (req) => {
    const p = principalOf(req);
    const r = await visibleRollout(p, req.params.id);
    for (const a of r.areas) policy.assert(p, 'devices.write', a);
    const done = await firmware.continueRollout(r.id, (trx) => ctx.audit.record({
      actor: p, ip: req.ip, action: 'firmware.rollout_continue', target: `rollout:${r.id}`, after: { devices: r.devices.length - r.firstCount },
    }, trx));
    return rolloutDto(p, done, await firmware.view());
  });

  app.get('/firmware/rollouts', {
    schema: {
      tags: ['firmware'], summary: 'Rollouts touching the caller\'s areas, newest first', security: [{ bearer: [] }],
      response: { 200: Type.Array(RolloutDto), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    const p = principalOf(req);
    policy.assert(p, 'devices.read');
    const scope = policy.scope(p);
    const [rollouts, view] = await Promise.all([firmware.listRollouts(), firmware.view()]);
    return rollouts.filter((r) => r.areas.some((a) => policy.inScope(p, a, scope))).map((r) => rolloutDto(p, r, view));
  });

  app.get('/firmware/rollouts/:id', {
    schema: {
      tags: ['firmware'], summary: 'A rollout\'s progress', security: [{ bearer: [] }], params: IdParams,
      response: { 200: RolloutDto, ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    const p = principalOf(req);
    const r = await visibleRollout(p, req.params.id);
    return rolloutDto(p, r, await firmware.view());
  });

  app.get('/devices/:id/firmware', {
    schema: {
      tags: ['firmware'], summary: 'A device\'s firmware update state', security: [{ bearer: [] }], params: DeviceIdParams,
      response: { 200: DeviceFirmwareDto, ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    const view = visibleDevice(ctx, principalOf(req), req.params.id, 'devices.read');
    const f = await firmware.deviceFirmware(view.id);
    return { ...f, reportedAt: formatTimeOrNull(f.reportedAt, tz) };
  });
};

/** `GET /firmware/{id}/file?exp&sig`: the binary, for devices fetching it over HTTP(S) with a link Keng signed. */
export const firmwareFileRoute: FastifyPluginAsyncTypebox<{ firmware: Firmware }> = async (app, { firmware }) => {
  app.get('/firmware/:id/file', {
    schema: {
      tags: ['firmware'], summary: 'Download a firmware package through a signed link', params: IdParams,
      description: 'No bearer token: `exp` and `sig` from a link Keng issued are the authorisation; a bad or expired link answers 403. '
        + 'A cluster node without the package\'s file answers 503 KENG_ERR_FIRMWARE_FILE_MISSING.',
      querystring: Type.Object({
        exp: Type.Optional(Type.String({ maxLength: 20, description: 'Expiry, unix seconds' })),
        sig: Type.Optional(Type.String({ maxLength: 100, description: 'base64url HMAC-SHA256 of id and exp' })),
      }),
      response: { 403: Type.Ref('ErrorReply'), 404: Type.Ref('ErrorReply'), 503: Type.Ref('ErrorReply') },
    },
  }, async (req, reply) => {
    const { id } = req.params;
    const { exp, sig } = req.query;
    if (exp === undefined || sig === undefined || !/^[0-9]{1,12}$/.test(exp)) throw Errors.FORBIDDEN('a firmware link needs exp and sig');
    const verdict = firmware.verifyLink(id, Number(exp), sig);
    if (verdict !== 'ok') throw Errors.FORBIDDEN(verdict === 'expired' ? 'this firmware link has expired; ask Keng for a new one' : 'invalid firmware link signature');
    const pkg = await firmware.getPackage(id);
    if (!pkg) throw Errors.NOT_FOUND(`Firmware package "${id}"`);
    const data = await firmware.read(id);
    reply.header('content-type', 'application/octet-stream').header('etag', `"${pkg.sha256}"`)
      .header('content-disposition', `attachment; filename="${pkg.id}.bin"`);
    return reply.send(data);
  });
};

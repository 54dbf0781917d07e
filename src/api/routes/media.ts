/**
 * Media: audio for broadcasts (OpenAPI at /docs, tag media).
 *
 * - `mediaRoutes` (under /api/v1, bearer token): upload, TTS, list, view,
 *   change (name, areas), delete. Media belongs to areas (media/access.ts;
 *   docs/roles.md): a caller lists and opens only media of its areas (or
 *   shared), changes and deletes only media wholly within them; other media
 *   answers 404. Uploads, TTS renders, changes and deletions are audited, each
 *   entry in the transaction of its change.
 * - `mediaFileRoutes` (no token, outside /api/v1): `GET|HEAD /media/{id}/file?exp&sig`,
 *   the signed download speakers use; the signature is the authorisation.
 *
 * Signed links in replies start at `linkBase` (media.publicBaseUrl or the
 * server's own address), never at the request's Host header: a forged Host
 * would otherwise hand out links to another server.
 */
import { stat } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { Type } from 'typebox';
import multipart from '@fastify/multipart';
import type { FastifyRequest } from 'fastify';
import type { Transaction } from 'kysely';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Errors, type KengError } from '../../core/errors.js';
import type { MediaLibrary, StagedFile } from '../../media/library.js';
import type { MediaRecord } from '../../media/types.js';
import { assignableAreas, mediaViewer, type MediaViewer } from '../../media/access.js';
import { TTS_MAX_TEXT } from '../../media/tts.js';
import { ifRangeMatches, parseRange } from '../../media/range.js';
import { MediaFileCache } from '../../media/file-cache.js';
import { principalOf, type RouteContext } from '../context.js';
import { sendError } from '../errors.js';
import { AUTH_ERRORS, Described, StringEnum, Time, errorResponses } from '../schemas.js';
import { formatTime } from '../../core/time.js';

export interface MediaRouteOptions {
  ctx: RouteContext;
  media: MediaLibrary;
  /** Base URL of the signed links in replies (the wiring's mediaBaseUrl); default media.publicBaseUrl. */
  linkBase?: () => string;
}

// ---- schemas ----------------------------------------------------------------

export const Media = Type.Object({
  id: Type.String(),
  name: Type.String(),
  mime: Type.String({ description: 'From probing the file: audio/mpeg, audio/wav or audio/ogg' }),
  size: Type.Integer({ description: 'Bytes' }),
  sha256: Type.String({ description: 'Hex SHA-256 of the file (speakers verify it)' }),
  durationSec: Type.Number({ description: 'Decoded duration in seconds' }),
  source: StringEnum(['upload', 'tts'] as const),
  text: Type.Union([Type.String(), Type.Null()], { description: 'The spoken text of a TTS item; null for uploads' }),
  createdAt: Time,
  createdBy: Type.Union([Type.String(), Type.Null()]),
  areas: Type.Array(Type.String(), { description: 'Areas the item belongs to: its uploader\'s, or what an admin set; ["*"] is shared with every area, [] admins only' }),
  url: Type.Optional(Type.String({ description: 'A signed link to listen to the file, valid for media.signedUrlTtlSec (no token needed)' })),
});

const MediaIdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, description: 'Media id' }) });

const AreaList = Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
  minItems: 1, maxItems: 100,
  description: 'Area codes the item belongs to (default: the caller\'s own areas; an admin\'s: ["*"], shared with every area). '
    + 'Operators may name only areas within theirs; only admins may give "*".',
});

const NewTts = Type.Object({
  text: Type.String({ minLength: 1, maxLength: TTS_MAX_TEXT, description: 'Text to speak (UTF-8, Vietnamese diacritics welcome)' }),
  lang: Type.Optional(StringEnum(['vi', 'en'] as const, { default: 'vi', description: 'Language (espeak-ng voice)' })),
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  areas: Type.Optional(AreaList),
}, { additionalProperties: false });

const MediaPatch = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  areas: Type.Optional(AreaList),
}, { additionalProperties: false, minProperties: 1 });

/** Room for multipart boundaries, part headers and the name field around the file. */
const MULTIPART_OVERHEAD = 64 * 1024;

// ---- helpers ----------------------------------------------------------------

function mediaDto(m: MediaRecord, tz: string, url?: string) {
  return { ...m, createdAt: formatTime(m.createdAt, tz), ...(url ? { url } : {}) };
}

/** What the audit log keeps of an item (the TTS text can be long; its hash and areas are what matter). */
function auditView(m: MediaRecord) {
  return { id: m.id, name: m.name, source: m.source, mime: m.mime, size: m.size, sha256: m.sha256, durationSec: m.durationSec, areas: m.areas };
}


function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
}

/** "ca, va1" (the upload form's `areas` field) → ["ca", "va1"]. */
export function areaField(raw: string): string[] {
  return raw.split(',').map((a) => a.trim()).filter(Boolean);
}

/** @fastify/multipart's errors in the one error shape. */
export function multipartError(err: unknown, maxUploadBytes: number): KengError | undefined {
  switch ((err as { code?: unknown } | null)?.code) {
    case 'FST_REQ_FILE_TOO_LARGE':
      return Errors.PAYLOAD_TOO_LARGE(`media files may be at most ${maxUploadBytes} bytes (media.maxUploadBytes)`);
    case 'FST_FILES_LIMIT':
      return Errors.PAYLOAD_TOO_LARGE('send one file per request');
    case 'FST_PARTS_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return Errors.PAYLOAD_TOO_LARGE('too many form fields: send "file" and optionally "name"');
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return Errors.UNSUPPORTED_MEDIA_TYPE('send multipart/form-data with the audio in a field named "file"');
    case 'FST_PROTO_VIOLATION':
      return Errors.VALIDATION('invalid form field name');
    default:
      return undefined;
  }
}

// ---- /api/v1/media ---------------------------------------------------------------

/** The upload form as OpenAPI shows it (Swagger UI's "Try it out" then offers a file picker). */
const UploadForm = Type.Object({
  file: Type.String({ format: 'binary', description: 'The audio file (MP3, WAV PCM, Ogg Vorbis/Opus)' }),
  name: Type.Optional(Type.String({ description: 'Display name (one line, cut to 200 characters); default the file name' })),
  areas: Type.Optional(Type.String({ description: 'Comma-separated area codes the item belongs to (default: the caller\'s areas; an admin\'s: "*", shared). Operators: only areas within theirs' })),
});

export const mediaRoutes: FastifyPluginAsyncTypebox<MediaRouteOptions> = async (app, { ctx, media, linkBase }) => {
  const { policy, tz, metrics, registry } = ctx;
  const max = media.maxUploadBytes;

  /** What the caller sees of the library: its scope plus the areas above its own. */
  const viewerOf = (req: FastifyRequest): MediaViewer => {
    const p = principalOf(req);
    return mediaViewer(policy.scope(p), p.areas, (code) => registry.getArea(code)?.parent);
  };
  const areasFor = (v: MediaViewer, wanted: string[] | undefined): string[] =>
    wanted === undefined ? [...v.home] : assignableAreas(v, wanted, (code) => registry.getArea(code) !== undefined);
  /** A signed link for the caller's browser; none when no base is known (media.publicBaseUrl unset and no wiring). */
  const link = (id: string): string | undefined => {
    const base = linkBase?.() ?? ctx.config.media.publicBaseUrl;
    return base ? media.signedUrl(id, base) : undefined;
  };
  /** The audit entry of a change, appended in the change's own transaction (committed with it or not at all). */
  const audit = (req: FastifyRequest, action: string, trx: Transaction<unknown>, id: string, before?: MediaRecord, after?: MediaRecord): Promise<unknown> =>
    ctx.audit.record({
      actor: principalOf(req), ip: req.ip, action, target: `media:${id}`,
      ...(before ? { before: auditView(before) } : {}), ...(after ? { after: auditView(after) } : {}),
    }, trx);

  await app.register(multipart, {
    limits: { fileSize: max, files: 1, fields: 4, parts: 5, fieldSize: 1024, headerPairs: 100 },
    throwFileSizeLimit: true,
  });
  app.setErrorHandler((err, req, reply) => {
    const after = (err as { retryAfterSec?: unknown }).retryAfterSec;
    if (typeof after === 'number') reply.header('retry-after', String(after));
    return sendError(req, reply, multipartError(err, max) ?? err, metrics);
  });

  app.post('/media', {
    // The only schema part of this route is the multipart body, read as a stream below.
    validatorCompiler: () => (data: unknown) => ({ value: data }),
    // Refuse a declared oversized body before reading it (the stream is counted anyway).
    onRequest: async (req) => {
      if (Number(req.headers['content-length'] ?? 0) > max + MULTIPART_OVERHEAD) {
        throw Errors.PAYLOAD_TOO_LARGE(`media files may be at most ${max} bytes (media.maxUploadBytes)`);
      }
    },
    schema: {
      tags: ['media'], summary: 'Upload audio', security: [{ bearer: [] }],
      consumes: ['multipart/form-data'],
      // For OpenAPI ("Try it out" uploads a file); the parts are read as a stream below, not validated as a body.
      body: UploadForm,
      description: 'multipart/form-data with the audio in field `file` and optionally `name` and `areas`. '
        + 'MP3, WAV (PCM) or Ogg (Vorbis/Opus) only: the file is probed and fully decoded, and anything else '
        + '(other formats, video, empty, truncated or corrupt files, data appended after the audio) is refused with 422 KENG_ERR_MEDIA_NOT_AUDIO; '
        + 'longer than media.maxDurationSec: 422 KENG_ERR_MEDIA_TOO_LONG. The stored file is the bytes sent (sha256 of them). '
        + 'The type comes from the file, not from the Content-Type sent. Larger than media.maxUploadBytes: 413. '
        + 'At most media.maxConcurrentJobs files are checked at once; when media.maxQueuedJobs more already wait: 503 KENG_ERR_MEDIA_BUSY with Retry-After.',
      response: { 201: Described(Media, 'The stored audio'), ...errorResponses(...AUTH_ERRORS, 413, 415, 422, 503) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'media.write');
    const viewer = viewerOf(req);
    let staged: StagedFile | null = null;
    let filename: string | undefined;
    let name: string | undefined;
    let areas: string[] | undefined;
    try {
      for await (const part of req.parts()) {
        if (part.type === 'file') {
          if (part.fieldname !== 'file' || staged) {
            part.file.resume();
            throw Errors.VALIDATION(`send one file, in the form field "file" (got "${part.fieldname.slice(0, 40)}")`);
          }
          staged = await media.receive(part.file);
          if (part.file.truncated) throw Errors.PAYLOAD_TOO_LARGE(`media files may be at most ${max} bytes (media.maxUploadBytes)`);
          filename = part.filename;
        } else if (part.fieldname === 'name') {
          name = String(part.value);
        } else if (part.fieldname === 'areas') {
          areas = areaField(String(part.value));
        }
      }
      if (!staged) throw Errors.VALIDATION('multipart field "file" is required');
      const owners = areasFor(viewer, areas);
      const rec = await media.importStaged(staged, { name, createdBy: p.id, areas: owners, source: 'upload', fallbackName: filename || 'upload' },
        (trx, made) => audit(req, 'media.upload', trx, made.id, undefined, made));
      staged = null;
      reply.status(201).header('location', `/api/v1/media/${rec.id}`);
      return mediaDto(rec, tz, link(rec.id));
    } finally {
      await media.discard(staged);
    }
  });

  app.post('/media/tts', {
    schema: {
      tags: ['media'], summary: 'Text-to-speech bulletin', security: [{ bearer: [] }],
      description: 'Renders the text with the TTS engine (espeak-ng, Vietnamese voice `vi`; `en` also works), encodes it as MP3 '
        + 'and stores it like an upload (source `tts`, the text kept, belonging to `areas` or the caller\'s areas). '
        + '503 KENG_ERR_TTS_UNAVAILABLE names what is not installed; 503 KENG_ERR_MEDIA_BUSY (Retry-After) when too many renders wait.',
      body: NewTts,
      response: { 201: Described(Media, 'The stored speech'), ...errorResponses(...AUTH_ERRORS, 413, 415, 422, 503) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'media.write');
    const { text, lang, name } = req.body;
    const areas = areasFor(viewerOf(req), req.body.areas);
    const rec = await media.synthesize(text, lang ?? 'vi', { name, createdBy: p.id, areas }, (trx, made) => audit(req, 'media.tts', trx, made.id, undefined, made));
    reply.status(201).header('location', `/api/v1/media/${rec.id}`);
    return mediaDto(rec, tz, link(rec.id));
  });

  app.get('/media', {
    schema: {
      tags: ['media'], summary: 'List media', security: [{ bearer: [] }],
      description: 'Newest first: media of the caller\'s areas, of the areas above them, and shared media (admins: all).',
      querystring: Type.Object({
        limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 200 })),
        offset: Type.Optional(Type.Integer({ minimum: 0, default: 0 })),
      }),
      response: { 200: Type.Array(Media, { description: 'Stored audio, newest first' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'media.read');
    return (await media.list({ limit: req.query.limit, offset: req.query.offset, viewer: viewerOf(req) })).map((m) => mediaDto(m, tz));
  });

  app.get('/media/:id', {
    schema: {
      tags: ['media'], summary: 'One media item, with a signed link to listen', security: [{ bearer: [] }],
      description: '404 for media of other areas, as for unknown media.',
      params: MediaIdParams,
      response: { 200: Described(Media, 'The media item'), ...errorResponses(...AUTH_ERRORS, 404) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'media.read');
    const m = await media.getFor(viewerOf(req), req.params.id);
    return mediaDto(m, tz, link(m.id));
  });

  app.patch('/media/:id', {
    schema: {
      tags: ['media'], summary: 'Rename a media item or give it other areas', security: [{ bearer: [] }],
      description: 'Only media wholly within the caller\'s areas (403 otherwise; 404 for media it does not see). '
        + 'An admin shares an item with every area with `{"areas": ["*"]}`.',
      params: MediaIdParams, body: MediaPatch,
      response: { 200: Described(Media, 'The item as changed'), ...errorResponses(...AUTH_ERRORS, 404, 422) },
    },
  }, async (req) => {
    policy.assert(principalOf(req), 'media.write');
    const viewer = viewerOf(req);
    const areas = req.body.areas === undefined ? undefined : areasFor(viewer, req.body.areas);
    const { after } = await media.update(viewer, req.params.id, { name: req.body.name, areas },
      (trx, c) => audit(req, 'media.update', trx, c.after.id, c.before, c.after));
    return mediaDto(after, tz, link(after.id));
  });

  app.delete('/media/:id', {
    schema: {
      tags: ['media'], summary: 'Delete a media item', security: [{ bearer: [] }],
      description: 'Only media wholly within the caller\'s areas (403 otherwise; 404 for media it does not see). '
        + 'Refused with 409 KENG_ERR_MEDIA_IN_USE while a schedule uses it (named when the caller may see that schedule).',
      params: MediaIdParams,
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(...AUTH_ERRORS, 404, 409) },
    },
  }, async (req, reply) => {
    const p = principalOf(req);
    policy.assert(p, 'media.write');
    await media.delete(req.params.id, { by: p.id, viewer: viewerOf(req) }, (trx, gone) => audit(req, 'media.delete', trx, gone.id, gone));
    return reply.status(204).send(null);
  });
};

// ---- /media/{id}/file (signed, no token) -------------------------------------------

export const mediaFileRoutes: FastifyPluginAsyncTypebox<MediaRouteOptions> = async (app, { ctx, media }) => {
  const files = new MediaFileCache();
  app.route({
    method: ['GET', 'HEAD'],
    url: '/media/:id/file',
    schema: {
      tags: ['media'], summary: 'Download audio through a signed link (speakers)',
      description: 'No bearer token: `exp` (unix seconds) and `sig` (HMAC) from a link Keng issued are the authorisation; '
        + 'a bad or expired link answers 403. Supports HEAD, ETag (the sha256) and one HTTP Range '
        + '(`bytes=a-b`, `bytes=a-`, `bytes=-n` → 206; outside the file → 416). '
        + '503 KENG_ERR_MEDIA_FILE_MISSING when this node has the item but not its file (cluster mode: docs/cluster.md).',
      params: MediaIdParams,
      querystring: Type.Object({
        exp: Type.Optional(Type.String({ maxLength: 20, description: 'Expiry, unix seconds' })),
        sig: Type.Optional(Type.String({ maxLength: 100, description: 'base64url HMAC-SHA256 of id and exp' })),
      }),
      response: errorResponses(403, 404, 416, 503),
    },
    handler: async (req, reply) => {
      const { id } = req.params;
      const verdict = media.verifyLink(id, req.query.exp, req.query.sig);
      if (verdict !== 'ok') {
        throw Errors.FORBIDDEN(verdict === 'expired' ? 'this media link has expired; ask Keng for a new one'
          : verdict === 'missing' ? 'a media link needs exp and sig' : 'invalid media link signature');
      }
      const f = await media.file(id);
      if (!f) throw Errors.NOT_FOUND(`Media "${id}"`);
      // Small files from memory (see media/file-cache.ts), others streamed from disk.
      const bytes = await files.get(f.path, f.record.size);
      const size = bytes ? bytes.length : await stat(f.path).then((s) => s.size, () => undefined);
      // Known but not here (cluster mode: <dataDir>/media not shared): 503, counted; 404 when deleted meanwhile.
      if (size === undefined) throw await media.fileMissing(id);
      const etag = `"${f.record.sha256}"`;
      const exp = Number(req.query.exp);
      reply
        .header('accept-ranges', 'bytes')
        .header('etag', etag)
        .header('cache-control', `private, max-age=${Math.max(0, exp - Math.floor(ctx.clock.now() / 1000))}, no-transform`)
        .header('content-disposition', 'inline');
      if (header(req, 'if-none-match') === etag) return reply.status(304).send();
      const range = ifRangeMatches(header(req, 'if-range'), etag) ? parseRange(header(req, 'range'), size) : { kind: 'full' as const };
      if (range.kind === 'unsatisfiable') {
        reply.header('content-range', `bytes */${size}`);
        throw Errors.RANGE_NOT_SATISFIABLE(`the file has ${size} bytes`);
      }
      reply.type(f.record.mime);
      const [start, end] = range.kind === 'partial' ? [range.start, range.end] : [0, size - 1];
      if (range.kind === 'partial') reply.status(206).header('content-range', `bytes ${start}-${end}/${size}`);
      reply.header('content-length', String(end - start + 1));
      if (req.method === 'HEAD') return reply.send();
      return reply.send(bytes ? bytes.subarray(start, end + 1) : createReadStream(f.path, { start, end }));
    },
  });
};

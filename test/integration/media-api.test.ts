/**
 * The media routes over a real HTTP listener: the real ApiServer (bearer
 * hook, policy, error shape) serving the media routes of a real media
 * library, as the app wires it; registry/store/broker are the API fakes.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminAuth, type Authenticator, type Principal } from '../../src/auth/index.js';
import { ApiServer } from '../../src/api/index.js';
import { loadConfig } from '../../src/config/index.js';
import { EventBus } from '../../src/core/index.js';
import { EspeakTts, type MediaLibrary } from '../../src/media/index.js';
import { ADMIN, FakeBroker, FakeRegistry, FakeStore, access } from '../component/api-fakes.js';
import { ESPEAK, FFMPEG, makeFixtures, requireTools, sha256, startLibrary, type Fixtures, type LibraryHarness } from './media-fixtures.js';

requireTools();

const TOKENS: Record<string, Principal> = {
  'operator-token-0123456789': { kind: 'token', id: 'op1', role: 'operator', areas: ['01'] },
  'viewer-token-0123456789ab': { kind: 'token', id: 'farmer', role: 'viewer', areas: ['01'] },
};
const OPERATOR = 'operator-token-0123456789';
const VIEWER = 'viewer-token-0123456789ab';
const fakeTokens: Authenticator = { authenticate: (t) => TOKENS[t] ?? null };

const MAX_UPLOAD = 400_000;

interface Server { base: string; api: ApiServer; lib: LibraryHarness; media: MediaLibrary; close(): Promise<void> }

async function startServer(tts: EspeakTts): Promise<Server> {
  const lib = await startLibrary({ maxUploadBytes: MAX_UPLOAD, tts, isInUse: (id) => inUse.has(id) && 'schedule "Bản tin sáng"' });
  const config = loadConfig({ env: {}, overrides: { dataDir: lib.dataDir, adminToken: ADMIN, logLevel: 'silent', http: { port: 0, host: '127.0.0.1' } } });
  const adminAuth = new AdminAuth({ dataDir: lib.dataDir, adminToken: ADMIN, logger: lib.logger });
  await adminAuth.start();
  const media = lib.media;
  const registry = new FakeRegistry();
  // Links in replies start at the server's own address, as the app wires it (never the Host header).
  let base = '';
  const api = new ApiServer({
    config, registry, store: new FakeStore(), broker: new FakeBroker(), ...access(registry, adminAuth, [fakeTokens]), bus: new EventBus(),
    metrics: lib.metrics, logger: lib.logger, clock: lib.clock, services: { media, mediaLinkBase: () => base },
  });
  await api.start();
  base = `http://127.0.0.1:${api.address().port}`;
  return {
    base, api, lib, media,
    async close() { await api.stop(); await lib.stop(); rmSync(lib.dataDir, { recursive: true, force: true }); },
  };
}

const inUse = new Set<string>();
let fx: Fixtures;
let s: Server;
let badTts: Server;

beforeAll(async () => {
  fx = makeFixtures();
  s = await startServer(new EspeakTts({ espeakPath: ESPEAK, ffmpegPath: FFMPEG }));
  badTts = await startServer(new EspeakTts({ espeakPath: '/opt/bogus/espeak-ng', ffmpegPath: FFMPEG }));
});
afterAll(async () => {
  await s?.close();
  await badTts?.close();
  rmSync(fx.dir, { recursive: true, force: true });
});

function auth(token: string | null = ADMIN): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

async function upload(file: string, opts: { filename?: string; type?: string; name?: string; token?: string | null; field?: string; base?: string } = {}) {
  const form = new FormData();
  if (opts.name !== undefined) form.append('name', opts.name);
  form.append(opts.field ?? 'file', new Blob([readFileSync(file)], { type: opts.type ?? 'audio/mpeg' }), opts.filename ?? path.basename(file));
  const res = await fetch(`${opts.base ?? s.base}/api/v1/media`, { method: 'POST', body: form, headers: auth(opts.token === undefined ? ADMIN : opts.token) });
  return { status: res.status, body: await res.json() as any, headers: res.headers };
}

async function json(method: string, url: string, body?: unknown, token: string | null = ADMIN, base = s.base) {
  const res = await fetch(`${base}${url}`, {
    method, headers: { ...auth(token), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) as any : undefined, headers: res.headers };
}

function tmpLeft(srv: Server = s): string[] {
  return readdirSync(path.join(srv.lib.dataDir, 'media', '.tmp'));
}

describe('POST /api/v1/media', () => {
  it.each([
    ['wav', 'audio/wav'],
    ['mp3', 'audio/mpeg'],
    ['ogg', 'audio/ogg'],
    ['opus', 'audio/ogg'],
  ] as const)('stores a %s upload → 201 with duration, sha256 and the probed mime', async (key, mime) => {
    const res = await upload(fx[key], { type: 'application/octet-stream', name: `Bản tin ${key}` });
    const buf = readFileSync(fx[key]);
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ name: `Bản tin ${key}`, mime, size: buf.length, sha256: sha256(buf), source: 'upload', createdBy: 'admin' });
    expect(res.body.id).toMatch(/^[a-f0-9]{20}$/);
    expect(res.body.durationSec).toBeGreaterThan(1.95);
    expect(res.body.durationSec).toBeLessThan(2.05);
    expect(res.body.createdAt).toMatch(/\+07:00$/);
    expect(res.headers.get('location')).toBe(`/api/v1/media/${res.body.id}`);
  });

  it('an operator may upload; the file name is the default name', async () => {
    const res = await upload(fx.mp3Cover, { token: OPERATOR, filename: 'tin-sang.mp3' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ name: 'tin-sang.mp3', createdBy: 'op1', mime: 'audio/mpeg' });
  });

  it.each([
    ['a text file named .mp3', 'textAsMp3', /not an audio file/],
    ['a PNG', 'png', /video stream \(png\)/],
    ['a video', 'video', /video stream/],
    ['a truncated MP3 (first 100 bytes)', 'truncatedMp3', /./],
    ['an empty file', 'empty', /empty/],
    ['FLAC', 'flac', /not MP3, WAV or Ogg/],
  ] as const)('refuses %s → 422 KENG_ERR_MEDIA_NOT_AUDIO, nothing stored', async (_label, key, msg) => {
    const before = (await json('GET', '/api/v1/media')).body.length;
    const res = await upload(fx[key], { type: 'audio/mpeg', filename: 'bulletin.mp3' });
    expect(res.status).toBe(422);
    expect(res.body.error.code).toBe('KENG_ERR_MEDIA_NOT_AUDIO');
    expect(res.body.error.message).toMatch(msg);
    expect((await json('GET', '/api/v1/media')).body.length).toBe(before);
    expect(tmpLeft()).toEqual([]);
  });

  async function uploadBytes(buf: Buffer) {
    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(buf)]), 'big.mp3');
    const res = await fetch(`${s.base}/api/v1/media`, { method: 'POST', body: form, headers: auth() });
    return { status: res.status, body: await res.json() as any };
  }

  it(`refuses a file over media.maxUploadBytes (${MAX_UPLOAD}) → 413, counted while streaming`, async () => {
    // Just over the limit: the declared length passes the early check, the stream is cut at the limit.
    const res = await uploadBytes(randomBytes(MAX_UPLOAD + 1));
    expect(res.status).toBe(413);
    expect(res.body.error.code).toBe('KENG_ERR_PAYLOAD_TOO_LARGE');
    expect(res.body.error.message).toContain(String(MAX_UPLOAD));
    // Exactly at the limit is not too large (it is just not audio).
    expect((await uploadBytes(randomBytes(MAX_UPLOAD))).status).toBe(422);
    expect(tmpLeft()).toEqual([]);
  });

  it('refuses a real audio file over the limit, and a declared 20 MB body before reading it → 413', async () => {
    expect(readFileSync(fx.bigWav).length).toBeGreaterThan(MAX_UPLOAD);
    expect((await upload(fx.bigWav)).status).toBe(413);
    const t0 = Date.now();
    const res = await uploadBytes(randomBytes(20_000_000));
    expect(res.status).toBe(413);
    expect(res.body.error.code).toBe('KENG_ERR_PAYLOAD_TOO_LARGE');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(tmpLeft()).toEqual([]);
  });

  it('needs a multipart body with a "file" field', async () => {
    const noFile = new FormData();
    noFile.append('name', 'x');
    let res = await fetch(`${s.base}/api/v1/media`, { method: 'POST', body: noFile, headers: auth() });
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).error.code).toBe('KENG_ERR_VALIDATION');
    res = await fetch(`${s.base}/api/v1/media`, { method: 'POST', body: JSON.stringify({ a: 1 }), headers: { ...auth(), 'content-type': 'application/json' } });
    expect(res.status).toBe(415);
    expect(((await res.json()) as any).error.message).toContain('multipart/form-data');
    const wrongField = await upload(fx.mp3, { field: 'audio' });
    expect(wrongField.status).toBe(400);
  });

  it('needs a token (401) and the media.write right (403 for a viewer)', async () => {
    expect((await upload(fx.mp3, { token: null })).status).toBe(401);
    const res = await upload(fx.mp3, { token: VIEWER });
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe('KENG_ERR_FORBIDDEN');
    expect(tmpLeft()).toEqual([]);
  });
});

describe('POST /api/v1/media/tts', () => {
  const text = 'Thông báo: ngày mai thôn Một cắt điện từ 7 giờ đến 11 giờ.';

  it('renders Vietnamese speech → 201, MP3 longer than 1 s, text kept', async () => {
    const res = await json('POST', '/api/v1/media/tts', { text, lang: 'vi' }, OPERATOR);
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ source: 'tts', text, mime: 'audio/mpeg', createdBy: 'op1' });
    expect(res.body.durationSec).toBeGreaterThan(1);
    expect(res.body.sha256).toMatch(/^[a-f0-9]{64}$/);
    const file = await fetch(res.body.url as string);
    expect(file.status).toBe(200);
    expect(sha256(Buffer.from(await file.arrayBuffer()))).toBe(res.body.sha256);
  });

  it('refuses other languages and bad bodies with 400', async () => {
    for (const body of [{ text, lang: 'fr' }, { text: '' }, { lang: 'vi' }, { text: 'x'.repeat(5001) }, { text, extra: 1 }]) {
      const res = await json('POST', '/api/v1/media/tts', body);
      expect(res.status, JSON.stringify(body).slice(0, 60)).toBe(400);
      expect(res.body.error.code).toBe('KENG_ERR_VALIDATION');
    }
  });

  it('503 naming the missing program when espeak-ng is not installed at the configured path', async () => {
    const res = await json('POST', '/api/v1/media/tts', { text, lang: 'vi' }, ADMIN, badTts.base);
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('KENG_ERR_TTS_UNAVAILABLE');
    expect(res.body.error.message).toContain('espeak-ng not found at /opt/bogus/espeak-ng');
    expect(tmpLeft(badTts)).toEqual([]);
  });

  it('a viewer may not', async () => {
    expect((await json('POST', '/api/v1/media/tts', { text }, VIEWER)).status).toBe(403);
  });
});

describe('GET/DELETE /api/v1/media', () => {
  it('lists newest first, shows one with a signed link, 404 for unknown', async () => {
    const created = await upload(fx.ogg, { name: 'một' });
    const list = await json('GET', '/api/v1/media?limit=2');
    expect(list.status).toBe(200);
    expect(list.body).toHaveLength(2);
    expect(list.body[0].id).toBe(created.body.id);
    const one = await json('GET', `/api/v1/media/${created.body.id}`, undefined, OPERATOR);
    expect(one.body).toMatchObject({ id: created.body.id, name: 'một', sha256: created.body.sha256 });
    expect(one.body.url).toMatch(new RegExp(`^${s.base}/media/${created.body.id}/file\\?exp=\\d+&sig=`));
    expect((await json('GET', '/api/v1/media/ffffffffffffffffffff')).status).toBe(404);
    expect((await json('GET', '/api/v1/media', undefined, VIEWER)).status).toBe(403);
  });

  it('deletes (204), refuses while in use (409), 404 afterwards', async () => {
    // The operator's own upload (an admin's is shared with every area: only admins delete it).
    const created = await upload(fx.mp3, { token: OPERATOR });
    inUse.add(created.body.id);
    const refused = await json('DELETE', `/api/v1/media/${created.body.id}`);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ code: 'KENG_ERR_MEDIA_IN_USE', message: expect.stringContaining('Bản tin sáng') });
    inUse.delete(created.body.id);
    expect((await json('DELETE', `/api/v1/media/${created.body.id}`, undefined, VIEWER)).status).toBe(403);
    expect((await json('DELETE', `/api/v1/media/${created.body.id}`, undefined, OPERATOR)).status).toBe(204);
    expect((await json('GET', `/api/v1/media/${created.body.id}`)).status).toBe(404);
    expect((await json('DELETE', `/api/v1/media/${created.body.id}`)).status).toBe(404);
  });
});

describe('GET /media/{id}/file (signed, for speakers)', () => {
  let id: string;
  let buf: Buffer;
  let url: string;
  beforeAll(async () => {
    const res = await upload(fx.mp3);
    id = res.body.id as string;
    buf = readFileSync(fx.mp3);
    url = s.media.signedUrl(id, s.base);
  });

  it('serves the whole file without a bearer token, matching its sha256', async () => {
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('audio/mpeg');
    expect(res.headers.get('content-length')).toBe(String(buf.length));
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    const body = Buffer.from(await res.arrayBuffer());
    expect(res.headers.get('etag')).toBe(`"${sha256(body)}"`);
    expect(sha256(body)).toBe(sha256(buf));
  });

  it('the speaker\'s broadcast.play media object points at it', async () => {
    const ref = s.media.mediaRef(id, s.base);
    const body = Buffer.from(await (await fetch(ref.url)).arrayBuffer());
    expect(sha256(body)).toBe(ref.sha256);
    expect(ref.mime).toBe('audio/mpeg');
  });

  it.each([
    ['bytes=0-99', 0, 99],
    ['bytes=1000-', 1000, -1],
    ['bytes=-500', -500, -1],
    ['bytes=100-999999999', 100, -1],
  ] as const)('Range %s → 206 with Content-Range and the right slice', async (range, from, to) => {
    const res = await fetch(url, { headers: { range } });
    expect(res.status).toBe(206);
    const start = from < 0 ? buf.length + from : from;
    const end = to < 0 ? buf.length - 1 : to;
    expect(res.headers.get('content-range')).toBe(`bytes ${start}-${end}/${buf.length}`);
    expect(res.headers.get('content-length')).toBe(String(end - start + 1));
    const body = Buffer.from(await res.arrayBuffer());
    expect(body.equals(buf.subarray(start, end + 1))).toBe(true);
  });

  it('a range outside the file → 416 with Content-Range: bytes */size', async () => {
    const res = await fetch(url, { headers: { range: `bytes=${buf.length}-` } });
    expect(res.status).toBe(416);
    expect(res.headers.get('content-range')).toBe(`bytes */${buf.length}`);
    expect(((await res.json()) as any).error.code).toBe('KENG_ERR_RANGE_NOT_SATISFIABLE');
  });

  it('If-Range with another ETag sends the whole file; If-None-Match → 304', async () => {
    const full = await fetch(url, { headers: { range: 'bytes=0-9', 'if-range': '"other"' } });
    expect(full.status).toBe(200);
    await full.arrayBuffer();
    const etag = `"${sha256(buf)}"`;
    const same = await fetch(url, { headers: { 'if-none-match': etag } });
    expect(same.status).toBe(304);
  });

  it('HEAD gives the headers without a body', async () => {
    const res = await fetch(url, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(buf.length));
    expect(res.headers.get('content-type')).toBe('audio/mpeg');
    expect((await res.arrayBuffer()).byteLength).toBe(0);
    const part = await fetch(url, { method: 'HEAD', headers: { range: 'bytes=0-9' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-length')).toBe('10');
  });

  it('a tampered, foreign, missing or expired signature → 403', async () => {
    const u = new URL(url);
    const sig = u.searchParams.get('sig')!;
    const exp = u.searchParams.get('exp')!;
    const tampered = `${sig.slice(0, -2)}${sig.endsWith('AA') ? 'BB' : 'AA'}`;
    const cases = [
      `${s.base}/media/${id}/file?exp=${exp}&sig=${tampered}`,
      `${s.base}/media/${id}/file?exp=${Number(exp) + 3600}&sig=${sig}`,
      `${s.base}/media/${id}/file`,
      `${s.base}/media/${id}/file?exp=${exp}&sig=${badTts.media.signedUrl(id, 'http://x').split('sig=')[1]}`,
    ];
    for (const c of cases) {
      const res = await fetch(c);
      expect(res.status, c).toBe(403);
      expect(((await res.json()) as any).error.code).toBe('KENG_ERR_FORBIDDEN');
    }
    const expired = s.media.signedUrl(id, s.base, 30);
    s.lib.clock.set(s.lib.clock.now() + 31_000);
    try {
      const res = await fetch(expired);
      expect(res.status).toBe(403);
      expect(((await res.json()) as any).error.message).toMatch(/expired/);
    } finally {
      s.lib.clock.set(s.lib.clock.now() - 31_000);
    }
  });

  it('a valid link to deleted media → 404', async () => {
    const created = await upload(fx.ogg);
    const link = s.media.signedUrl(created.body.id as string, s.base);
    expect((await json('DELETE', `/api/v1/media/${created.body.id}`)).status).toBe(204);
    expect((await fetch(link)).status).toBe(404);
  });
});

describe('wiring', () => {
  it('the name field may come after the file', async () => {
    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(readFileSync(fx.ogg))]), 'a.ogg');
    form.append('name', 'Loa thôn 3');
    const res = await fetch(`${s.base}/api/v1/media`, { method: 'POST', body: form, headers: auth() });
    expect(res.status).toBe(201);
    expect(((await res.json()) as any).name).toBe('Loa thôn 3');
  });

  it('the routes are in the OpenAPI document', async () => {
    const doc = (await json('GET', '/docs/json', undefined, null)).body;
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/api/v1/media', '/api/v1/media/tts', '/api/v1/media/{id}', '/media/{id}/file']));
    // The upload has a multipart body with a binary `file`, so Swagger UI's "Try it out" can send one.
    const form = doc.paths['/api/v1/media'].post.requestBody.content['multipart/form-data'].schema;
    expect(form).toMatchObject({ required: ['file'], properties: { file: { type: 'string', format: 'binary' }, name: { type: 'string' } } });
  });

  it('counts ingested media in /metrics', async () => {
    const text = await (await fetch(`${s.base}/metrics`, { headers: auth(ADMIN) })).text();
    expect(text).toMatch(/keng_media_ingest_total\{source="upload",result="ok"\} \d+/);
    expect(text).toMatch(/keng_media_ingest_total\{source="upload",result="not_audio"\} \d+/);
  });
});

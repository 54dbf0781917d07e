import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, createReadStream, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AudioProbe, EspeakTts, NotAudioError, type MediaRecord } from '../../src/media/index.js';
import { ESPEAK, FFMPEG, FFPROBE, makeFixtures, requireTools, sha256, startLibrary, type Fixtures, type LibraryHarness } from './media-fixtures.js';

requireTools();
let fx: Fixtures;
beforeAll(() => { fx = makeFixtures(); });
afterAll(() => { rmSync(fx.dir, { recursive: true, force: true }); });

describe('AudioProbe (real ffprobe + ffmpeg)', () => {
  const probe = new AudioProbe({ ffprobePath: FFPROBE, ffmpegPath: FFMPEG });

  it.each([
    ['wav', 'audio/wav', 'pcm_s16le'],
    ['mp3', 'audio/mpeg', 'mp3'],
    ['ogg', 'audio/ogg', 'vorbis'],
    ['opus', 'audio/ogg', 'opus'],
    ['mp3Cover', 'audio/mpeg', 'mp3'],
  ] as const)('accepts %s as %s', async (key, mime, codec) => {
    const info = await probe.probe(fx[key]);
    expect(info.mime).toBe(mime);
    expect(info.codec).toBe(codec);
    expect(info.durationSec).toBeGreaterThan(1.9);
    expect(info.durationSec).toBeLessThan(2.1);
  });

  it.each([
    ['textAsMp3', /not an audio file/],
    ['png', /video stream \(png\)/],
    ['video', /video stream \(h264\)/],
    ['truncatedMp3', /not an audio file|decodes to no sound|could not be decoded/],
    ['empty', /empty/],
    ['wavMp3', /wav file with mp3 audio is not supported/],
    ['flac', /format \(flac\) is not MP3, WAV or Ogg/],
  ] as const)('refuses %s', async (key, reason) => {
    const err = await probe.probe(fx[key]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotAudioError);
    expect((err as NotAudioError).reason).toMatch(reason);
  });

  it('takes the true duration of a cut MP3 from decoding, not from its header', async () => {
    const cut = path.join(fx.dir, 'half.mp3');
    writeFileSync(cut, readFileSync(fx.mp3).subarray(0, 6000));
    const info = await probe.probe(cut);
    expect(info.durationSec).toBeGreaterThan(0.3);
    expect(info.durationSec).toBeLessThan(1.2);
  });

  it('names a missing ffprobe', async () => {
    const p = new AudioProbe({ ffprobePath: '/nonexistent/ffprobe', ffmpegPath: FFMPEG });
    await expect(p.probe(fx.mp3)).rejects.toThrow('ffprobe not found at /nonexistent/ffprobe');
  });
});

describe('MediaLibrary', () => {
  let h: LibraryHarness;
  let used = new Set<string>();
  beforeAll(async () => { h = await startLibrary({ maxUploadBytes: 100_000, isInUse: (id) => used.has(id) && 'schedule "Bản tin sáng"' }); });
  afterAll(async () => { await h.stop(); rmSync(h.dataDir, { recursive: true, force: true }); });

  const mediaDir = (): string => path.join(h.dataDir, 'media');
  const tmpFiles = (): string[] => readdirSync(path.join(mediaDir(), '.tmp'));

  it('stores an upload under <dataDir>/media/<id>.<ext> with its sha256, size and duration', async () => {
    const rec = await h.media.upload(createReadStream(fx.mp3), { name: 'Bản tin', createdBy: 'op1' });
    const buf = readFileSync(fx.mp3);
    expect(rec).toMatchObject({ name: 'Bản tin', mime: 'audio/mpeg', size: buf.length, sha256: sha256(buf), source: 'upload', text: null, createdBy: 'op1' });
    expect(rec.durationSec).toBeCloseTo(2, 1);
    const file = path.join(mediaDir(), `${rec.id}.mp3`);
    expect(readFileSync(file).equals(buf)).toBe(true);
    expect(h.media.get(rec.id)).toEqual(rec);
    expect((await h.media.list()).map((m) => m.id)).toContain(rec.id);
    expect(tmpFiles()).toEqual([]);
  });

  it('leaves no file behind when refusing non-audio or oversized input', async () => {
    const before = readdirSync(mediaDir()).sort();
    await expect(h.media.upload(createReadStream(fx.textAsMp3))).rejects.toMatchObject({ code: 'KENG_ERR_MEDIA_NOT_AUDIO', statusCode: 422 });
    await expect(h.media.upload(createReadStream(fx.wav))).rejects.toMatchObject({ code: 'KENG_ERR_PAYLOAD_TOO_LARGE', statusCode: 413 });
    await expect(h.media.upload(Readable.from([]))).rejects.toMatchObject({ code: 'KENG_ERR_MEDIA_NOT_AUDIO' });
    expect(readdirSync(mediaDir()).sort()).toEqual(before);
    expect(tmpFiles()).toEqual([]);
  });

  it('a failing source stream leaves no temp file', async () => {
    const bad = new Readable({ read() { this.destroy(new Error('client went away')); } });
    await expect(h.media.upload(bad)).rejects.toThrow('client went away');
    expect(tmpFiles()).toEqual([]);
  });

  it('refuses to delete media in use (409), deletes otherwise', async () => {
    const rec = await h.media.upload(createReadStream(fx.ogg));
    used.add(rec.id);
    await expect(h.media.delete(rec.id)).rejects.toMatchObject({ code: 'KENG_ERR_MEDIA_IN_USE', statusCode: 409, message: expect.stringContaining('Bản tin sáng') });
    used = new Set();
    await h.media.delete(rec.id);
    expect(h.media.get(rec.id)).toBeUndefined();
    expect(existsSync(path.join(mediaDir(), `${rec.id}.ogg`))).toBe(false);
    await expect(h.media.delete(rec.id)).rejects.toMatchObject({ code: 'KENG_ERR_NOT_FOUND' });
  });

  it('signs links that verify, expire and reject tampering', async () => {
    const rec = await h.media.upload(createReadStream(fx.ogg));
    const url = new URL(h.media.signedUrl(rec.id, 'http://keng.local:8080/', 60));
    expect(url.pathname).toBe(`/media/${rec.id}/file`);
    const exp = url.searchParams.get('exp')!;
    const sig = url.searchParams.get('sig')!;
    expect(h.media.verifyLink(rec.id, exp, sig)).toBe('ok');
    expect(h.media.verifyLink('0'.repeat(20), exp, sig)).toBe('bad-signature');
    expect(h.media.verifyLink(rec.id, String(Number(exp) + 1), sig)).toBe('bad-signature');
    expect(h.media.verifyLink(rec.id, exp, undefined)).toBe('missing');
    h.clock.set(h.clock.now() + 61_000);
    expect(h.media.verifyLink(rec.id, exp, sig)).toBe('expired');
    const ref = h.media.mediaRef(rec.id, 'http://10.0.0.2:8080');
    expect(ref).toMatchObject({ sha256: rec.sha256, durationSec: rec.durationSec, mime: 'audio/ogg' });
    expect(ref.url).toMatch(/^http:\/\/10\.0\.0\.2:8080\/media\/[a-f0-9]{20}\/file\?exp=\d+&sig=[\w-]{43}$/);
  });

  it('keeps the signing key in <dataDir>/media-signing.key (0600) across restarts', async () => {
    const keyFile = path.join(h.dataDir, 'media-signing.key');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const rec = (await h.media.list())[0]!;
    const url = new URL(h.media.signedUrl(rec.id, 'http://x'));
    await h.media.stop();
    await h.media.start();
    expect(h.media.verifyLink(rec.id, url.searchParams.get('exp')!, url.searchParams.get('sig')!)).toBe('ok');
  });

  it('removes crash leftovers at start: temp files and files without a record', async () => {
    writeFileSync(path.join(mediaDir(), '.tmp', 'abc.part'), 'x');
    const orphan = path.join(mediaDir(), `${'f'.repeat(20)}.mp3`);
    writeFileSync(orphan, 'x');
    const keep = await h.media.list();
    await h.media.stop();
    await h.media.start();
    expect(tmpFiles()).toEqual([]);
    expect(existsSync(orphan)).toBe(false);
    for (const m of keep) expect(existsSync((await h.media.file(m.id))!.path)).toBe(true);
  });
});

describe('EspeakTts + MediaLibrary.synthesize', () => {
  let h: LibraryHarness;
  beforeAll(async () => { h = await startLibrary({ tts: new EspeakTts({ espeakPath: ESPEAK, ffmpegPath: FFMPEG }) }); });
  afterAll(async () => { await h.stop(); rmSync(h.dataDir, { recursive: true, force: true }); });

  it('renders Vietnamese text to a stored MP3 and keeps the text', async () => {
    const text = 'Thông báo: ngày mai thôn Một cắt điện từ 7 giờ đến 11 giờ.';
    const rec: MediaRecord = await h.media.synthesize(text, 'vi', { createdBy: 'op1' });
    expect(rec).toMatchObject({ source: 'tts', text, mime: 'audio/mpeg', createdBy: 'op1' });
    expect(rec.name.startsWith('Thông báo')).toBe(true);
    expect(rec.durationSec).toBeGreaterThan(1);
    expect(readdirSync(path.join(h.dataDir, 'media', '.tmp'))).toEqual([]);
  });

  it('diacritics reach espeak-ng intact: decomposed (NFD) input speaks the same as NFC', async () => {
    const text = 'Thông báo khẩn cấp: lũ quét ở xã Mường Tè.';
    const a = await h.media.synthesize(text.normalize('NFC'), 'vi');
    const b = await h.media.synthesize(text.normalize('NFD'), 'vi');
    expect(b.durationSec).toBeCloseTo(a.durationSec, 1);
    // Without diacritics espeak reads different syllables: a different length of speech.
    const plain = await h.media.synthesize('Thong bao khan cap: lu quet o xa Muong Te.', 'vi');
    expect(plain.sha256).not.toBe(a.sha256);
  });

  it('builds an announcement: attention tone, speech twice with a pause, then a stored file, in one MP3', async () => {
    const text = 'Đây là diễn tập. Nước sông Đà đang lên.';
    const speech = await h.media.synthesize(text, 'vi');
    const rec = await h.media.synthesizeSequence([{ tone: 2 }, { silence: 0.5 }, { text }, { silence: 1 }, { text }, { mediaId: speech.id }], 'vi', { createdBy: 'alerts' });
    expect(rec).toMatchObject({ source: 'tts', mime: 'audio/mpeg', text: `${text}\n${text}`, createdBy: 'alerts' });
    expect(rec.durationSec).toBeCloseTo(2 + 0.5 + 1 + 3 * speech.durationSec, 0);
    // The first two seconds are the tone (loud), the next half second silence.
    const file = (await h.media.file(rec.id))!.path;
    const level = (from: number, len: number): number => {
      const r = spawnSync(FFMPEG, ['-v', 'info', '-ss', String(from), '-t', String(len), '-i', file, '-af', 'astats=metadata=0', '-f', 'null', '-'], { encoding: 'utf8' });
      const m = /RMS level dB: (-?[\d.]+|-inf)/.exec(r.stderr);
      return m?.[1] === '-inf' || !m ? -200 : Number(m[1]);
    };
    expect(level(0.2, 1.5)).toBeGreaterThan(-15);
    expect(level(2.1, 0.3)).toBeLessThan(-60);
    await expect(h.media.synthesizeSequence([{ tone: 1 }, { mediaId: 'nope' }], 'vi')).rejects.toMatchObject({ statusCode: 422 });
    await expect(h.media.synthesizeSequence([{ tone: 9999 }], 'vi')).rejects.toMatchObject({ statusCode: 400 });
  });

  it('reports what is missing', async () => {
    const tts = new EspeakTts({ espeakPath: '/opt/nothing/espeak-ng', ffmpegPath: FFMPEG });
    expect(await tts.available()).toEqual({ ok: false, missing: 'espeak-ng not found at /opt/nothing/espeak-ng' });
    const noFfmpeg = new EspeakTts({ espeakPath: ESPEAK, ffmpegPath: '/opt/nothing/ffmpeg' });
    await expect(noFfmpeg.synthesize('xin chào', 'vi', path.join(h.dataDir, 'x.mp3')))
      .rejects.toMatchObject({ code: 'KENG_ERR_TTS_UNAVAILABLE', statusCode: 503, message: expect.stringContaining('ffmpeg not found at /opt/nothing/ffmpeg') });
  });
});

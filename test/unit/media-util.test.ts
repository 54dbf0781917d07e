import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UrlSigner, loadOrCreateKey } from '../../src/media/signing.js';
import { cleanTtsText, EspeakTts } from '../../src/media/tts.js';
import { lastOutTimeUs } from '../../src/media/probe.js';
import { cleanName } from '../../src/media/library.js';
import { checkExecutable, runTool, ToolMissingError } from '../../src/media/run.js';
import { mediaMigration } from '../../src/media/migration.js';
import { ERROR_CODES, Errors } from '../../src/core/errors.js';

const dir = mkdtempSync(path.join(tmpdir(), 'keng-media-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('UrlSigner', () => {
  const key = randomBytes(32);
  const signer = new UrlSigner(key);
  const now = Date.parse('2025-11-30T00:00:00Z');
  const exp = now / 1000 + 900;

  it('accepts its own signature until exp, then says expired', () => {
    const sig = signer.sign('abc', exp);
    expect(sig).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(signer.verify('abc', String(exp), sig, now)).toBe('ok');
    expect(signer.verify('abc', String(exp), sig, exp * 1000)).toBe('ok');
    expect(signer.verify('abc', String(exp), sig, exp * 1000 + 1)).toBe('expired');
  });

  it('binds id and exp, and the key', () => {
    const sig = signer.sign('abc', exp);
    expect(signer.verify('abd', String(exp), sig, now)).toBe('bad-signature');
    expect(signer.verify('abc', String(exp + 1), sig, now)).toBe('bad-signature');
    expect(new UrlSigner(randomBytes(32)).verify('abc', String(exp), sig, now)).toBe('bad-signature');
    // "ab" + "c\n…" must not collide with "abc" + "\n…"
    expect(signer.sign('ab', exp)).not.toBe(sig);
  });

  it('refuses malformed input without throwing', () => {
    const sig = signer.sign('abc', exp);
    expect(signer.verify('abc', undefined, sig, now)).toBe('missing');
    expect(signer.verify('abc', String(exp), undefined, now)).toBe('missing');
    expect(signer.verify('abc', '12e9', sig, now)).toBe('bad-signature');
    expect(signer.verify('abc', String(exp), sig.slice(1), now)).toBe('bad-signature');
    expect(signer.verify('abc', String(exp), `${sig.slice(0, -1)}!`, now)).toBe('bad-signature');
  });

  it('creates the key file once, 0600, and reuses it', () => {
    const file = path.join(dir, 'media-signing.key');
    const a = loadOrCreateKey(file);
    expect(a.length).toBe(32);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(loadOrCreateKey(file).equals(a)).toBe(true);
    expect(readFileSync(file).equals(a)).toBe(true);
    const short = path.join(dir, 'short.key');
    writeFileSync(short, 'x');
    expect(() => loadOrCreateKey(short)).toThrow(/shorter than 16 bytes/);
  });
});

describe('text cleaning', () => {
  it('TTS text: NFC, control characters out, diacritics kept', () => {
    const nfd = 'Thông báo khẩn cấp'.normalize('NFD');
    expect(cleanTtsText(`  ${nfd}\u0000\u001b[31m\n`)).toBe('Thông báo khẩn cấp  [31m');
    expect(cleanTtsText(nfd)).toBe('Thông báo khẩn cấp'.normalize('NFC'));
    expect(cleanTtsText('dòng 1\ndòng 2')).toBe('dòng 1\ndòng 2');
  });

  it('names: one line, at most 200 characters, fallback when empty', () => {
    expect(cleanName(' Bản\ttin\r\nsáng ', 'x')).toBe('Bản tin sáng');
    expect(cleanName('  ', 'upload')).toBe('upload');
    expect(cleanName(undefined, 'upload')).toBe('upload');
    expect(cleanName('a'.repeat(300), 'x')).toHaveLength(200);
  });
});

describe('ffmpeg -progress parsing', () => {
  it('takes the last out_time_us', () => {
    expect(lastOutTimeUs('out_time_us=100\nprogress=continue\nout_time_us=2000000\nprogress=end\n')).toBe(2_000_000);
    expect(lastOutTimeUs('out_time_us=N/A\nprogress=end\n')).toBeUndefined();
    expect(lastOutTimeUs('')).toBeUndefined();
  });
});

describe('runTool / checkExecutable (no shell)', () => {
  it('passes arguments verbatim: shell syntax is not interpreted', async () => {
    const r = await runTool('/bin/echo', ['$(id)', '; rm -rf /', '`x`'], { timeoutMs: 5000 });
    expect(r.stdout).toBe('$(id) ; rm -rf / `x`\n');
    expect(r.code).toBe(0);
  });

  it('feeds stdin as UTF-8', async () => {
    const r = await runTool('/bin/cat', [], { input: 'Thông báo: cắt điện', timeoutMs: 5000 });
    expect(r.stdout).toBe('Thông báo: cắt điện');
  });

  it('names a missing program and kills one that hangs', async () => {
    const err = await runTool('/nope/espeak-ng', [], { timeoutMs: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ToolMissingError);
    expect((err as ToolMissingError).message).toBe('espeak-ng not found at /nope/espeak-ng');
    const r = await runTool('/bin/sleep', ['5'], { timeoutMs: 100 });
    expect(r.timedOut).toBe(true);
  });

  it('checkExecutable: paths and PATH lookup', async () => {
    expect(await checkExecutable('/bin/sh')).toBe('ok');
    expect(await checkExecutable('sh')).toBe('ok');
    expect(await checkExecutable('/nope/x')).toBe('not found');
    const f = path.join(dir, 'noexec');
    writeFileSync(f, '#!/bin/sh\n', { mode: 0o644 });
    expect(await checkExecutable(f)).toBe('not executable'); // even root needs an x bit
  });

  it('EspeakTts.available names what is missing; unknown languages are 400', async () => {
    expect(await new EspeakTts({ espeakPath: '/nope/espeak-ng' }).available()).toEqual({ ok: false, missing: 'espeak-ng not found at /nope/espeak-ng' });
    expect(await new EspeakTts({ espeakPath: '/bin/sh', ffmpegPath: '/nope/ffmpeg' }).available()).toEqual({ ok: false, missing: 'ffmpeg not found at /nope/ffmpeg' });
    await expect(new EspeakTts().synthesize('xin chào', 'fr', path.join(dir, 'x.mp3'))).rejects.toMatchObject({ statusCode: 400, code: 'KENG_ERR_VALIDATION' });
  });
});

describe('registry', () => {
  it('media error codes are registered with their statuses', () => {
    expect(Errors.MEDIA_NOT_AUDIO('x').statusCode).toBe(422);
    expect(Errors.TTS_UNAVAILABLE('x').statusCode).toBe(503);
    expect(Errors.MEDIA_TOOL_UNAVAILABLE('x').statusCode).toBe(503);
    expect(Errors.MEDIA_IN_USE('a', 'b').statusCode).toBe(409);
    expect(Errors.RANGE_NOT_SATISFIABLE('x').statusCode).toBe(416);
    expect(ERROR_CODES).toEqual(expect.arrayContaining(['KENG_ERR_MEDIA_NOT_AUDIO', 'KENG_ERR_TTS_UNAVAILABLE']));
  });

  it('the media migration creates table media', () => {
    expect(mediaMigration.name).toBe('media');
    expect(mediaMigration.up).toContain('CREATE TABLE media');
  });
});

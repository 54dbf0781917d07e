/**
 * A client's media work is bounded, and links are not the client's to steer
 * (security review, findings 6 and 7), through the whole app over real HTTP:
 *
 * - a 2-hour silent WAV is refused for its duration, from the header and,
 *   when the header lies, by a decode that stops just past the limit;
 * - four uploads at once (the finding: 3 h of silence four times ran four
 *   ffmpeg at once) run at most media.maxConcurrentJobs ffprobe/ffmpeg
 *   processes, counted by wrapping the tools in scripts that log start and
 *   end; past the queue, 503 with Retry-After;
 * - an MP3, Ogg or WAV with 1 MB of junk appended is refused, nothing stored,
 *   while the same file without it is stored byte for byte (sha256);
 * - a forged Host header does not reach the signed links in replies.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AudioProbe, TooLongError } from '../../src/media/index.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { silentWav, uploadAudio } from '../helpers/audio.js';
import { FFMPEG, FFPROBE, makeFixtures, requireTools, sha256, type Fixtures } from './media-fixtures.js';

requireTools();

let dir: string;
let fx: Fixtures;
/** Default limits (media.maxDurationSec 1 h), links from the server's own address. */
let plain: TestApp;
/** Tools wrapped to count them, 2 jobs at once and 1 waiting, media.publicBaseUrl set. */
let counted: TestApp;
const PUBLIC_BASE = 'http://loa.xa-a.example.vn:8080';
let toolLog: string;
const twoHours = (): Buffer => silentWav(2 * 3600, 1000); // 7.2 MB

/** A shell script that logs `start|end <tool> <ns>` around the real tool, holding it for `holdSec` to make overlaps visible. */
function wrapper(name: string, real: string, log: string, holdSec: number, filter = ''): string {
  const file = path.join(dir, name);
  writeFileSync(file, [
    '#!/bin/sh',
    `echo "start ${name} $(date +%s%N)" >> "${log}"`,
    `sleep ${holdSec}`,
    filter ? `"${real}" "$@" | ${filter}` : `"${real}" "$@"`,
    'rc=$?',
    `echo "end ${name} $(date +%s%N)" >> "${log}"`,
    'exit $rc',
    '',
  ].join('\n'));
  chmodSync(file, 0o755);
  return file;
}

/** Most wrapped tool processes alive at once, and how many of each tool ran, from the wrappers' log. */
function toolUse(log: string): { maxAtOnce: number; runs: Record<string, number> } {
  const events = readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => {
    const [kind, tool, ns] = l.split(' ');
    return { kind: kind!, tool: tool!, at: BigInt(ns!) };
  }).sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.kind === 'end' ? -1 : 1));
  let now = 0;
  let maxAtOnce = 0;
  const runs: Record<string, number> = {};
  for (const e of events) {
    if (e.kind === 'start') { now++; runs[e.tool] = (runs[e.tool] ?? 0) + 1; } else now--;
    maxAtOnce = Math.max(maxAtOnce, now);
  }
  return { maxAtOnce, runs };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'keng-media-limits-'));
  fx = makeFixtures();
  toolLog = path.join(dir, 'tools.log');
  plain = await startTestApp();
  counted = await startTestApp({
    media: {
      ffprobePath: wrapper('ffprobe', FFPROBE, toolLog, 1), ffmpegPath: wrapper('ffmpeg', FFMPEG, toolLog, 1),
      maxConcurrentJobs: 2, maxQueuedJobs: 1, publicBaseUrl: PUBLIC_BASE,
    },
  });
}, 120_000);
afterAll(async () => {
  await plain?.stop();
  await counted?.stop();
  rmSync(dir, { recursive: true, force: true });
  if (fx) rmSync(fx.dir, { recursive: true, force: true });
});

const listIds = async (t: TestApp): Promise<string[]> => (await t.api('GET', '/api/v1/media?limit=1000')).body.map((m: { id: string }) => m.id);

describe('duration (media.maxDurationSec)', () => {
  it('a 2-hour silent WAV is refused with 422 KENG_ERR_MEDIA_TOO_LONG naming the limit; nothing is stored', async () => {
    const before = await listIds(plain);
    const t0 = Date.now();
    const r = await uploadAudio(plain.httpUrl, plain.adminToken, twoHours(), { filename: 'im-lang.wav' });
    expect(r.status).toBe(422);
    expect(r.body.error.code).toBe('KENG_ERR_MEDIA_TOO_LONG');
    expect(r.body.error.message).toMatch(/lasts about 2:00:00; at most 1:00:00 \(3600 s, media\.maxDurationSec\)/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(await listIds(plain)).toEqual(before);
  });

  it('when the header understates the length, the decode stops just past the limit and refuses it', async () => {
    // ffprobe made to claim one second for every file: only the decode can tell.
    const liar = wrapper('ffprobe-liar', FFPROBE, path.join(dir, 'liar.log'), 0, `sed 's/"duration": "[0-9.]*"/"duration": "1.000000"/'`);
    const file = path.join(dir, 'two-hours.wav');
    writeFileSync(file, twoHours());
    const probe = new AudioProbe({ ffprobePath: liar, ffmpegPath: FFMPEG, maxDurationSec: 60 });
    const err = await probe.probe(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TooLongError);
    expect((err as TooLongError).reason).toMatch(/lasts more than 1:00; at most 1:00 \(60 s/);
    // Within the limit the same lying probe still measures the real length.
    writeFileSync(file, silentWav(30, 1000));
    expect((await probe.probe(file)).durationSec).toBeCloseTo(30, 1);
  });
});

describe('concurrent jobs (media.maxConcurrentJobs, media.maxQueuedJobs)', () => {
  it('4 uploads at once run at most 2 tool processes; the one past the queue gets 503 with Retry-After', async () => {
    writeFileSync(toolLog, ''); // forget the start-up tools check
    const long = silentWav(20 * 60, 1000); // 20 min, 1.2 MB: within the limit
    const replies = await Promise.all([1, 2, 3, 4].map((i) => uploadAudio(counted.httpUrl, counted.adminToken, long, { name: `Dài ${i}` })));
    const statuses = replies.map((r) => r.status).sort();
    expect(statuses).toEqual([201, 201, 201, 503]);
    const busy = replies.find((r) => r.status === 503)!;
    expect(busy.body.error.code).toBe('KENG_ERR_MEDIA_BUSY');
    expect(Number(busy.headers.get('retry-after'))).toBeGreaterThan(0);
    const use = toolUse(toolLog);
    expect(use.runs).toEqual({ ffprobe: 3, ffmpeg: 3 });
    expect(use.maxAtOnce).toBe(2);
  });

  it('the finding itself: 3 h of silence four times at once: no decode at all, at most 2 ffprobe at once', async () => {
    writeFileSync(toolLog, '');
    const threeHours = silentWav(3 * 3600, 1000);
    const replies = await Promise.all([1, 2, 3, 4].map(() => uploadAudio(counted.httpUrl, counted.adminToken, threeHours)));
    for (const r of replies) expect(['KENG_ERR_MEDIA_TOO_LONG', 'KENG_ERR_MEDIA_BUSY']).toContain(r.body.error.code);
    const use = toolUse(toolLog);
    expect(use.runs.ffmpeg ?? 0).toBe(0);
    expect(use.maxAtOnce).toBeLessThanOrEqual(2);
  });

  it('after the burst the library takes uploads again', async () => {
    expect((await uploadAudio(counted.httpUrl, counted.adminToken, silentWav(1))).status).toBe(201);
  });
});

describe('data appended after the audio', () => {
  const junk = randomBytes(1024 * 1024);

  it.each(['mp3', 'ogg', 'wav'] as const)('a %s with 1 MB of junk appended is refused (422), nothing stored', async (kind) => {
    const before = await listIds(plain);
    const r = await uploadAudio(plain.httpUrl, plain.adminToken, Buffer.concat([readFileSync(fx[kind]), junk]), { filename: `tin.${kind}` });
    expect(r.status).toBe(422);
    expect(r.body.error.code).toBe('KENG_ERR_MEDIA_NOT_AUDIO');
    expect(await listIds(plain)).toEqual(before);
  });

  it('an HTML payload appended to an MP3 is refused too', async () => {
    const html = Buffer.from('<html><script>alert(document.cookie)</script></html>'.repeat(200));
    const r = await uploadAudio(plain.httpUrl, plain.adminToken, Buffer.concat([readFileSync(fx.mp3), html]), { filename: 'tin.mp3' });
    expect(r.status).toBe(422);
  });

  it('the same MP3 alone is stored byte for byte: the sha256 speakers check is that of the stored file', async () => {
    const clean = readFileSync(fx.mp3);
    const r = await uploadAudio(plain.httpUrl, plain.adminToken, clean, { filename: 'tin.mp3' });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ size: clean.length, sha256: sha256(clean) });
    const stored = Buffer.from(await (await fetch(r.body.url as string)).arrayBuffer());
    expect(sha256(stored)).toBe(r.body.sha256);
  });
});

/** GET with a forged Host (and forwarding headers), which fetch() would not send. */
function getWithHost(base: string, route: string, token: string, host: string): Promise<any> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${route}`, {
      headers: { host, 'x-forwarded-host': host, 'x-forwarded-proto': 'https', authorization: `Bearer ${token}` },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => { try { resolve(JSON.parse(text)); } catch (e) { reject(e); } });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('signed links in replies', () => {
  const EVIL = 'attacker.example:666';

  it('come from the server\'s own address, whatever Host the request names', async () => {
    const m = (await uploadAudio(plain.httpUrl, plain.adminToken, silentWav(1))).body;
    const one = await getWithHost(plain.httpUrl, `/api/v1/media/${m.id}`, plain.adminToken, EVIL);
    expect(one.url).not.toContain('attacker');
    expect(one.url.startsWith(`${plain.httpUrl}/media/${m.id}/file?`)).toBe(true);
    expect((await fetch(one.url as string)).status).toBe(200);
  });

  it('come from media.publicBaseUrl when it is set', async () => {
    const m = (await uploadAudio(counted.httpUrl, counted.adminToken, silentWav(1))).body;
    expect(m.url.startsWith(`${PUBLIC_BASE}/media/${m.id}/file?`)).toBe(true);
    const one = await getWithHost(counted.httpUrl, `/api/v1/media/${m.id}`, counted.adminToken, EVIL);
    expect(one.url).not.toContain('attacker');
    expect(one.url.startsWith(`${PUBLIC_BASE}/media/${m.id}/file?`)).toBe(true);
  });
});

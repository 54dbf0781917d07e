/**
 * The start-up check of the media tools against the real ffmpeg, ffprobe and
 * espeak-ng (Debian packages), alone and through the running app's /readyz.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MediaToolsCheck } from '../../src/media/index.js';
import { createLogger } from '../../src/core/index.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { ESPEAK, FFMPEG, FFPROBE, requireTools } from './media-fixtures.js';

requireTools();
let t: TestApp | undefined;
afterEach(async () => { await t?.stop(); t = undefined; });

describe('media tools check (real tools)', () => {
  it('finds ffprobe, ffmpeg and espeak-ng with the Vietnamese voice', async () => {
    const c = new MediaToolsCheck({ media: { ffmpegPath: FFMPEG, ffprobePath: FFPROBE }, tts: { espeakPath: ESPEAK }, logger: createLogger('silent') });
    await c.start();
    const r = c.report();
    expect(r.detail.degraded).toBe(false);
    expect(r.detail.tools.ffmpeg!.version).toMatch(/^ffmpeg version /);
    expect(r.detail.tools.ffprobe!.version).toMatch(/^ffprobe version /);
    expect(r.detail.tools['espeak-ng']!.version).toMatch(/eSpeak NG/);
  });

  it('/readyz has a media entry: ok and not degraded with the tools installed', async () => {
    t = await startTestApp();
    const res = await fetch(`${t.httpUrl}/readyz`, { headers: { authorization: `Bearer ${t.adminToken}` } }); // details need a monitoring token
    expect(res.status).toBe(200);
    const body = await res.json() as { checks: Record<string, { ok: boolean; detail: { degraded: boolean } }> };
    expect(body.checks.media).toMatchObject({ ok: true, detail: { degraded: false } });
  });

  it('/readyz stays 200 with a missing espeak-ng, reports it degraded, and TTS answers 503 naming it', async () => {
    t = await startTestApp({ tts: { espeakPath: '/nonexistent/espeak-ng' } });
    const res = await fetch(`${t.httpUrl}/readyz`, { headers: { authorization: `Bearer ${t.adminToken}` } }); // details need a monitoring token
    expect(res.status).toBe(200);
    const body = await res.json() as { checks: { media: { ok: boolean; detail: { degraded: boolean; tools: Record<string, { ok: boolean; problem?: string }> } } } };
    expect(body.checks.media.ok).toBe(true);
    expect(body.checks.media.detail.degraded).toBe(true);
    expect(body.checks.media.detail.tools['espeak-ng']).toMatchObject({ ok: false, problem: 'espeak-ng not found at /nonexistent/espeak-ng' });
    expect(body.checks.media.detail.tools.ffmpeg!.ok).toBe(true);
    const tts = await t.api('POST', '/api/v1/media/tts', { text: 'Xin chào', name: 'x' });
    expect([tts.status, tts.body.error.code]).toEqual([503, 'KENG_ERR_TTS_UNAVAILABLE']);
  });
});

/**
 * MediaToolsCheck with fake tools (shell scripts in a temp dir): a missing
 * path, a file that is not executable, a tool that exits 1, one that hangs,
 * an espeak-ng without the Vietnamese voice. Each problem is one warning
 * line naming the tool and path, and the /readyz entry stays ok (degraded).
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaToolsCheck } from '../../src/media/index.js';
import type { Logger } from '../../src/core/index.js';

let dir: string;
const tool = (name: string, body: string, mode = 0o755): string => {
  const p = path.join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, mode);
  return p;
};

function recordingLogger(): { logger: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const logger = {
    warn: (_o: unknown, msg: string) => { warnings.push(msg); },
    debug: () => {}, info: () => {}, error: () => {},
  } as unknown as Logger;
  return { logger, warnings };
}

let goodFfmpeg: string, goodFfprobe: string, goodEspeak: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'keng-tools-'));
  goodFfmpeg = tool('ffmpeg', 'echo "ffmpeg version 9.9-fake Copyright"');
  goodFfprobe = tool('ffprobe', 'echo "ffprobe version 9.9-fake Copyright"');
  goodEspeak = tool('espeak-ng', [
    'case "$1" in',
    '  --version) echo "eSpeak NG text-to-speech: 1.51  Data at: /usr/share/espeak-ng-data" ;;',
    '  --voices=vi) printf "Pty Language       Age/Gender VoiceName          File                 Other Languages\\n 5  vi              --/M      Vietnamese_(Northern) aav/vi\\n" ;;',
    '  *) exit 2 ;;',
    'esac',
  ].join('\n'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function check(paths: { ffmpeg?: string; ffprobe?: string; espeak?: string }, timeoutMs?: number) {
  const { logger, warnings } = recordingLogger();
  const c = new MediaToolsCheck({
    media: { ffmpegPath: paths.ffmpeg ?? goodFfmpeg, ffprobePath: paths.ffprobe ?? goodFfprobe },
    tts: { espeakPath: paths.espeak ?? goodEspeak },
    logger, timeoutMs,
  });
  await c.start();
  return { c, warnings, report: c.report() };
}

describe('MediaToolsCheck', () => {
  it('the constructor runs nothing; start() probes each tool', async () => {
    const { logger, warnings } = recordingLogger();
    const c = new MediaToolsCheck({ media: { ffmpegPath: '/nonexistent', ffprobePath: '/nonexistent' }, tts: { espeakPath: '/nonexistent' }, logger });
    expect(c.tools()).toEqual([]);
    expect(warnings).toEqual([]);
  });

  it('all usable: not degraded, versions reported, no warning', async () => {
    const { report, warnings } = await check({});
    expect(warnings).toEqual([]);
    expect(report).toEqual({
      ok: true,
      detail: {
        degraded: false,
        tools: {
          ffprobe: { ok: true, path: goodFfprobe, version: 'ffprobe version 9.9-fake Copyright' },
          ffmpeg: { ok: true, path: goodFfmpeg, version: 'ffmpeg version 9.9-fake Copyright' },
          'espeak-ng': { ok: true, path: goodEspeak, version: 'eSpeak NG text-to-speech: 1.51  Data at: /usr/share/espeak-ng-data' },
        },
      },
    });
  });

  it('a missing path: one warning naming tool and path, and what stops working; still ok', async () => {
    const missing = path.join(dir, 'no-such-ffprobe');
    const { report, warnings } = await check({ ffprobe: missing });
    expect(report.ok).toBe(true);
    expect(report.detail.degraded).toBe(true);
    expect(report.detail.tools.ffprobe).toEqual({ ok: false, path: missing, problem: `ffprobe not found at ${missing}` });
    expect(warnings).toEqual([`ffprobe not found at ${missing}: audio uploads are refused (503)`]);
  });

  it('a file that is not executable', async () => {
    const p = tool('ffmpeg-noexec', 'echo hi', 0o644);
    const { report, warnings } = await check({ ffmpeg: p });
    expect(report.detail.tools.ffmpeg!.problem).toBe(`ffmpeg not executable at ${p}`);
    expect(warnings).toHaveLength(1);
  });

  it('a tool that exits 1: broken, with its first error line', async () => {
    const p = tool('ffmpeg-broken', 'echo "ffmpeg: error while loading shared libraries: libavdevice.so.59" >&2; exit 1');
    const { report, warnings } = await check({ ffmpeg: p });
    expect(report.detail.tools.ffmpeg).toEqual({
      ok: false, path: p, problem: `ffmpeg at ${p} is broken (exit 1: ffmpeg: error while loading shared libraries: libavdevice.so.59)`,
    });
    expect(warnings).toEqual([`${report.detail.tools.ffmpeg!.problem}: audio uploads and text-to-speech are refused (503)`]);
  });

  it('a tool that hangs is given up after the timeout', async () => {
    const p = tool('ffprobe-hangs', 'sleep 5');
    const t0 = Date.now();
    const { report } = await check({ ffprobe: p }, 300);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(report.detail.tools.ffprobe!.problem).toBe(`ffprobe at ${p} did not answer within 300 ms`);
  });

  it('espeak-ng without the Vietnamese voice (no espeak-ng-data) is degraded', async () => {
    const p = tool('espeak-no-vi', [
      'case "$1" in',
      '  --version) echo "eSpeak NG text-to-speech: 1.51" ;;',
      '  --voices=vi) echo "Pty Language       Age/Gender VoiceName          File                 Other Languages" ;;',
      'esac',
    ].join('\n'));
    const { report, warnings } = await check({ espeak: p });
    expect(report.detail.tools['espeak-ng']!.ok).toBe(false);
    expect(report.detail.tools['espeak-ng']!.problem).toBe(`espeak-ng at ${p} has no "vi" (Vietnamese) voice`);
    expect(warnings).toEqual([`espeak-ng at ${p} has no "vi" (Vietnamese) voice: text-to-speech is refused (503)`]);
  });

  it('everything missing: one line per tool', async () => {
    const { warnings, report } = await check({ ffmpeg: '/nonexistent/ffmpeg', ffprobe: '/nonexistent/ffprobe', espeak: '/nonexistent/espeak-ng' });
    expect(warnings).toHaveLength(3);
    expect(report).toMatchObject({ ok: true, detail: { degraded: true } });
  });
});

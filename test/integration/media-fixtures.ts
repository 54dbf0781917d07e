/**
 * Test audio generated at test time with the real ffmpeg (no binary
 * fixtures in git), plus a state store with the media migration and a
 * MediaLibrary over a temp data dir.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Metrics, createLogger, type Logger } from '../../src/core/index.js';
import { MIGRATIONS, StateDb, stateSqlitePort } from '../../src/storage/state/index.js';
import { MediaLibrary, mediaAreasMigration, mediaMigration, type MediaInUse, type MediaLibraryOptions, type TtsEngine } from '../../src/media/index.js';

export const FFMPEG = '/usr/bin/ffmpeg';
export const FFPROBE = '/usr/bin/ffprobe';
export const ESPEAK = '/usr/bin/espeak-ng';

/** Fails loudly (not skipped) when a required program is missing. */
export function requireTools(): void {
  for (const t of [FFMPEG, FFPROBE, ESPEAK]) {
    try { accessSync(t, constants.X_OK); } catch { throw new Error(`${t} is required by the media tests (apt-get install ffmpeg espeak-ng)`); }
  }
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

function ffmpeg(args: string[]): void {
  execFileSync(FFMPEG, ['-nostdin', '-hide_banner', '-v', 'error', '-y', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

export interface Fixtures {
  dir: string;
  wav: string; mp3: string; ogg: string; opus: string;
  /** MP3 with an embedded cover picture (attached_pic video stream). */
  mp3Cover: string;
  video: string; png: string; textAsMp3: string; truncatedMp3: string; empty: string;
  /** WAV whose audio is MP3-compressed (a WAV, but not PCM). */
  wavMp3: string;
  flac: string;
  /** 6 s of WAV (about 530 kB), for size limits. */
  bigWav: string;
}

/** Generates every fixture into a new temp dir (2 s of 440 Hz for the good ones). */
export function makeFixtures(): Fixtures {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-media-fx-'));
  const f = (n: string): string => path.join(dir, n);
  const sine = ['-f', 'lavfi', '-i', 'sine=frequency=440:duration=2'];
  ffmpeg([...sine, f('tone.wav')]);
  ffmpeg([...sine, '-codec:a', 'libmp3lame', '-b:a', '64k', f('tone.mp3')]);
  ffmpeg([...sine, '-codec:a', 'libvorbis', f('tone.ogg')]);
  ffmpeg([...sine, '-codec:a', 'libopus', '-f', 'ogg', f('tone.opus.ogg')]);
  ffmpeg(['-f', 'lavfi', '-i', 'testsrc=size=32x32', '-frames:v', '1', f('pic.png')]);
  ffmpeg(['-i', f('tone.mp3'), '-i', f('pic.png'), '-map', '0:a', '-map', '1:v', '-c:a', 'copy', '-c:v', 'png',
    '-disposition:v', 'attached_pic', '-id3v2_version', '3', f('cover.mp3')]);
  ffmpeg(['-f', 'lavfi', '-i', 'testsrc=duration=2:size=64x64:rate=10', ...sine, '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-c:a', 'aac', '-shortest', f('clip.mp4')]);
  ffmpeg([...sine, '-codec:a', 'libmp3lame', '-f', 'wav', f('mp3-in.wav')]);
  ffmpeg([...sine, '-codec:a', 'flac', f('tone.flac')]);
  ffmpeg(['-f', 'lavfi', '-i', 'sine=frequency=440:duration=6', f('long.wav')]);
  writeFileSync(f('notes.mp3'), 'Thông báo họp thôn lúc 8 giờ.\nThis is a text file, not audio.\n');
  writeFileSync(f('cut.mp3'), readFileSync(f('tone.mp3')).subarray(0, 100));
  writeFileSync(f('empty.mp3'), Buffer.alloc(0));
  return {
    dir, wav: f('tone.wav'), mp3: f('tone.mp3'), ogg: f('tone.ogg'), opus: f('tone.opus.ogg'), mp3Cover: f('cover.mp3'),
    video: f('clip.mp4'), png: f('pic.png'), textAsMp3: f('notes.mp3'), truncatedMp3: f('cut.mp3'), empty: f('empty.mp3'),
    wavMp3: f('mp3-in.wav'), flac: f('tone.flac'), bigWav: f('long.wav'),
  };
}

export interface LibraryHarness {
  dataDir: string;
  db: StateDb;
  media: MediaLibrary;
  metrics: Metrics;
  logger: Logger;
  clock: { now(): number; set(ms: number): void };
  stop(): Promise<void>;
}

export async function startLibrary(opts: Partial<MediaLibraryOptions> & { tts?: TtsEngine; isInUse?: MediaInUse; dataDir?: string } = {}): Promise<LibraryHarness> {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), 'keng-media-data-'));
  const logger = createLogger('silent');
  const metrics = new Metrics({ defaultMetrics: false });
  let skew = 0;
  const clock = { now: () => Date.now() + skew, set: (ms: number) => { skew = ms - Date.now(); } };
  // The core migrations (accounts among them), then the media library's own.
  const migrations = [...MIGRATIONS, { ...mediaMigration, version: MIGRATIONS.length + 1 }, { ...mediaAreasMigration, version: MIGRATIONS.length + 2 }];
  const db = new StateDb({ dataDir, logger, migrations });
  await db.start();
  const { tts, isInUse, dataDir: _d, ...rest } = opts;
  const media = new MediaLibrary({
    db: stateSqlitePort(db), dataDir, logger, metrics, clock, tts, isInUse,
    options: { maxUploadBytes: 5 * 1024 * 1024, signedUrlTtlSec: 900, ffprobePath: FFPROBE, ffmpegPath: FFMPEG, ...rest },
  });
  await media.start();
  return { dataDir, db, media, metrics, logger, clock, async stop() { await media.stop(); await db.stop(); } };
}

/**
 * How a file gets into the media library: streamed into <dataDir>/media/.tmp while hashed and
 * counted (refused past maxUploadBytes), checked with ffprobe and a full ffmpeg decode (probe.ts),
 * fsynced, renamed into place and recorded. A failure at any step leaves no file. Checking and TTS
 * rendering run at most maxConcurrentJobs at once (jobs.ts); every outcome is counted in
 * `keng_media_ingest_total{source,result}`.
 *
 * Separate from MediaLibrary because intake is the one path that touches ffmpeg, the job slots and
 * the temp directory; the library keeps reading, access, deleting and signed links.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Counter } from 'prom-client';
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { counterOn, type Metrics } from '../core/metrics.js';
import { JobLimiter } from './jobs.js';
import { AudioProbe, NotAudioError, TooLongError } from './probe.js';
import type { Transaction } from 'kysely';
import { toRecord, type StoredMedia } from './repo.js';
import { ToolMissingError } from './run.js';
import type { MediaRecord, MediaSource } from './types.js';

/** A received file waiting in the temp directory (receive → importStaged or discard). */
export interface StagedFile { path: string; size: number; sha256: string }

export interface NewMediaMeta {
  name?: string;
  /** Principal id, for the record. */
  createdBy?: string | null;
  /** Areas the item belongs to (access.ts); default [] (admins only), as for alert announcements. */
  areas?: readonly string[];
}

/** What is recorded with a checked file besides what the check found. */
export type IntakeMeta = NewMediaMeta & { source: MediaSource; text?: string | null; fallbackName: string };

export interface MediaIntakeOptions {
  /** Largest accepted upload in bytes (setting media.maxUploadBytes). */
  maxUploadBytes: number;
  /** Default /usr/bin/ffprobe (setting media.ffprobePath). */
  ffprobePath?: string;
  /** Default /usr/bin/ffmpeg (setting media.ffmpegPath). */
  ffmpegPath?: string;
  /** Limit for probing and for decoding one file; default 120 s. */
  probeTimeoutMs?: number;
  /** Longest accepted audio (setting media.maxDurationSec); default 3600. */
  maxDurationSec?: number;
  /** Checks and TTS renders at once (setting media.maxConcurrentJobs); default 2. */
  maxConcurrentJobs?: number;
  /** Jobs that may wait for a slot (setting media.maxQueuedJobs); default 8. */
  maxQueuedJobs?: number;
}

export interface MediaIntakeDeps {
  /** <dataDir>/media/.tmp: everything staged lives here until renamed into place. */
  tmpDir: string;
  /** Where a recorded item's file lives. */
  fileOf: (r: { id: string; ext: string }) => string;
  /** Records a checked file (the library: database and its copy); `also` runs in the insert's transaction. */
  record: (r: StoredMedia, also?: RecordAlso) => Promise<void>;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  options: MediaIntakeOptions;
}

/** Runs in the insert's transaction with the new record (an audit entry). */
export type RecordAlso = (trx: Transaction<unknown>, rec: MediaRecord) => Promise<unknown>;

export function newMediaId(): string { return randomBytes(10).toString('hex'); }

/** One line, no control characters, at most 200 characters. */
export function cleanName(raw: string | undefined, fallback: string): string {
  // eslint-disable-next-line no-control-regex
  const s = (raw ?? '').normalize('NFC').replace(/[\u0000-\u001f\u007f]+/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
  return s || fallback;
}

export class MediaIntake {
  private readonly probe: AudioProbe;
  private readonly jobs: JobLimiter;
  private readonly ingestTotal: Counter<'source' | 'result'>;

  constructor(private readonly d: MediaIntakeDeps) {
    const o = d.options;
    this.probe = new AudioProbe({
      ffprobePath: o.ffprobePath ?? '/usr/bin/ffprobe', ffmpegPath: o.ffmpegPath ?? '/usr/bin/ffmpeg', timeoutMs: o.probeTimeoutMs, maxDurationSec: o.maxDurationSec,
    });
    this.jobs = new JobLimiter({ maxRunning: o.maxConcurrentJobs ?? 2, maxWaiting: o.maxQueuedJobs ?? 8 });
    this.ingestTotal = counterOn(d.metrics.registry, 'keng_media_ingest_total', 'Media files offered to the library by source (upload, tts) and result', ['source', 'result'] as const);
  }

  /** Streams `source` into a temp file, hashing and counting; refuses (413) past maxUploadBytes. */
  async receive(source: Readable): Promise<StagedFile> {
    const tmp = path.join(this.d.tmpDir, `${newMediaId()}.part`);
    const max = this.d.options.maxUploadBytes;
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        size += chunk.length;
        if (size > max) { cb(Errors.PAYLOAD_TOO_LARGE(`media files may be at most ${max} bytes (media.maxUploadBytes)`)); return; }
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(source, meter, createWriteStream(tmp, { flags: 'wx', mode: 0o640 }));
      await fsync(tmp);
    } catch (e) {
      await rm(tmp, { force: true });
      if (size > max) this.ingestTotal.inc({ source: 'upload', result: 'too_large' });
      throw e;
    }
    return { path: tmp, size, sha256: hash.digest('hex') };
  }

  /** Checks a staged file and stores it (see MediaLibrary.importStaged); the staged file is consumed either way. */
  async importStaged(staged: StagedFile, meta: IntakeMeta, also?: RecordAlso): Promise<MediaRecord> {
    try {
      return await this.job(meta.source, () => this.store(staged, meta, also));
    } finally {
      await rm(staged.path, { force: true });
    }
  }

  /**
   * Renders into a temp file with `render` (text-to-speech) and stores the result like an upload,
   * rendering and checking in one job slot: espeak-ng and ffmpeg are the work being bounded.
   * `urgent` waits for a slot but is never refused for a full queue.
   */
  async render(render: (out: string) => Promise<void>, meta: IntakeMeta, urgent = false, also?: RecordAlso): Promise<MediaRecord> {
    const out = path.join(this.d.tmpDir, `${newMediaId()}.tts`);
    try {
      return await this.job(meta.source, async () => {
        await render(out);
        return this.storeRendered(out, meta, also);
      }, urgent);
    } catch (e) {
      if (!(e as { statusCode?: number }).statusCode) this.ingestTotal.inc({ source: meta.source, result: 'error' });
      throw e;
    } finally {
      await rm(out, { force: true });
    }
  }

  /** Checks and records a staged file (within a job slot). */
  private async store(staged: StagedFile, meta: IntakeMeta, also?: RecordAlso): Promise<MediaRecord> {
    if (!staged.path.startsWith(this.d.tmpDir + path.sep)) throw new Error('importStaged: not a staged file of this library');
    const info = await this.check(staged.path, meta.source);
    const id = newMediaId();
    const rec: StoredMedia = {
      id, name: cleanName(meta.name, meta.fallbackName), mime: info.mime, ext: info.ext, size: staged.size, sha256: staged.sha256,
      durationSec: info.durationSec, source: meta.source, text: meta.text ?? null, createdAt: this.d.clock.now(), createdBy: meta.createdBy ?? null,
      areas: [...new Set(meta.areas ?? [])],
    };
    const final = this.d.fileOf(rec);
    // The checked file itself is stored (renamed, never rewritten), so sha256 and size are the stored bytes'.
    await rename(staged.path, final);
    try {
      await this.d.record(rec, also);
    } catch (e) {
      await rm(final, { force: true });
      throw e;
    }
    this.ingestTotal.inc({ source: meta.source, result: 'ok' });
    this.d.logger.info({ id, source: rec.source, mime: rec.mime, size: rec.size, durationSec: rec.durationSec, by: rec.createdBy, areas: rec.areas }, 'media stored');
    return toRecord(rec);
  }

  /** Runs `fn` in a job slot; counts a refusal (503 KENG_ERR_MEDIA_BUSY) as result "busy". */
  private async job<T>(source: MediaSource, fn: () => Promise<T>, urgent = false): Promise<T> {
    try {
      return await this.jobs.run(fn, { urgent });
    } catch (e) {
      if ((e as { code?: string }).code === 'KENG_ERR_MEDIA_BUSY') this.ingestTotal.inc({ source, result: 'busy' });
      throw e;
    }
  }

  private async check(file: string, source: MediaSource) {
    try {
      return await this.probe.probe(file);
    } catch (e) {
      if (e instanceof NotAudioError) {
        this.ingestTotal.inc({ source, result: 'not_audio' });
        throw Errors.MEDIA_NOT_AUDIO(e.reason);
      }
      if (e instanceof TooLongError) {
        this.ingestTotal.inc({ source, result: 'too_long' });
        throw Errors.MEDIA_TOO_LONG(e.reason);
      }
      if (e instanceof ToolMissingError) {
        this.ingestTotal.inc({ source, result: 'error' });
        this.d.logger.error({ path: e.path }, `${e.label} is missing: audio cannot be checked`);
        throw Errors.MEDIA_TOOL_UNAVAILABLE(e.describe());
      }
      throw e;
    }
  }

  /** Stores a file the library rendered (TTS output): staged, checked and recorded like an upload. */
  private async storeRendered(file: string, meta: IntakeMeta, also?: RecordAlso): Promise<MediaRecord> {
    const staged = await this.stageExisting(file);
    try {
      return await this.store(staged, meta, also);
    } finally {
      await rm(staged.path, { force: true });
    }
  }

  /** Hashes a file the library wrote itself (TTS output) and moves it to a staged name. */
  private async stageExisting(file: string): Promise<StagedFile> {
    const hash = createHash('sha256');
    let size = 0;
    await pipeline(createReadStream(file), async (src: AsyncIterable<Buffer>) => {
      for await (const chunk of src) { size += chunk.length; hash.update(chunk); }
    });
    await fsync(file);
    const staged = path.join(this.d.tmpDir, `${newMediaId()}.part`);
    await rename(file, staged);
    return { path: staged, size, sha256: hash.digest('hex') };
  }
}

async function fsync(file: string): Promise<void> {
  const fh = await open(file, 'r');
  try { await fh.sync(); } finally { await fh.close(); }
}

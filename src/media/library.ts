/**
 * The media library: audio files for broadcasts under <dataDir>/media, with
 * their metadata in the state store (table `media`).
 *
 * Every file goes the same way (intake.ts): streamed into <dataDir>/media/.tmp
 * while hashed and counted (refused past maxUploadBytes), checked with ffprobe
 * and a full ffmpeg decode (only real MP3/WAV/Ogg audio of at most
 * maxDurationSec, with nothing appended, gets in: probe.ts), fsynced, then
 * renamed into place and recorded. A failure at any step leaves no file.
 * Checking and TTS rendering run at most maxConcurrentJobs at once (jobs.ts).
 * Speakers fetch files through short-lived signed links (signing.ts).
 *
 * Each item belongs to areas (access.ts). Methods given a MediaViewer answer
 * for that caller (404 for what it may not see); the others are for Keng's
 * own use (the broadcast executor, alerts) and see everything.
 */
import { mkdirSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { StateDb } from '../storage/state/db.js';
import { canManage, canSee, type MediaViewer } from './access.js';
import { MediaIntake, cleanName, type IntakeMeta, type MediaIntakeOptions, type NewMediaMeta, type StagedFile } from './intake.js';
import { MediaRepo, toRecord } from './repo.js';
import { SIGNING_KEY_FILE, UrlSigner, loadOrCreateKey, type Verdict } from './signing.js';
import type { AnnouncementSegment, MediaRecord, MediaRef, TtsEngine } from './types.js';

/** The intake's settings (upload size, ffprobe/ffmpeg, job slots: intake.ts) and those of signed links. */
export interface MediaLibraryOptions extends MediaIntakeOptions {
  /** Default lifetime of signed links (setting media.signedUrlTtlSec). */
  signedUrlTtlSec: number;
  /** HMAC key for signed links; default: <dataDir>/media-signing.key, created on first start. */
  signingKey?: Buffer;
  /** Base URL speakers use to reach Keng's HTTP (setting media.publicBaseUrl), used when signedUrl() gets none. */
  publicBaseUrl?: string;
}

/**
 * Says whether something (a schedule) still uses the media: false/undefined
 * when free, true or a description (e.g. `schedule "Bản tin sáng"`) when used.
 * `viewer` is who asks: the description must not name what it may not see.
 */
export type MediaInUse = (mediaId: string, viewer?: MediaViewer) => boolean | string | undefined | Promise<boolean | string | undefined>;

export interface MediaLibraryDeps {
  db: StateDb;
  dataDir: string;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  options: MediaLibraryOptions;
  /** Text-to-speech engine (EspeakTts); without one, synthesize() answers KENG_ERR_TTS_UNAVAILABLE. */
  tts?: TtsEngine;
  isInUse?: MediaInUse;
}

export { cleanName, type NewMediaMeta, type StagedFile } from './intake.js';

const ID_RE = /^[a-f0-9]{20}$/;
const TMP = '.tmp';

export class MediaLibrary implements Component {
  readonly name = 'media';
  private readonly dir: string;
  private readonly tmpDir: string;
  private readonly repo: MediaRepo;
  private readonly log: Logger;
  private signer: UrlSigner | null = null;
  private readonly isInUse: MediaInUse | undefined;
  /** Receiving, checking and recording files, and the job slots (intake.ts). */
  private readonly intake: MediaIntake;

  constructor(private readonly deps: MediaLibraryDeps) {
    this.dir = path.join(deps.dataDir, 'media');
    this.tmpDir = path.join(this.dir, TMP);
    this.repo = new MediaRepo(() => deps.db.db);
    this.log = deps.logger.child({ module: 'media' });
    this.isInUse = deps.isInUse;
    this.intake = new MediaIntake({
      tmpDir: this.tmpDir, fileOf: (r) => this.fileOf(r), repo: this.repo, logger: this.log, metrics: deps.metrics, clock: deps.clock, options: deps.options,
    });
  }

  get maxUploadBytes(): number { return this.deps.options.maxUploadBytes; }
  get tts(): TtsEngine | undefined { return this.deps.tts; }

  async start(): Promise<void> {
    mkdirSync(this.tmpDir, { recursive: true, mode: 0o750 });
    this.signer = new UrlSigner(this.deps.options.signingKey ?? loadOrCreateKey(path.join(this.deps.dataDir, SIGNING_KEY_FILE)));
    // Leftovers of a crash: half-received temp files, and files renamed into place whose row was never written.
    await rm(this.tmpDir, { recursive: true, force: true });
    mkdirSync(this.tmpDir, { recursive: true, mode: 0o750 });
    const known = this.repo.fileNames();
    for (const f of await readdir(this.dir)) {
      if (f !== TMP && ID_RE.test(f.split('.')[0] ?? '') && !known.has(f)) {
        this.log.warn({ file: f }, 'removing media file without a library record');
        await rm(path.join(this.dir, f), { force: true });
      }
    }
  }

  async stop(): Promise<void> {
    this.signer = null;
  }

  // ---- adding media -------------------------------------------------------

  /** Streams `source` into a temp file, hashing and counting; refuses (413) past maxUploadBytes. */
  receive(source: Readable): Promise<StagedFile> {
    return this.intake.receive(source);
  }

  /** Removes a staged file that will not be imported. */
  async discard(staged: StagedFile | null | undefined): Promise<void> {
    if (staged) await rm(staged.path, { force: true });
  }

  /**
   * Checks a staged file and stores it: 422 KENG_ERR_MEDIA_NOT_AUDIO when it
   * is not playable audio, 503 KENG_ERR_MEDIA_TOOL_UNAVAILABLE without
   * ffprobe/ffmpeg. The staged file is consumed either way.
   */
  importStaged(staged: StagedFile, meta: IntakeMeta): Promise<MediaRecord> {
    return this.intake.importStaged(staged, meta);
  }

  /** receive + importStaged: store an audio stream (e.g. an upload's file part). */
  async upload(source: Readable, meta: NewMediaMeta & { filename?: string } = {}): Promise<MediaRecord> {
    const staged = await this.receive(source);
    return this.importStaged(staged, { ...meta, source: 'upload', fallbackName: cleanName(meta.filename, 'upload') });
  }

  /** Renders `text` with the TTS engine and stores the result (source 'tts', text kept). */
  async synthesize(text: string, lang: string, meta: NewMediaMeta = {}): Promise<MediaRecord> {
    const tts = this.deps.tts;
    if (!tts) throw Errors.TTS_UNAVAILABLE('no text-to-speech engine is configured');
    return this.intake.render((out) => tts.synthesize(text, lang, out), { ...meta, source: 'tts', text, fallbackName: cleanName(text.slice(0, 60), 'TTS') });
  }

  /**
   * Renders an announcement (TtsEngine.synthesizeSequence: tone, spoken parts,
   * stored audio) and stores it (source 'tts', the spoken parts kept as text).
   * Stored audio is given by media id and must exist.
   */
  async synthesizeSequence(segments: ReadonlyArray<AnnouncementSegment | { mediaId: string }>, lang: string, meta: NewMediaMeta = {}): Promise<MediaRecord> {
    const tts = this.deps.tts;
    if (!tts?.synthesizeSequence) throw Errors.TTS_UNAVAILABLE('no text-to-speech engine that builds announcements is configured');
    const parts = segments.map((seg): AnnouncementSegment => {
      if (!('mediaId' in seg)) return seg;
      const f = this.file(seg.mediaId);
      if (!f) throw Errors.UNPROCESSABLE(`media "${seg.mediaId}" does not exist`);
      return { file: f.path };
    });
    const text = segments.flatMap((seg) => ('text' in seg ? [seg.text] : [])).join('\n');
    // Announcements are alerts: they wait for a slot but are never refused for a full queue.
    return this.intake.render((out) => tts.synthesizeSequence!(parts, lang, out),
      { ...meta, source: 'tts', text, fallbackName: cleanName(text.slice(0, 60), 'TTS') }, true);
  }

  // ---- reading and deleting ----------------------------------------------

  /** Any item, whoever it belongs to (Keng's own use). */
  get(id: string): MediaRecord | undefined {
    const r = this.repo.get(id);
    return r ? toRecord(r) : undefined;
  }

  /** The item as `viewer` may see it; 404 when unknown or not visible to it (existence does not leak). */
  getFor(viewer: MediaViewer, id: string): MediaRecord {
    const r = this.repo.get(id);
    if (!r || !canSee(viewer, r.areas)) throw Errors.NOT_FOUND(`Media "${id}"`);
    return toRecord(r);
  }

  /** Newest first; with `viewer`, only what it may see. */
  list(opts: { limit?: number; offset?: number; viewer?: MediaViewer } = {}): MediaRecord[] {
    return this.repo.list(opts.limit ?? 200, opts.offset ?? 0, seesOf(opts.viewer)).map(toRecord);
  }

  count(viewer?: MediaViewer): number { return this.repo.count(seesOf(viewer)); }

  /**
   * Renames an item or gives it other areas, for `viewer`: 404 when it may not
   * see it, 403 unless the item lies wholly within its areas. The caller
   * checks new areas (assignableAreas). Returns the item before and after.
   */
  update(viewer: MediaViewer, id: string, changes: { name?: string; areas?: readonly string[] }): { before: MediaRecord; after: MediaRecord } {
    const before = this.manageable(viewer, id, 'change');
    const name = changes.name === undefined ? undefined : cleanName(changes.name, before.name);
    const areas = changes.areas === undefined ? undefined : [...new Set(changes.areas)];
    if (!this.repo.update(id, { name, areas })) throw Errors.NOT_FOUND(`Media "${id}"`);
    const after = this.get(id)!;
    this.log.info({ id, areas: after.areas }, 'media changed');
    return { before, after };
  }

  /** The stored file of a media item (for the signed download route). */
  file(id: string): { record: MediaRecord; path: string } | undefined {
    const r = this.repo.get(id);
    return r ? { record: toRecord(r), path: this.fileOf(r) } : undefined;
  }

  /**
   * Deletes the record and the file; 404 when unknown, 409
   * KENG_ERR_MEDIA_IN_USE when still used. With `viewer` (an API caller):
   * 404 also when it may not see the item, 403 unless the item lies wholly
   * within its areas, and the 409 names only what it may see.
   */
  async delete(id: string, opts: { by?: string | null; viewer?: MediaViewer } = {}): Promise<MediaRecord> {
    if (opts.viewer) this.manageable(opts.viewer, id, 'delete');
    const r = this.repo.get(id);
    if (!r) throw Errors.NOT_FOUND(`Media "${id}"`);
    const used = await this.isInUse?.(id, opts.viewer);
    if (used) throw Errors.MEDIA_IN_USE(id, typeof used === 'string' ? used : 'a schedule or broadcast');
    this.repo.delete(id);
    // A speaker still downloading keeps its open file; new requests get 404.
    await rm(this.fileOf(r), { force: true });
    this.log.info({ id, by: opts.by ?? null }, 'media deleted');
    return toRecord(r);
  }

  /** The item for a change by `viewer`: 404 when it may not see it, 403 when it belongs to areas beyond the viewer's. */
  private manageable(viewer: MediaViewer, id: string, verb: 'change' | 'delete'): MediaRecord {
    const rec = this.getFor(viewer, id);
    if (!canManage(viewer, rec.areas)) {
      throw Errors.FORBIDDEN(rec.areas.includes('*') ? `only an admin may ${verb} media shared with every area`
        : `media "${id}" belongs to areas outside yours; staff over all of them, or an admin, may ${verb} it`);
    }
    return rec;
  }

  // ---- signed links for speakers ------------------------------------------

  /**
   * `${baseUrl}/media/<id>/file?exp=<unix s>&sig=<hmac>`, valid for ttlSec
   * (default media.signedUrlTtlSec). baseUrl defaults to media.publicBaseUrl.
   */
  signedUrl(mediaId: string, baseUrl?: string, ttlSec?: number): string {
    const base = (baseUrl ?? this.deps.options.publicBaseUrl)?.replace(/\/+$/, '');
    if (!base) throw new Error('MediaLibrary.signedUrl: no baseUrl given and no publicBaseUrl configured');
    const exp = Math.floor(this.deps.clock.now() / 1000) + Math.max(1, Math.round(ttlSec ?? this.deps.options.signedUrlTtlSec));
    return `${base}/media/${encodeURIComponent(mediaId)}/file?exp=${exp}&sig=${this.requireSigner().sign(mediaId, exp)}`;
  }

  /** The `media` object of broadcast.play (device-protocol.md); 404 when unknown. */
  mediaRef(mediaId: string, baseUrl?: string, ttlSec?: number): MediaRef {
    const r = this.repo.get(mediaId);
    if (!r) throw Errors.NOT_FOUND(`Media "${mediaId}"`);
    return { url: this.signedUrl(mediaId, baseUrl, ttlSec), sha256: r.sha256, durationSec: r.durationSec, mime: r.mime };
  }

  /** Checks a link's exp and sig (timing-safe) against the clock. */
  verifyLink(mediaId: string, exp: string | undefined, sig: string | undefined): Verdict {
    return this.requireSigner().verify(mediaId, exp, sig, this.deps.clock.now());
  }

  // ---- internals -----------------------------------------------------------

  private requireSigner(): UrlSigner {
    if (!this.signer) throw Errors.NOT_READY('media library is not started');
    return this.signer;
  }

  private fileOf(r: { id: string; ext: string }): string {
    return path.join(this.dir, `${r.id}.${r.ext}`);
  }
}

/** A viewer's `sees` for the repo's SQL filter; undefined (every row) for Keng itself and admins. */
function seesOf(v: MediaViewer | undefined): ReadonlySet<string> | undefined {
  return v && !v.all ? v.sees : undefined;
}

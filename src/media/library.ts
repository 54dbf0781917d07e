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
 *
 * Storage: the state `Db` port (repo.ts), so in cluster mode every node shares
 * the records (PostgreSQL). What the API shows is read from the database.
 * The synchronous readers (the broadcast path resolving a mediaId, the names
 * in the broadcast log, signed links) use an in-memory copy of the records,
 * loaded at start, updated by this node's own changes and, in cluster mode,
 * reloaded every `reloadMs` (5 s); lookup() reads one record from the
 * database and refreshes it in the copy (the API paths that then play it).
 * The files are not shared by Keng: in cluster mode <dataDir>/media must be
 * shared storage or copied (docs/cluster.md); a node without a file answers
 * KENG_ERR_MEDIA_FILE_MISSING and counts it.
 */
import { mkdirSync } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import type { Transaction } from 'kysely';
import type { Counter } from 'prom-client';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import { counterOn, type Metrics } from '../core/metrics.js';
import type { Db } from '../storage/sql/index.js';
import { canManage, canSee, type MediaViewer } from './access.js';
import { MediaIntake, cleanName, type IntakeMeta, type MediaIntakeOptions, type NewMediaMeta, type StagedFile } from './intake.js';
import { MediaCopy } from './copy.js';
import { MediaRepo, toRecord, type StoredMedia } from './repo.js';
import { SIGNING_KEY_FILE, UrlSigner, loadOrCreateKey, sharedSigningKey, type Verdict } from './signing.js';
import type { SharedSecrets } from '../storage/secrets/index.js';
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
 * `trx` is the delete's write transaction (on the same `Db`): read through it,
 * and only the database may be awaited (src/storage/state/sql.ts), so that
 * the check and the delete are one transaction (no schedule of another node
 * starts using the media in between: BroadcastService.mediaInUse locks).
 */
export type MediaInUse = (mediaId: string, viewer?: MediaViewer, trx?: Transaction<unknown>) => boolean | string | undefined | Promise<boolean | string | undefined>;

/** Runs inside the write transaction of a change, with what it made (an audit entry: committed with it or not at all). */
export type InTransaction<T> = (trx: Transaction<unknown>, value: T) => Promise<unknown>;

/** Cluster mode: how often a node reloads the records written by the others. */
export const CLUSTER_RELOAD_MS = 5_000;
/** Cluster mode: a file without a record is removed at start only when older than this (another node may be storing it). */
const ORPHAN_MIN_AGE_MS = 60 * 60_000;

export interface MediaLibraryDeps {
  /** The state store: the embedded state.db, or PostgreSQL in cluster mode. */
  db: Db<unknown>;
  dataDir: string;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  options: MediaLibraryOptions;
  /** Text-to-speech engine (EspeakTts); without one, synthesize() answers KENG_ERR_TTS_UNAVAILABLE. */
  tts?: TtsEngine;
  isInUse?: MediaInUse;
  /** Reload of the records written by other nodes; 0: never. Default: CLUSTER_RELOAD_MS on PostgreSQL, 0 on SQLite (one writer). */
  reloadMs?: number;
  /**
   * Cluster mode: this node's id. Its staged files then live in .tmp/<nodeId>,
   * so that a node starting (which clears its own) never removes another's
   * uploads in flight when <dataDir>/media is shared.
   */
  nodeId?: string;
  /** Cluster mode: the link-signing key is the cluster's (sealed in PostgreSQL), not <dataDir>/media-signing.key. */
  secrets?: SharedSecrets;
}

/** The media link-signing key's row in `cluster_secrets`. */
export const MEDIA_SIGNING_SECRET = 'media-signing';

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
  /** The synchronous readers' copy of the records (see the header). */
  private readonly copy: MediaCopy;
  /** Items whose missing file was logged (once per item and process). */
  private readonly reportedMissing = new Set<string>();
  private readonly fileMissingTotal: Counter;

  constructor(private readonly deps: MediaLibraryDeps) {
    this.dir = path.join(deps.dataDir, 'media');
    this.tmpDir = deps.nodeId === undefined ? path.join(this.dir, TMP) : path.join(this.dir, TMP, deps.nodeId.replace(/[^A-Za-z0-9._-]/g, '_'));
    this.repo = new MediaRepo(deps.db);
    this.log = deps.logger.child({ module: 'media' });
    this.copy = new MediaCopy(() => this.repo.all(), this.log);
    this.isInUse = deps.isInUse;
    this.intake = new MediaIntake({
      tmpDir: this.tmpDir, fileOf: (r) => this.fileOf(r), record: (r, also) => this.record(r, also), logger: this.log, metrics: deps.metrics, clock: deps.clock, options: deps.options,
    });
    this.fileMissingTotal = counterOn(deps.metrics.registry, 'keng_media_file_missing_total',
      'Downloads of a media item whose file is not in this node\'s <dataDir>/media (cluster mode: share the directory or copy the file)');
  }

  get maxUploadBytes(): number { return this.deps.options.maxUploadBytes; }
  get tts(): TtsEngine | undefined { return this.deps.tts; }

  async start(): Promise<void> {
    mkdirSync(this.tmpDir, { recursive: true, mode: 0o750 });
    const keyFile = path.join(this.deps.dataDir, SIGNING_KEY_FILE);
    const { signingKey } = this.deps.options;
    this.signer = new UrlSigner(signingKey ?? (this.deps.secrets
      ? await sharedSigningKey(this.deps.secrets, MEDIA_SIGNING_SECRET, 'media link-signing key', keyFile, this.log)
      : loadOrCreateKey(keyFile)));
    await this.copy.start(this.deps.reloadMs ?? (this.deps.db.dialect === 'postgres' ? CLUSTER_RELOAD_MS : 0));
    // Leftovers of a crash: half-received temp files, and files renamed into place whose row was never written.
    await rm(this.tmpDir, { recursive: true, force: true });
    mkdirSync(this.tmpDir, { recursive: true, mode: 0o750 });
    await this.removeOrphans();
  }

  async stop(): Promise<void> {
    await this.copy.stop();
    this.signer = null;
  }

  /**
   * Files renamed into place whose row was never written (a crash between the
   * two). In cluster mode another node may be between the two right now on a
   * shared directory: only files older than ORPHAN_MIN_AGE_MS whose row the
   * database still does not have are removed.
   */
  private async removeOrphans(): Promise<void> {
    const known = new Set([...this.copy.values()].map((r) => `${r.id}.${r.ext}`));
    const shared = this.deps.db.dialect === 'postgres';
    const candidates = (await readdir(this.dir)).filter((f) => f !== TMP && ID_RE.test(f.split('.')[0] ?? '') && !known.has(f));
    for (const f of candidates) {
      const file = path.join(this.dir, f);
      if (shared) {
        const st = await stat(file).catch(() => undefined);
        if (!st || this.deps.clock.now() - Math.max(st.mtimeMs, st.ctimeMs) < ORPHAN_MIN_AGE_MS) continue;
        if (await this.repo.get(f.split('.')[0]!)) continue;
      }
      this.log.warn({ file: f }, 'removing media file without a library record');
      await rm(file, { force: true });
    }
  }

  /** The records as the database has them now (other nodes' changes), into this node's copy. */
  reload(): Promise<void> { return this.copy.reload(); }

  /** Inserts a checked file's record (intake.ts), with `also` in its transaction. */
  private async record(r: StoredMedia, also?: InTransaction<MediaRecord>): Promise<void> {
    await this.repo.write(async (trx) => {
      await this.repo.insert(r, trx);
      await also?.(trx, toRecord(r));
    });
    this.copy.put(r.id, r);
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
  importStaged(staged: StagedFile, meta: IntakeMeta, also?: InTransaction<MediaRecord>): Promise<MediaRecord> {
    return this.intake.importStaged(staged, meta, also);
  }

  /** receive + importStaged: store an audio stream (e.g. an upload's file part). */
  async upload(source: Readable, meta: NewMediaMeta & { filename?: string } = {}): Promise<MediaRecord> {
    const staged = await this.receive(source);
    return this.importStaged(staged, { ...meta, source: 'upload', fallbackName: cleanName(meta.filename, 'upload') });
  }

  /** Renders `text` with the TTS engine and stores the result (source 'tts', text kept); `also` runs in the record's transaction. */
  async synthesize(text: string, lang: string, meta: NewMediaMeta = {}, also?: InTransaction<MediaRecord>): Promise<MediaRecord> {
    const tts = this.deps.tts;
    if (!tts) throw Errors.TTS_UNAVAILABLE('no text-to-speech engine is configured');
    return this.intake.render((out) => tts.synthesize(text, lang, out), { ...meta, source: 'tts', text, fallbackName: cleanName(text.slice(0, 60), 'TTS') }, false, also);
  }

  /**
   * Renders an announcement (TtsEngine.synthesizeSequence: tone, spoken parts,
   * stored audio) and stores it (source 'tts', the spoken parts kept as text).
   * Stored audio is given by media id and must exist.
   */
  async synthesizeSequence(segments: ReadonlyArray<AnnouncementSegment | { mediaId: string }>, lang: string, meta: NewMediaMeta = {}): Promise<MediaRecord> {
    const tts = this.deps.tts;
    if (!tts?.synthesizeSequence) throw Errors.TTS_UNAVAILABLE('no text-to-speech engine that builds announcements is configured');
    const parts: AnnouncementSegment[] = [];
    for (const seg of segments) {
      if (!('mediaId' in seg)) { parts.push(seg); continue; }
      const f = await this.file(seg.mediaId);
      if (!f) throw Errors.UNPROCESSABLE(`media "${seg.mediaId}" does not exist`);
      parts.push({ file: f.path });
    }
    const text = segments.flatMap((seg) => ('text' in seg ? [seg.text] : [])).join('\n');
    // Announcements are alerts: they wait for a slot but are never refused for a full queue.
    return this.intake.render((out) => tts.synthesizeSequence!(parts, lang, out),
      { ...meta, source: 'tts', text, fallbackName: cleanName(text.slice(0, 60), 'TTS') }, true);
  }

  // ---- reading and deleting ----------------------------------------------

  /**
   * Any item, whoever it belongs to (Keng's own use: the broadcast path, the
   * broadcast log's names), from this node's copy: synchronous. In cluster
   * mode an item another node stored shows here after the next reload; use
   * lookup() where the database's answer matters.
   */
  get(id: string): MediaRecord | undefined {
    const r = this.copy.get(id);
    return r ? toRecord(r) : undefined;
  }

  /** Any item as the database has it now (every node's changes); refreshes it in this node's copy, so get() agrees. */
  async lookup(id: string): Promise<MediaRecord | undefined> {
    const r = await this.repo.get(id);
    if (r || this.copy.has(id)) this.copy.put(id, r);
    return r ? toRecord(r) : undefined;
  }

  /** Whether the item exists, read in the caller's write transaction `trx` (a schedule saved on any node: see MediaInUse). */
  async exists(id: string, trx: Transaction<unknown>): Promise<boolean> {
    return (await this.repo.get(id, trx)) !== undefined;
  }

  /** The item as `viewer` may see it; 404 when unknown or not visible to it (existence does not leak). */
  async getFor(viewer: MediaViewer, id: string): Promise<MediaRecord> {
    const r = await this.lookup(id);
    if (!r || !canSee(viewer, r.areas)) throw Errors.NOT_FOUND(`Media "${id}"`);
    return r;
  }

  /** Newest first; with `viewer`, only what it may see. */
  async list(opts: { limit?: number; offset?: number; viewer?: MediaViewer } = {}): Promise<MediaRecord[]> {
    return (await this.repo.list(opts.limit ?? 200, opts.offset ?? 0, seesOf(opts.viewer))).map(toRecord);
  }

  count(viewer?: MediaViewer): Promise<number> { return this.repo.count(seesOf(viewer)); }

  /**
   * Renames an item or gives it other areas, for `viewer`: 404 when it may not
   * see it, 403 unless the item lies wholly within its areas. The caller
   * checks new areas (assignableAreas). Returns the item before and after;
   * `also` runs in the change's transaction.
   */
  async update(viewer: MediaViewer, id: string, changes: { name?: string; areas?: readonly string[] },
    also?: InTransaction<{ before: MediaRecord; after: MediaRecord }>): Promise<{ before: MediaRecord; after: MediaRecord }> {
    const { before, after } = await this.repo.write(async (trx) => {
      const b = await this.repo.get(id, trx, true);
      const rec = this.manageable(viewer, id, b, 'change');
      const name = changes.name === undefined ? undefined : cleanName(changes.name, rec.name);
      const areas = changes.areas === undefined ? undefined : [...new Set(changes.areas)];
      const a = await this.repo.update(id, { name, areas }, trx);
      if (!a) throw Errors.NOT_FOUND(`Media "${id}"`);
      const pair = { before: rec, after: toRecord(a) };
      await also?.(trx, pair);
      return { before: rec, after: a };
    });
    this.copy.put(id, after);
    this.log.info({ id, areas: after.areas }, 'media changed');
    return { before, after: toRecord(after) };
  }

  /**
   * The stored file of a media item (for the signed download route): this
   * node's copy first (every speaker of a broadcast asks at once), the
   * database for an item it does not have yet. The file may be missing on
   * this node (cluster mode): fileMissing().
   */
  async file(id: string): Promise<{ record: MediaRecord; path: string } | undefined> {
    const r = this.copy.get(id) ?? (await this.lookup(id), this.copy.get(id));
    return r ? { record: toRecord(r), path: this.fileOf(r) } : undefined;
  }

  /**
   * For the download route when file() named a file this node does not have:
   * the error to answer. 404 when the item was deleted meanwhile (another
   * node), else 503 KENG_ERR_MEDIA_FILE_MISSING, counted and logged once per item.
   */
  async fileMissing(id: string): Promise<Error> {
    const r = await this.lookup(id);
    if (!r) return Errors.NOT_FOUND(`Media "${id}"`);
    this.fileMissingTotal.inc();
    if (!this.reportedMissing.has(id)) {
      this.reportedMissing.add(id);
      this.log.warn({ mediaId: id, file: this.fileOf(this.copy.get(id) ?? { id, ext: '*' }) },
        'media file missing on this node: speakers cannot download it here (share <dataDir>/media between the nodes, or copy the file from the node that stored it)');
    }
    return Errors.MEDIA_FILE_MISSING(id);
  }

  /**
   * Deletes the record and the file; 404 when unknown, 409
   * KENG_ERR_MEDIA_IN_USE when still used. With `viewer` (an API caller):
   * 404 also when it may not see the item, 403 unless the item lies wholly
   * within its areas, and the 409 names only what it may see. The checks,
   * the delete and `also` are one transaction. The file is removed on this
   * node (on shared storage: for every node).
   */
  async delete(id: string, opts: { by?: string | null; viewer?: MediaViewer } = {}, also?: InTransaction<MediaRecord>): Promise<MediaRecord> {
    const r = await this.repo.write(async (trx) => {
      const row = await this.repo.get(id, trx, true);
      if (opts.viewer) this.manageable(opts.viewer, id, row, 'delete');
      if (!row) throw Errors.NOT_FOUND(`Media "${id}"`);
      const used = await this.isInUse?.(id, opts.viewer, trx);
      if (used) throw Errors.MEDIA_IN_USE(id, typeof used === 'string' ? used : 'a schedule or broadcast');
      if (!(await this.repo.delete(id, trx))) throw Errors.NOT_FOUND(`Media "${id}"`);
      await also?.(trx, toRecord(row));
      return row;
    });
    this.copy.put(id, undefined);
    // A speaker still downloading keeps its open file; new requests get 404.
    await rm(this.fileOf(r), { force: true });
    this.log.info({ id, by: opts.by ?? null }, 'media deleted');
    return toRecord(r);
  }

  /** The item for a change by `viewer`: 404 when it may not see it, 403 when it belongs to areas beyond the viewer's. */
  private manageable(viewer: MediaViewer, id: string, row: StoredMedia | undefined, verb: 'change' | 'delete'): MediaRecord {
    if (!row || !canSee(viewer, row.areas)) throw Errors.NOT_FOUND(`Media "${id}"`);
    const rec = toRecord(row);
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
    const r = this.copy.get(mediaId);
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

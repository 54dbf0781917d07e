/**
 * Content of a schedule or "play now" (OpenAPI at /docs, tag schedules:
 * `{"mediaId"} | {"streamUrl"} | {"ttsText"}`) turned into what the executor
 * sends (device-protocol.md `broadcast.play`: `media` or `stream`).
 *
 * `ttsText` is rendered once, when the schedule is created or changed
 * (MediaLibrary.synthesize, Vietnamese voice), and stored as a mediaId, so
 * every occurrence plays the same checked file and the overlap check knows
 * its duration. Without espeak-ng/ffmpeg that is a 503 naming what is missing.
 *
 * Media belongs to areas (media/access.ts): a schedule or broadcast may play
 * only media its writer sees; other media is "unknown" (422), as if absent.
 */
import { Errors, withDetails } from '../core/errors.js';
import { canSee, type MediaLibrary, type MediaViewer } from '../media/index.js';
import type { MediaContent, StreamContent } from './execution/index.js';
import type { ScheduleContent } from './schedule/index.js';

export type StoredContent = { mediaId: string } | { streamUrl: string };

export interface PlayContent {
  media?: MediaContent;
  stream?: StreamContent;
  /** Play length in seconds (media duration, or the given durationSec of a stream). */
  durationSec?: number;
}

export type MediaLookup = Pick<MediaLibrary, 'lookup' | 'synthesize'>;

/** TTS language for bulletins: espeak-ng's `vi` voice (bulletins are in Vietnamese). */
export const TTS_LANG = 'vi';

/** Who writes the content, and what it may use. */
export interface ContentWriter {
  /** Principal id (the rendering's createdBy). */
  by: string;
  /** The writer may play only media it sees. */
  viewer: MediaViewer;
  /** Areas a rendering of `ttsText` belongs to (the target's). */
  areas: readonly string[];
  /** The media the schedule plays already: kept even if the writer no longer sees it (an admin moved it). */
  current?: string;
}

/**
 * Replaces `ttsText` by the mediaId of its rendering; checks that a mediaId
 * exists and that the writer sees it (422 "does not exist" otherwise, so other
 * communes' media do not leak). `created` is the id of a file rendered here,
 * so a caller that then refuses the schedule can delete it again.
 */
export async function storeContent(media: MediaLookup, c: ScheduleContent, w: ContentWriter): Promise<{ content: StoredContent; created?: string }> {
  if ('ttsText' in c) {
    const rec = await media.synthesize(c.ttsText, TTS_LANG, { createdBy: w.by, areas: w.areas });
    return { content: { mediaId: rec.id }, created: rec.id };
  }
  if ('mediaId' in c) {
    // From the database (an upload through another node counts), and then in the copy the play path reads.
    const m = await media.lookup(c.mediaId);
    if (!m || (c.mediaId !== w.current && !canSee(w.viewer, m.areas))) {
      throw withDetails(Errors.UNPROCESSABLE(`media "${c.mediaId}" does not exist`), [{ field: 'content.mediaId', message: 'unknown media' }]);
    }
  }
  return { content: c };
}

/** Play length in seconds: the schedule's durationSec, else the media's own duration. */
export function contentDuration(media: Pick<MediaLibrary, 'get'>, c: ScheduleContent, durationSec?: number): number | undefined {
  if (durationSec !== undefined) return durationSec;
  if ('mediaId' in c) return media.get(c.mediaId)?.durationSec;
  return undefined;
}

/** What broadcast.play carries for stored content (the signed URL is added at send time). */
export function playContent(media: Pick<MediaLibrary, 'get'>, c: ScheduleContent, durationSec?: number): PlayContent {
  if ('mediaId' in c) {
    const m = media.get(c.mediaId);
    if (!m) throw Errors.UNPROCESSABLE(`media "${c.mediaId}" does not exist`);
    return { media: { mediaId: m.id, sha256: m.sha256, durationSec: m.durationSec, mime: m.mime }, durationSec: m.durationSec };
  }
  if ('streamUrl' in c) return { stream: { url: c.streamUrl }, ...(durationSec !== undefined ? { durationSec } : {}) };
  throw new Error('ttsText content must be stored (storeContent) before it is played');
}

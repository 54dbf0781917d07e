/**
 * Content of a schedule or "play now" (OpenAPI at /docs, tag schedules:
 * `{"mediaId"} | {"streamUrl"} | {"ttsText"}`) turned into what the executor
 * sends (device-protocol.md `broadcast.play`: `media` or `stream`).
 *
 * `ttsText` is rendered once, when the schedule is created or changed
 * (MediaLibrary.synthesize, Vietnamese voice), and stored as a mediaId, so
 * every occurrence plays the same checked file and the overlap check knows
 * its duration. Without espeak-ng/ffmpeg that is a 503 naming what is missing.
 */
import { Errors, withDetails } from '../core/errors.js';
import type { MediaLibrary } from '../media/index.js';
import type { MediaContent, StreamContent } from './execution/index.js';
import type { ScheduleContent } from './schedule/index.js';

export type StoredContent = { mediaId: string } | { streamUrl: string };

export interface PlayContent {
  media?: MediaContent;
  stream?: StreamContent;
  /** Play length in seconds (media duration, or the given durationSec of a stream). */
  durationSec?: number;
}

export type MediaLookup = Pick<MediaLibrary, 'get' | 'synthesize'>;

/** TTS language for bulletins: espeak-ng's `vi` voice (bulletins are in Vietnamese). */
export const TTS_LANG = 'vi';

/**
 * Replaces `ttsText` by the mediaId of its rendering; checks that a mediaId
 * exists (422 otherwise). `created` is the id of a file rendered here, so a
 * caller that then refuses the schedule can delete it again.
 */
export async function storeContent(media: MediaLookup, c: ScheduleContent, by: string): Promise<{ content: StoredContent; created?: string }> {
  if ('ttsText' in c) {
    const rec = await media.synthesize(c.ttsText, TTS_LANG, { createdBy: by });
    return { content: { mediaId: rec.id }, created: rec.id };
  }
  if ('mediaId' in c && !media.get(c.mediaId)) {
    throw withDetails(Errors.UNPROCESSABLE(`media "${c.mediaId}" does not exist`), [{ field: 'content.mediaId', message: 'unknown media' }]);
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

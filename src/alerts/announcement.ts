/**
 * What a loudspeaker says for an alert: the attention tone, then the message
 * (spoken from the CAP text, or the attached audio), repeated as asked. An
 * exercise or a test says so at the start and at the end, so that nobody
 * takes a drill for a real flood; a cancellation says what is cancelled.
 * The words are Vietnamese: the speakers are in Vietnamese villages,
 * whatever language the message came in.
 */
import type { MediaContent } from '../broadcast/execution/index.js';
import type { AnnouncementSegment, MediaRecord } from '../media/index.js';
import { spokenContent, type CapAlert } from './cap/index.js';

export const ANNOUNCEMENT_LANG = 'vi';

const WORDS = {
  exercise: 'Đây là diễn tập. Đây là diễn tập.',
  exerciseEnd: 'Hết bản tin diễn tập.',
  test: 'Đây là bản tin thử nghiệm.',
  testEnd: 'Hết bản tin thử nghiệm.',
  cancelled: 'Hủy bỏ cảnh báo.',
  cancelledEnd: 'Cảnh báo trên đã được hủy bỏ. Bà con trở lại sinh hoạt bình thường.',
} as const;

export interface AnnouncementOptions {
  /** Seconds of attention tone before the message. */
  toneSec: number;
  /** How many times the message plays (CAP has no such field: Keng's `repeat`, a keng:repeat parameter in XML). */
  repeat: number;
}

type Segment = AnnouncementSegment | { mediaId: string };

/** The segments of an alert's announcement. */
export function alertAnnouncement(cap: CapAlert, o: AnnouncementOptions): Segment[] {
  const content = spokenContent(cap);
  const message: Segment = 'mediaId' in content ? { mediaId: content.mediaId } : { text: content.ttsText };
  const out: Segment[] = [{ tone: o.toneSec }, { silence: 0.5 }];
  const [start, end] = cap.status === 'Exercise' ? [WORDS.exercise, WORDS.exerciseEnd]
    : cap.status === 'Test' ? [WORDS.test, WORDS.testEnd] : [undefined, undefined];
  if (start) out.push({ text: start }, { silence: 0.5 });
  for (let i = 0; i < Math.max(1, o.repeat); i++) {
    if (i > 0) out.push({ silence: 1.5 });
    out.push(message);
  }
  if (end) out.push({ silence: 0.5 }, { text: end });
  return out;
}

/** The notice played where a cancelled alert was playing. */
export function cancellationAnnouncement(cap: CapAlert, o: Pick<AnnouncementOptions, 'toneSec'>): Segment[] {
  return [
    { tone: Math.min(o.toneSec, 1.5) }, { silence: 0.5 },
    { text: `${WORDS.cancelled} ${cap.headline?.trim() || cap.event}` }, { silence: 0.5 }, { text: WORDS.cancelledEnd },
  ];
}

/** The rendered announcement as a broadcast's content. */
export function announcementContent(m: MediaRecord): MediaContent {
  return { mediaId: m.id, sha256: m.sha256, durationSec: m.durationSec, mime: m.mime };
}

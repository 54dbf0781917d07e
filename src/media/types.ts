/** Media library types: stored audio for broadcasts and the TTS engine interface. */

export type AudioFormat = 'mp3' | 'wav' | 'ogg';
export type MediaSource = 'upload' | 'tts';

/** One stored audio file (table `media`). */
export interface MediaRecord {
  id: string;
  name: string;
  /** From the probe: audio/mpeg, audio/wav or audio/ogg. */
  mime: string;
  /** Bytes. */
  size: number;
  /** Hex SHA-256 of the stored file (speakers check it; also the HTTP ETag). */
  sha256: string;
  /** Decoded duration in seconds. */
  durationSec: number;
  source: MediaSource;
  /** The spoken text of a TTS item; null for uploads. */
  text: string | null;
  /** Epoch ms. */
  createdAt: number;
  /** Principal id of the creator (audit), or null. */
  createdBy: string | null;
  /** Areas the item belongs to (access.ts): ["*"] shared with every area, [] admins only. */
  areas: string[];
}

/** What `broadcast.play` sends to a speaker (device-protocol.md). */
export interface MediaRef {
  url: string;
  sha256: string;
  durationSec: number;
  mime: string;
}

/** Text-to-speech: renders text to an audio file Keng then checks and stores like an upload. */
export interface TtsEngine {
  readonly name: string;
  /** Whether the engine can run; `missing` names what is not installed, e.g. "espeak-ng not found at /usr/bin/espeak-ng". */
  available(): Promise<{ ok: boolean; missing?: string }>;
  /** Languages the engine speaks (ISO 639-1). */
  readonly languages: readonly string[];
  /**
   * Renders `text` in `lang` into `outFile` (MP3, WAV or Ogg). Throws
   * KENG_ERR_TTS_UNAVAILABLE when a program it needs is missing.
   */
  synthesize(text: string, lang: string, outFile: string): Promise<void>;
  /**
   * Renders an announcement made of segments, in order, into `outFile` (MP3):
   * spoken text, an attention tone, silence, or a stored audio file (an alert:
   * tone, "this is an exercise", the message, the message again, …).
   */
  synthesizeSequence?(segments: readonly AnnouncementSegment[], lang: string, outFile: string): Promise<void>;
}

/** One part of an announcement (TtsEngine.synthesizeSequence). */
export type AnnouncementSegment =
  | { text: string }
  | { tone: number }
  | { silence: number }
  | { file: string };

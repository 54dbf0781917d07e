/**
 * Checks that a file really is playable audio, with ffprobe (container and
 * streams) and then a full decode with ffmpeg (catches truncated or corrupt
 * files and gives the true duration; header durations lie for cut MP3s).
 *
 * Accepted: MP3 (mp3), WAV (PCM) and Ogg (Vorbis or Opus), one audio stream
 * or more, no video stream (an MP3's cover art is an attached picture and is
 * allowed), decoding to more than zero seconds and at most maxDurationSec.
 *
 * Bounded work: a file whose header already claims more than maxDurationSec
 * is refused after ffprobe, without decoding; the decode stops just past the
 * limit, so a header that lies costs at most that much decoding.
 *
 * Nothing but audio: anything after the audio (a second file appended to an
 * MP3 or Ogg, junk, an HTML or ZIP payload) is refused, not stored. The
 * decode runs with -xerror, so data the decoder cannot read anywhere in the
 * stream fails it (MP3 has no container: appended bytes reach the decoder;
 * Ogg's demuxer reports bytes that are not Ogg pages); a WAV's bytes past its
 * RIFF chunk are never read by ffmpeg, so its declared length is compared
 * with the file's. Refusing keeps the stored file byte for byte what the
 * client sent (sha256 = the upload's); the cost is that a file with a damaged
 * frame must be exported again.
 */
import { open, stat } from 'node:fs/promises';
import { runTool, ToolMissingError } from './run.js';
import type { AudioFormat } from './types.js';

export interface AudioInfo {
  format: AudioFormat;
  /** Codec of the first audio stream, e.g. mp3, pcm_s16le, vorbis, opus. */
  codec: string;
  /** From the probe, never from the client: audio/mpeg, audio/wav, audio/ogg. */
  mime: string;
  /** File extension used in storage: mp3, wav, ogg. */
  ext: string;
  /** Decoded duration in seconds (millisecond precision). */
  durationSec: number;
}

export interface AudioProbeOptions {
  ffprobePath: string;
  ffmpegPath: string;
  /** Limit for each of the two runs (a long file takes a few seconds to decode). */
  timeoutMs?: number;
  /** Longest accepted audio in seconds (media.maxDurationSec); default 3600. */
  maxDurationSec?: number;
}

/** The file is not audio Keng can send to speakers; `reason` is for the caller. */
export class NotAudioError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'NotAudioError';
  }
}

/** The file is audio, but longer than maxDurationSec. */
export class TooLongError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'TooLongError';
  }
}

export { ToolMissingError };

const FORMATS: Record<AudioFormat, { mime: string; ext: string; codec: (c: string) => boolean; label: string }> = {
  mp3: { mime: 'audio/mpeg', ext: 'mp3', codec: (c) => c === 'mp3' || c === 'mp3float', label: 'MP3' },
  wav: { mime: 'audio/wav', ext: 'wav', codec: (c) => c.startsWith('pcm_'), label: 'WAV (PCM)' },
  ogg: { mime: 'audio/ogg', ext: 'ogg', codec: (c) => c === 'vorbis' || c === 'opus', label: 'Ogg (Vorbis or Opus)' },
};

interface ProbeStream { codec_type?: string; codec_name?: string; disposition?: { attached_pic?: number } }
interface ProbeJson { streams?: ProbeStream[]; format?: { format_name?: string; duration?: string } }

export class AudioProbe {
  private readonly timeoutMs: number;
  private readonly maxSec: number;

  constructor(private readonly opts: AudioProbeOptions) {
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.maxSec = opts.maxDurationSec ?? 3600;
  }

  /** Probe and decode `file`. Throws NotAudioError, TooLongError, or ToolMissingError when ffprobe/ffmpeg is missing. */
  async probe(file: string): Promise<AudioInfo> {
    const { size } = await stat(file);
    if (size === 0) throw new NotAudioError('the file is empty');
    const json = await this.ffprobe(file);
    const streams = json.streams ?? [];
    const video = streams.find((s) => s.codec_type === 'video' && s.disposition?.attached_pic !== 1);
    if (video) throw new NotAudioError(`it contains a video stream (${video.codec_name ?? 'unknown codec'}); send audio only`);
    const audio = streams.find((s) => s.codec_type === 'audio');
    if (!audio) throw new NotAudioError('it has no audio stream');
    const codec = audio.codec_name ?? 'unknown';
    const names = (json.format?.format_name ?? '').split(',');
    const format = (Object.keys(FORMATS) as AudioFormat[]).find((f) => names.includes(f));
    if (!format) throw new NotAudioError(`its format (${json.format?.format_name ?? 'unknown'}) is not MP3, WAV or Ogg`);
    const spec = FORMATS[format];
    if (!spec.codec(codec)) throw new NotAudioError(`a ${format} file with ${codec} audio is not supported; use ${spec.label}`);
    const claimed = Number(json.format?.duration);
    // A little slack: header durations are estimates; the decode below has the last word.
    if (Number.isFinite(claimed) && claimed > this.maxSec + 1) throw this.tooLong(`about ${clock(claimed)}`);
    if (format === 'wav') {
      const extra = await wavTrailingBytes(file, size);
      if (extra > 0) throw new NotAudioError(`${extra} bytes follow the end of its audio (the WAV's RIFF chunk); send the audio alone`);
    }
    const durationSec = await this.decode(file);
    // The decode stopped at maxDurationSec + 1: the file may be much longer still.
    if (durationSec > this.maxSec) throw this.tooLong(`more than ${clock(this.maxSec)}`);
    return { format, codec, mime: spec.mime, ext: spec.ext, durationSec };
  }

  private async ffprobe(file: string): Promise<ProbeJson> {
    const r = await runTool(this.opts.ffprobePath, [
      '-v', 'error', '-hide_banner',
      '-show_entries', 'format=format_name,duration:stream=codec_type,codec_name:stream_disposition=attached_pic',
      '-of', 'json', '-i', file,
    ], { timeoutMs: this.timeoutMs, label: 'ffprobe' });
    if (r.timedOut) throw new NotAudioError(`checking it took longer than ${Math.round(this.timeoutMs / 1000)} s`);
    let json: ProbeJson = {};
    try { json = JSON.parse(r.stdout || '{}') as ProbeJson; } catch { /* treated as unreadable below */ }
    if (r.code !== 0 || !json.format) throw new NotAudioError('it is not an audio file (no known audio format found in it)');
    return json;
  }

  private tooLong(lasts: string): TooLongError {
    return new TooLongError(`it lasts ${lasts}; at most ${clock(this.maxSec)} (${this.maxSec} s, media.maxDurationSec) is accepted; cut it into parts`);
  }

  /**
   * Decodes the first audio stream (stopping just past maxDurationSec) and
   * returns the decoded duration; any decoding error fails it (-xerror).
   */
  private async decode(file: string): Promise<number> {
    const r = await runTool(this.opts.ffmpegPath, [
      '-nostdin', '-hide_banner', '-v', 'error', '-xerror', '-i', file,
      '-map', '0:a:0', '-t', String(this.maxSec + 1), '-f', 'null', '-progress', 'pipe:1', '-',
    ], { timeoutMs: this.timeoutMs, label: 'ffmpeg' });
    if (r.timedOut) throw new NotAudioError(`decoding it took longer than ${Math.round(this.timeoutMs / 1000)} s`);
    if (r.code !== 0) throw new NotAudioError('it could not be decoded cleanly (corrupt or truncated, or data that is not audio after or inside it)');
    const us = lastOutTimeUs(r.stdout);
    if (us === undefined || us <= 0) throw new NotAudioError('it decodes to no sound (empty, truncated or corrupt)');
    return Math.round(us / 1000) / 1000;
  }
}

/** "1:05:00" / "4:30" for messages staff read. */
function clock(sec: number): string {
  const s = Math.round(sec);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h > 0 ? String(m).padStart(2, '0') : String(m);
  return `${h > 0 ? `${h}:` : ''}${mm}:${String(r).padStart(2, '0')}`;
}

/**
 * Bytes of a WAV file past its RIFF chunk (0 when it has none, or when the
 * chunk's length is not set, as streaming writers leave it: ffmpeg then reads
 * the data chunk to the end of the file, so every byte is decoded as audio).
 */
export async function wavTrailingBytes(file: string, size: number): Promise<number> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(12);
    const { bytesRead } = await fh.read(head, 0, 12, 0);
    if (bytesRead < 12 || head.toString('latin1', 0, 4) !== 'RIFF' || head.toString('latin1', 8, 12) !== 'WAVE') return 0;
    const riff = head.readUInt32LE(4);
    if (riff === 0 || riff === 0xffff_ffff) return 0;
    // RIFF pads chunks to even lengths: one byte of padding after an odd length is not extra data.
    return Math.max(0, size - (8 + riff + (riff % 2)));
  } finally {
    await fh.close();
  }
}

/** The last `out_time_us=` value of ffmpeg's -progress output (undefined when absent or N/A). */
export function lastOutTimeUs(progress: string): number | undefined {
  let last: number | undefined;
  for (const m of progress.matchAll(/^out_time_us=(-?\d+)\s*$/gm)) last = Number(m[1]);
  return last !== undefined && Number.isFinite(last) ? last : undefined;
}

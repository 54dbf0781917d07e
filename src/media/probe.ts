/**
 * Checks that a file really is playable audio, with ffprobe (container and
 * streams) and then a full decode with ffmpeg (catches truncated or corrupt
 * files and gives the true duration; header durations lie for cut MP3s).
 *
 * Accepted: MP3 (mp3), WAV (PCM) and Ogg (Vorbis or Opus), one audio stream
 * or more, no video stream (an MP3's cover art is an attached picture and is
 * allowed), decoding to more than zero seconds.
 */
import { stat } from 'node:fs/promises';
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
}

/** The file is not audio Keng can send to speakers; `reason` is for the caller. */
export class NotAudioError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'NotAudioError';
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

  constructor(private readonly opts: AudioProbeOptions) {
    this.timeoutMs = opts.timeoutMs ?? 120_000;
  }

  /** Probe and decode `file`. Throws NotAudioError, or ToolMissingError when ffprobe/ffmpeg is missing. */
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
    const durationSec = await this.decode(file);
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

  /** Decodes the first audio stream completely; returns the decoded duration. */
  private async decode(file: string): Promise<number> {
    const r = await runTool(this.opts.ffmpegPath, [
      '-nostdin', '-hide_banner', '-v', 'error', '-i', file,
      '-map', '0:a:0', '-f', 'null', '-progress', 'pipe:1', '-',
    ], { timeoutMs: this.timeoutMs, label: 'ffmpeg' });
    if (r.timedOut) throw new NotAudioError(`decoding it took longer than ${Math.round(this.timeoutMs / 1000)} s`);
    if (r.code !== 0) throw new NotAudioError('it could not be decoded (corrupt or truncated)');
    const us = lastOutTimeUs(r.stdout);
    if (us === undefined || us <= 0) throw new NotAudioError('it decodes to no sound (empty, truncated or corrupt)');
    return Math.round(us / 1000) / 1000;
  }
}

/** The last `out_time_us=` value of ffmpeg's -progress output (undefined when absent or N/A). */
export function lastOutTimeUs(progress: string): number | undefined {
  let last: number | undefined;
  for (const m of progress.matchAll(/^out_time_us=(-?\d+)\s*$/gm)) last = Number(m[1]);
  return last !== undefined && Number.isFinite(last) ? last : undefined;
}

/**
 * Text-to-speech with espeak-ng (its Vietnamese voice `vi`), encoded to MP3
 * with ffmpeg. Programs are run without a shell; the text goes in on stdin
 * as UTF-8, so Vietnamese diacritics arrive intact and no text can be read
 * as an option.
 */
import { rm } from 'node:fs/promises';
import { Errors } from '../core/errors.js';
import { checkExecutable, runTool, ToolMissingError } from './run.js';
import type { TtsEngine } from './types.js';

export interface EspeakTtsOptions {
  /** Default /usr/bin/espeak-ng. */
  espeakPath?: string;
  /** Default /usr/bin/ffmpeg. */
  ffmpegPath?: string;
  /** Words per minute (espeak -s); default 150. */
  speed?: number;
  /** MP3 bit rate; default 64 (mono speech). */
  bitrateKbps?: number;
  timeoutMs?: number;
}

/** Longest text accepted (characters). */
export const TTS_MAX_TEXT = 5000;

/** espeak-ng voice per language. */
const VOICES: Readonly<Record<string, string>> = { vi: 'vi', en: 'en' };

/** NFC (macOS sends decomposed Vietnamese), no control characters except newline and tab. */
export function cleanTtsText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.normalize('NFC').replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, ' ').trim();
}

export class EspeakTts implements TtsEngine {
  readonly name = 'espeak-ng';
  readonly languages: readonly string[] = Object.keys(VOICES);
  private readonly espeakPath: string;
  private readonly ffmpegPath: string;

  constructor(private readonly opts: EspeakTtsOptions = {}) {
    this.espeakPath = opts.espeakPath ?? '/usr/bin/espeak-ng';
    this.ffmpegPath = opts.ffmpegPath ?? '/usr/bin/ffmpeg';
  }

  async available(): Promise<{ ok: boolean; missing?: string }> {
    for (const [label, path] of [['espeak-ng', this.espeakPath], ['ffmpeg', this.ffmpegPath]] as const) {
      const r = await checkExecutable(path);
      if (r !== 'ok') return { ok: false, missing: `${label} ${r} at ${path}` };
    }
    return { ok: true };
  }

  async synthesize(text: string, lang: string, outFile: string): Promise<void> {
    const voice = VOICES[lang];
    if (!voice) throw Errors.VALIDATION(`lang "${lang}" is not supported by ${this.name}; use ${this.languages.join(' or ')}`);
    const clean = cleanTtsText(text);
    if (!clean) throw Errors.VALIDATION('text is empty');
    if (clean.length > TTS_MAX_TEXT) throw Errors.VALIDATION(`text is longer than ${TTS_MAX_TEXT} characters`);
    const check = await this.available();
    if (!check.ok) throw Errors.TTS_UNAVAILABLE(check.missing);
    const timeoutMs = this.opts.timeoutMs ?? 120_000;
    const wav = `${outFile}.speech.wav`;
    try {
      const speak = await this.run('espeak-ng', this.espeakPath,
        ['-v', voice, '-s', String(this.opts.speed ?? 150), '-b', '1', '-w', wav, '--stdin'], clean, timeoutMs);
      if (speak.code !== 0) {
        if (/voice does not exist/i.test(speak.stderr)) throw Errors.TTS_UNAVAILABLE(`espeak-ng at ${this.espeakPath} has no "${voice}" voice`);
        throw new Error(`espeak-ng failed (exit ${speak.code}${speak.timedOut ? ', timed out' : ''}): ${speak.stderr.trim().slice(0, 500)}`);
      }
      const enc = await this.run('ffmpeg', this.ffmpegPath, [
        '-nostdin', '-hide_banner', '-v', 'error', '-y', '-i', wav,
        '-codec:a', 'libmp3lame', '-b:a', `${this.opts.bitrateKbps ?? 64}k`, '-ac', '1', '-f', 'mp3', outFile,
      ], undefined, timeoutMs);
      if (enc.code !== 0) throw new Error(`ffmpeg failed to encode speech (exit ${enc.code}${enc.timedOut ? ', timed out' : ''}): ${enc.stderr.trim().slice(0, 500)}`);
    } finally {
      await rm(wav, { force: true });
    }
  }

  private async run(label: string, path: string, args: string[], input: string | undefined, timeoutMs: number) {
    try {
      return await runTool(path, args, { input, timeoutMs, label });
    } catch (e) {
      if (e instanceof ToolMissingError) throw Errors.TTS_UNAVAILABLE(e.describe());
      throw e;
    }
  }
}

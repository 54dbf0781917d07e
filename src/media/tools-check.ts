/**
 * Checks at start that the external programs broadcasts need are usable:
 * ffprobe and ffmpeg (checking uploads, encoding speech to MP3) and
 * espeak-ng with its Vietnamese voice `vi` (text-to-speech). Each is run
 * once with a version or voice-list probe, bounded by a timeout, so a
 * missing package or a broken install shows in the log at start and in
 * /readyz, not at the first upload in front of commune staff.
 *
 * A missing tool never stops the start and never makes /readyz answer 503:
 * a sensor-only site needs none of them, and the routes that do need them
 * already answer 503 naming the tool (KENG_ERR_MEDIA_TOOL_UNAVAILABLE,
 * KENG_ERR_TTS_UNAVAILABLE). The check reports `ok: true` with
 * `degraded: true` and what is missing, and logs one warning per tool.
 * The result is from the start: install the tool, then restart Keng.
 */
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import { runTool, ToolMissingError } from './run.js';

export interface MediaToolsCheckOptions {
  media: { ffprobePath: string; ffmpegPath: string };
  tts: { espeakPath: string };
  logger: Logger;
  /** Limit of each probe run (default 5000 ms): a tool that hangs must not hold up the start. */
  timeoutMs?: number;
}

export type ToolName = 'ffprobe' | 'ffmpeg' | 'espeak-ng';

export interface ToolStatus {
  tool: ToolName;
  path: string;
  ok: boolean;
  /** First line of the version output when the tool answered, e.g. "ffmpeg version 5.1.6-0+deb12u1". */
  version?: string;
  /** Why it is not usable, one line. */
  problem?: string;
  /** What stops working without it. */
  needed: string;
}

export interface MediaToolsReport {
  /** Always true: missing tools degrade media features, they do not make Keng unready. */
  ok: true;
  detail: { degraded: boolean; tools: Record<string, { ok: boolean; path: string; version?: string; problem?: string }> };
}

/** espeak-ng voice the Vietnamese text-to-speech uses (media/tts.ts). */
export const TTS_VOICE = 'vi';

const DEFAULT_TIMEOUT_MS = 5_000;

export class MediaToolsCheck implements Component {
  readonly name = 'media-tools';
  private results: ToolStatus[] | null = null;

  constructor(private readonly opts: MediaToolsCheckOptions) {}

  async start(): Promise<void> {
    const { media, tts } = this.opts;
    this.results = await Promise.all([
      this.probe('ffprobe', media.ffprobePath, ['-hide_banner', '-version'], 'audio uploads are refused (503)'),
      this.probe('ffmpeg', media.ffmpegPath, ['-hide_banner', '-version'], 'audio uploads and text-to-speech are refused (503)'),
      this.probe('espeak-ng', tts.espeakPath, ['--version'], 'text-to-speech is refused (503)'),
    ]);
    const espeak = this.results[2]!;
    if (espeak.ok) await this.checkVoice(espeak);
    const log = this.opts.logger;
    for (const r of this.results) {
      if (r.ok) log.debug({ tool: r.tool, path: r.path, version: r.version }, 'media tool usable');
      else log.warn({ tool: r.tool, path: r.path }, `${r.problem}: ${r.needed}`);
    }
  }

  async stop(): Promise<void> { /* nothing held */ }

  /** Each tool's state as found at start (empty before start()). */
  tools(): readonly ToolStatus[] {
    return this.results ?? [];
  }

  /** The /readyz `media` entry. */
  report(): MediaToolsReport {
    const tools = Object.fromEntries(this.tools().map((t) => [t.tool, {
      ok: t.ok, path: t.path, ...(t.version ? { version: t.version } : {}), ...(t.problem ? { problem: t.problem } : {}),
    }]));
    return { ok: true, detail: { degraded: this.tools().some((t) => !t.ok), tools } };
  }

  private async probe(tool: ToolName, path: string, args: string[], needed: string): Promise<ToolStatus> {
    const timeoutMs = this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    try {
      const r = await runTool(path, args, { timeoutMs, label: tool, maxOutputBytes: 64 * 1024 });
      if (r.timedOut) return { tool, path, ok: false, problem: `${tool} at ${path} did not answer within ${timeoutMs} ms`, needed };
      if (r.code !== 0) {
        const why = firstLine(r.stderr) || firstLine(r.stdout);
        return { tool, path, ok: false, problem: `${tool} at ${path} is broken (exit ${r.code ?? r.signal}${why ? `: ${why}` : ''})`, needed };
      }
      return { tool, path, ok: true, version: firstLine(r.stdout) || firstLine(r.stderr), needed };
    } catch (e) {
      const problem = e instanceof ToolMissingError ? e.describe() : `${tool} at ${path} cannot be run: ${(e as Error).message}`;
      return { tool, path, ok: false, problem, needed };
    }
  }

  /** espeak-ng without espeak-ng-data (or a build without Vietnamese) runs but cannot speak `vi`. */
  private async checkVoice(status: ToolStatus): Promise<void> {
    const timeoutMs = this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    try {
      const r = await runTool(status.path, [`--voices=${TTS_VOICE}`], { timeoutMs, label: status.tool, maxOutputBytes: 256 * 1024 });
      // Lines: "Pty Language Age/Gender VoiceName File Other Languages"; the language is the second column.
      const has = r.code === 0 && r.stdout.split('\n').some((l) => l.trim().split(/\s+/)[1] === TTS_VOICE);
      if (!has) Object.assign(status, { ok: false, problem: `espeak-ng at ${status.path} has no "${TTS_VOICE}" (Vietnamese) voice${r.timedOut ? ' (voice list timed out)' : ''}` });
    } catch (e) {
      Object.assign(status, { ok: false, problem: `espeak-ng at ${status.path} cannot list its voices: ${(e as Error).message}` });
    }
  }
}

function firstLine(s: string): string {
  return (s.split('\n').find((l) => l.trim()) ?? '').trim().slice(0, 200);
}

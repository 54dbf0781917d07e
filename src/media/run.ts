/**
 * Runs an external program (ffprobe, ffmpeg, espeak-ng) without a shell:
 * arguments are passed as an array, text goes in on stdin, output is
 * captured up to a cap, and the process is killed after a timeout.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { basename, delimiter, join } from 'node:path';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunOptions {
  /** Written to the process's stdin (UTF-8), then stdin is closed. */
  input?: string;
  timeoutMs: number;
  /** Name used in errors ("espeak-ng not found at …"); default the file's base name. */
  label?: string;
  /** Most bytes kept of stdout and of stderr each (the rest is dropped). */
  maxOutputBytes?: number;
}

/** The program could not be started: not installed, or not executable, at that path. */
export class ToolMissingError extends Error {
  constructor(readonly path: string, readonly reason: 'not found' | 'not executable', readonly label: string = basename(path)) {
    super(`${label} ${reason} at ${path}`);
    this.name = 'ToolMissingError';
  }

  /** "<label> not found at <path>", e.g. "espeak-ng not found at /usr/bin/espeak-ng". */
  describe(): string {
    return this.message;
  }
}

/**
 * Whether `file` can be executed: a path with a slash is checked as is, a bare
 * name is looked up on PATH. Resolves to the reason when it cannot.
 */
export async function checkExecutable(file: string): Promise<'ok' | 'not found' | 'not executable'> {
  const candidates = file.includes('/') ? [file]
    : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, file));
  let seen = false;
  for (const c of candidates) {
    try {
      const st = await stat(c);
      if (!st.isFile()) continue;
      seen = true;
      await access(c, constants.X_OK);
      return 'ok';
    } catch { /* try the next */ }
  }
  return seen ? 'not executable' : 'not found';
}

function collector(max: number): { push(b: Buffer): void; text(): string } {
  const chunks: Buffer[] = [];
  let size = 0;
  return {
    push(b) {
      if (size >= max) return;
      const part = b.subarray(0, max - size);
      chunks.push(part);
      size += part.length;
    },
    text: () => Buffer.concat(chunks).toString('utf8'),
  };
}

export function runTool(file: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const max = opts.maxOutputBytes ?? 1_048_576;
  return new Promise((resolve, reject) => {
    const child = spawn(file, [...args], { shell: false, stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true });
    const out = collector(max);
    const err = collector(max);
    let timedOut = false;
    let settled = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
      // A wrapper script's own children (e.g. `sleep` in a shell script) survive the kill and keep
      // the pipes open, and 'close' waits for the pipes: let go of them so the caller gets its answer.
      child.stdout.destroy();
      child.stderr.destroy();
    }, opts.timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => { /* the tool may exit without reading stdin */ });
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      if (e.code === 'ENOENT') reject(new ToolMissingError(file, 'not found', opts.label));
      else if (e.code === 'EACCES') reject(new ToolMissingError(file, 'not executable', opts.label));
      else reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      resolve({ code, signal, stdout: out.text(), stderr: err.text(), timedOut });
    });
    child.stdin.end(opts.input ?? '', 'utf8');
  });
}

/** Process figures from /proc (Linux): resident memory and CPU time. */
import { readFileSync } from 'node:fs';

/** VmRSS of a process in bytes, or null when it is gone. */
export function readRssBytes(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** User + system CPU time of a process in ms, or null. Fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 Hz). */
export function readCpuMs(pid: number): number | null {
  return statCpuMs(`/proc/${pid}/stat`);
}

/**
 * CPU time of one thread of a process in ms, or null. The main thread's id is the pid: for Keng and the
 * bare broker that is the thread every MQTT packet crosses (Keng's SQLite writer and V8's helpers are others).
 */
export function readThreadCpuMs(pid: number, tid: number): number | null {
  return statCpuMs(`/proc/${pid}/task/${tid}/stat`);
}

/** CPU time from a process's or a thread's stat file; null when it is gone. */
function statCpuMs(file: string): number | null {
  try {
    return parseCpuMs(readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

export function parseCpuMs(stat: string, ticksPerSec = 100): number | null {
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return ((utime + stime) * 1000) / ticksPerSec;
}

/** Samples a process's RSS on an interval; keeps the maximum and the last value. */
export class RssSampler {
  max = 0;
  last = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly pid: number, private readonly everyMs = 250) {}

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.everyMs);
    this.timer.unref();
    return this;
  }

  sample(): number {
    const v = readRssBytes(this.pid);
    if (v !== null) {
      this.last = v;
      if (v > this.max) this.max = v;
    }
    return this.last;
  }

  resetMax(): void {
    this.max = this.sample();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.sample();
  }
}

export const MiB = 1024 * 1024;

/** Process figures from /proc (Linux): resident memory and CPU time. */
import { readFileSync } from 'node:fs';
import { statFields } from '../../tools/proc-stat.js';

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
  const rest = statFields(stat);
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

/** The machine's CPU time counters (all cores, /proc/stat's first line), in clock ticks; null when unreadable. */
export interface MachineCpu { total: number; steal: number }

export function readMachineCpu(): MachineCpu | null {
  try {
    return parseMachineCpu(readFileSync('/proc/stat', 'utf8'));
  } catch {
    return null;
  }
}

/**
 * `cpu  user nice system idle iowait irq softirq steal guest guest_nice`: guest time is already
 * counted in user and nice, so the total is the first eight fields.
 */
export function parseMachineCpu(stat: string): MachineCpu | null {
  const line = stat.slice(0, stat.indexOf('\n'));
  const f = line.trim().split(/\s+/);
  if (f[0] !== 'cpu' || f.length < 9) return null;
  const n = f.slice(1, 9).map(Number);
  if (n.some((x) => !Number.isFinite(x))) return null;
  return { total: n.reduce((a, x) => a + x, 0), steal: n[7]! };
}

/**
 * Share of the machine's CPU time that the hypervisor gave to other guests between two readings, in
 * percent of all cores' time: on a shared virtual machine it comes and goes within minutes, and a
 * run that loses a fifth of its CPU to it is not comparable with one that loses none.
 */
export function stealPct(a: MachineCpu | null, b: MachineCpu | null): number | null {
  if (!a || !b || b.total <= a.total) return null;
  return ((b.steal - a.steal) / (b.total - a.total)) * 100;
}

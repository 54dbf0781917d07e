/**
 * How long the disk under Keng's data directory takes to make a commit
 * durable, measured in that directory right before each Keng run.
 *
 * Keng acknowledges a telemetry message only once the fsync of the commit
 * holding it has returned, and at fleet concurrency a message waits for one
 * to two of them; a bare broker waits for none. So Keng's rate, and its ratio
 * to the bare broker's, follows this figure, which on a shared virtual machine
 * moves from minute to minute (docs/benchmarks.md has runs side by side).
 * Printing it next to the rates tells a slow disk from a slow server.
 *
 * The probe does what a commit does to SQLite's write-ahead log: it writes
 * seven 4 KiB pages (with their frame headers) over a file that is already
 * allocated — the log is reused from its start after each checkpoint, so
 * commits overwrite, not append — and calls fdatasync.
 */
import { closeSync, fdatasyncSync, openSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { percentiles } from '../../src/sim/stats.js';

/** Seven WAL frames (24-byte header + 4 KiB page): what one commit of ~125 messages wrote (docs/benchmarks.md). */
const COMMIT_BYTES = 7 * (24 + 4096);
/** The log's size between checkpoints (SQLite's default 1,000-page autocheckpoint). */
const LOG_BYTES = 1000 * (24 + 4096);

/** Milliseconds per commit-sized write + fdatasync. */
export interface DiskSync { p50Ms: number; p90Ms: number; samples: number }

export function probeDiskSync(dir: string, samples = 200): DiskSync {
  const file = path.join(dir, `keng-bench-sync-${process.pid}-${Date.now()}`);
  const fd = openSync(file, 'w');
  try {
    const chunk = Buffer.alloc(COMMIT_BYTES, 0x5a);
    for (let off = 0; off < LOG_BYTES; off += chunk.length) writeSync(fd, chunk, 0, chunk.length, off);
    fdatasyncSync(fd); // allocated and on disk before timing starts
    const ms: number[] = [];
    let off = 0;
    for (let i = 0; i < samples; i++) {
      if (off + chunk.length > LOG_BYTES) off = 0;
      const t0 = process.hrtime.bigint();
      writeSync(fd, chunk, 0, chunk.length, off);
      fdatasyncSync(fd);
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
      off += chunk.length;
    }
    const [p50, p90] = percentiles(ms, [50, 90]) as [number, number];
    return { p50Ms: p50, p90Ms: p90, samples };
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
}

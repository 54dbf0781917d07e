/**
 * The benchmark's disk probe (bench/lib/disk-sync.ts): it times commit-sized
 * durable writes in the directory it is given and leaves nothing behind.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { probeDiskSync } from '../../bench/lib/disk-sync.js';

describe('probeDiskSync', () => {
  let dir = '';
  afterEach(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  it('times each write + fdatasync and removes its file', () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keng-disk-sync-'));
    const r = probeDiskSync(dir, 30);
    expect(r.samples).toBe(30);
    // A durable write takes time on any disk (even tmpfs pays the system calls), and p90 is never below p50.
    expect(r.p50Ms).toBeGreaterThan(0);
    expect(r.p90Ms).toBeGreaterThanOrEqual(r.p50Ms);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('reports a directory it cannot write to as an error, not a figure', () => {
    expect(() => probeDiskSync(path.join(tmpdir(), 'keng-no-such-dir', 'x'), 5)).toThrow(/ENOENT/);
  });
});

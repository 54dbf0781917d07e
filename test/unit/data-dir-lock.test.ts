/**
 * DataDirLock in one process: a second holder is refused with one line naming
 * the directory and the holder; stop() frees the directory. Across processes
 * and after SIGKILL: test/integration/data-dir-lock.test.ts.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DataDirLock, HOLDER_FILE, readHolder } from '../../src/storage/state/index.js';
import { createLogger, type KengError } from '../../src/core/index.js';

const logger = createLogger('silent');
const clock = { now: () => Date.parse('2026-12-06T01:02:03.000Z') };
const dirs: string[] = [];
const locks: DataDirLock[] = [];
function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'keng-lock-'));
  dirs.push(d);
  return d;
}
function lock(dataDir: string): DataDirLock {
  const l = new DataDirLock({ dataDir, logger, clock });
  locks.push(l);
  return l;
}
async function refusal(l: DataDirLock): Promise<KengError | undefined> {
  return l.start().then(() => undefined, (e: unknown) => e as KengError);
}
afterEach(async () => {
  for (const l of locks.splice(0)) await l.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('DataDirLock', () => {
  it('constructor only assigns', () => {
    const dataDir = path.join(tempDir(), 'data');
    expect(lock(dataDir).held).toBe(false);
    expect(existsSync(dataDir)).toBe(false);
  });

  it('creates the directory, holds it, and records who holds it', async () => {
    const dataDir = path.join(tempDir(), 'nested', 'data');
    const a = lock(dataDir);
    await a.start();
    expect(a.held).toBe(true);
    expect(readHolder(dataDir)).toMatchObject({ pid: process.pid, startedAt: '2026-12-06T01:02:03.000Z' });
  });

  it('refuses a second holder with one line naming the directory and the holder', async () => {
    const dataDir = tempDir();
    await lock(dataDir).start();
    const b = lock(dataDir);
    const err = await refusal(b);
    expect(err?.code).toBe('KENG_ERR_DATA_DIR_IN_USE');
    expect(err?.message).toBe(`Data directory ${dataDir} is in use by another Keng process `
      + `(pid ${process.pid}, since 2026-12-06T01:02:03.000Z); stop it, or set KENG_DATA_DIR to another directory`);
    expect(b.held).toBe(false);
    // The refused one did not take over the holder record.
    expect(readHolder(dataDir)?.pid).toBe(process.pid);
  });

  it('refuses the same directory reached through another path', async () => {
    const base = tempDir();
    const dataDir = path.join(base, 'data');
    await lock(dataDir).start();
    const link = path.join(base, 'link');
    symlinkSync(dataDir, link);
    expect((await refusal(lock(link)))?.code).toBe('KENG_ERR_DATA_DIR_IN_USE');
  });

  it('says "pid unknown" when the holder record is missing', async () => {
    const dataDir = tempDir();
    await lock(dataDir).start();
    unlinkSync(path.join(dataDir, HOLDER_FILE));
    expect((await refusal(lock(dataDir)))?.message).toMatch(/\(pid unknown\)/);
  });

  it('stop() frees the directory for the next holder and removes the record', async () => {
    const dataDir = tempDir();
    const a = lock(dataDir);
    await a.start();
    await a.stop();
    expect(a.held).toBe(false);
    expect(existsSync(path.join(dataDir, HOLDER_FILE))).toBe(false);
    const b = lock(dataDir);
    await b.start();
    expect(b.held).toBe(true);
    expect(JSON.parse(readFileSync(path.join(dataDir, HOLDER_FILE), 'utf8'))).toMatchObject({ pid: process.pid });
  });

  it('a start that fails after locking holds nothing', async () => {
    const dataDir = tempDir();
    mkdirSync(path.join(dataDir, `${HOLDER_FILE}.tmp`)); // the holder record cannot be written
    const a = lock(dataDir);
    await expect(a.start()).rejects.toThrow(/EISDIR/);
    expect(a.held).toBe(false);
    rmSync(path.join(dataDir, `${HOLDER_FILE}.tmp`), { recursive: true });
    const b = lock(dataDir);
    await b.start();
    expect(b.held).toBe(true);
  });

  it('does not hold other directories', async () => {
    await lock(tempDir()).start();
    const other = lock(tempDir());
    await other.start();
    expect(other.held).toBe(true);
  });
});

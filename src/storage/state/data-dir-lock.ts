/**
 * One server per data directory: the server holds an exclusive lock on
 * <dataDir>/keng.lock from the start of start() to the end of stop(). A
 * second server on the same directory would run a second scheduler and
 * broadcast everything twice, so it refuses to start instead.
 *
 * Why SQLite's lock and not a lock file judged by age or pid: SQLite locks
 * with POSIX advisory locks (fcntl), which the kernel drops when the process
 * ends in any way (exit, crash, SIGKILL, OOM kill) and which do not survive a
 * reboot, so a stale lock can never block a restart. proper-lockfile and
 * similar (a lock directory refreshed by a timer, stale after N seconds)
 * would block a restart after kill -9 until the lock goes stale, and would
 * let a second server take the lock from a live one whose event loop
 * stalled. better-sqlite3 is already a dependency; no native addon is added.
 * fcntl locks belong to the file (inode), so another path to the same
 * directory (symlink, relative path, a second container on the same volume)
 * is caught too, and they are not inherited by child processes (ffmpeg,
 * espeak-ng). SQLite also refuses a second connection in the same process.
 * Not reliable on network file systems with broken locking (some NFS setups).
 *
 * The lock is an EXCLUSIVE transaction that is never committed, so nothing
 * is written and keng.lock stays empty. Who holds it is written beside it,
 * in keng.pid, for the refusal message: keng.lock itself must never be
 * opened with node:fs in the server, because closing any descriptor of a
 * file drops all of the process's fcntl locks on it.
 */
import { mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { PRIVATE_MODE, preparePrivateDb } from '../../core/private-files.js';
import { hostname } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Clock } from '../../core/clock.js';
import { Errors } from '../../core/errors.js';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';

export const LOCK_FILE = 'keng.lock';
export const HOLDER_FILE = 'keng.pid';

export interface DataDirLockOptions {
  dataDir: string;
  logger: Logger;
  clock: Clock;
}

/** What keng.pid says about the process holding the lock. */
export interface LockHolder { pid: number; startedAt: string; host: string }

export class DataDirLock implements Component {
  readonly name = 'data-dir-lock';
  private readonly opts: DataDirLockOptions;
  private handle: Database.Database | undefined;

  constructor(opts: DataDirLockOptions) {
    this.opts = opts;
  }

  get held(): boolean {
    return this.handle !== undefined;
  }

  async start(): Promise<void> {
    if (this.handle) return;
    const { dataDir, logger, clock } = this.opts;
    mkdirSync(dataDir, { recursive: true, mode: 0o750 });
    // timeout 0: a held lock is reported at once, not waited for.
    // Nothing secret in it, but the data directory holds only owner-only files (core/private-files.ts).
    preparePrivateDb(path.join(dataDir, LOCK_FILE));
    const db = new Database(path.join(dataDir, LOCK_FILE), { timeout: 0 });
    try {
      // Keep the lock even if the transaction ever ended.
      db.pragma('locking_mode = EXCLUSIVE');
      db.exec('BEGIN EXCLUSIVE');
    } catch (err) {
      db.close();
      if ((err as { code?: string }).code === 'SQLITE_BUSY') throw Errors.DATA_DIR_IN_USE(dataDir, describe(readHolder(dataDir)));
      throw err;
    }
    const holder: LockHolder = { pid: process.pid, startedAt: new Date(clock.now()).toISOString(), host: hostname() };
    const file = path.join(dataDir, HOLDER_FILE);
    try {
      // Renamed into place: a refused server never reads half a record.
      writeFileSync(`${file}.tmp`, `${JSON.stringify(holder)}\n`, { mode: PRIVATE_MODE });
      renameSync(`${file}.tmp`, file);
    } catch (err) {
      db.close(); // a failed start holds nothing
      throw err;
    }
    this.handle = db;
    logger.debug({ dataDir, pid: holder.pid }, 'data directory locked');
  }

  async stop(): Promise<void> {
    const db = this.handle;
    if (!db) return;
    this.handle = undefined;
    // Removed while still locked: a server that starts next writes its own.
    try { unlinkSync(path.join(this.opts.dataDir, HOLDER_FILE)); } catch { /* already gone */ }
    db.close();
  }
}

/** keng.pid of the holder; undefined when missing or unreadable (e.g. the holder is just starting). */
export function readHolder(dataDir: string): LockHolder | undefined {
  try {
    const h = JSON.parse(readFileSync(path.join(dataDir, HOLDER_FILE), 'utf8')) as Partial<LockHolder>;
    if (typeof h.pid === 'number' && typeof h.startedAt === 'string' && typeof h.host === 'string') return h as LockHolder;
  } catch { /* fall through */ }
  return undefined;
}

function describe(h: LockHolder | undefined): string {
  if (!h) return 'pid unknown';
  const where = h.host === hostname() ? '' : ` on host ${h.host}`;
  return `pid ${h.pid}${where}, since ${h.startedAt}`;
}

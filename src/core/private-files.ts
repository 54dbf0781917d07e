/**
 * Files only Keng's own user may read: the databases (credential hashes,
 * every reading, the InfluxDB queue), the files holding secrets (admin token,
 * command keys) and backups of them. Mode 0600, set when the file is created,
 * not after: a file created with the default mode (0644 under the usual umask)
 * and tightened later is readable by anyone for that moment, and SQLite gives
 * a database's -wal and -shm files the mode of the database file itself, so a
 * database created 0600 keeps its journal 0600 too.
 *
 * Not done with process.umask(): that would also apply to the media files
 * served to speakers and to whatever libraries create, and a umask is
 * process-wide state that tests and embedders do not expect to change.
 *
 * Changing modes is best effort: some filesystems (a FAT USB stick, some
 * network mounts) have none, and refusing to start there helps nobody.
 */
import { chmodSync, closeSync, fsyncSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';

export const PRIVATE_MODE = 0o600;

/** Files SQLite keeps next to a database (WAL mode: -wal, -shm; rollback journal: -journal). */
export const SQLITE_SIDE_FILES = ['-wal', '-shm', '-journal'] as const;

/**
 * Sets mode 0600 when the file is readable or writable by group or others.
 * Returns the mode it had when it was changed, undefined otherwise (also when
 * the file does not exist or modes cannot be changed).
 */
export function tightenMode(file: string): number | undefined {
  try {
    const mode = statSync(file).mode & 0o777;
    if ((mode & 0o077) === 0) return undefined;
    chmodSync(file, PRIVATE_MODE);
    return mode;
  } catch {
    return undefined;
  }
}

/** Creates `file` empty with mode 0600 when it does not exist (an existing file is tightened, never truncated). */
export function ensurePrivateFile(file: string): void {
  // 'a': O_CREAT without O_TRUNC; the mode applies only when the file is created.
  closeSync(openSync(file, 'a', PRIVATE_MODE));
  tightenMode(file);
}

/**
 * Before a writable SQLite open: the database file exists, 0600, so SQLite
 * creates its -wal and -shm files 0600 as well. Files from an older version
 * (or a restore) that are readable by others are tightened, side files included.
 */
export function preparePrivateDb(dbFile: string): void {
  if (isInMemory(dbFile)) return;
  ensurePrivateFile(dbFile);
  tightenSqliteFiles(dbFile);
}

/** Tightens a database and the side files it has (after opening: WAL mode creates them). */
export function tightenSqliteFiles(dbFile: string): void {
  if (isInMemory(dbFile)) return;
  tightenMode(dbFile);
  for (const suffix of SQLITE_SIDE_FILES) tightenMode(dbFile + suffix);
}

/** SQLite's names for databases without a file (an empty name is a temporary one). */
function isInMemory(dbFile: string): boolean {
  return dbFile === '' || dbFile === ':memory:' || dbFile.startsWith('file::memory:');
}

/**
 * Replaces `file` atomically with `data`, mode 0600: written to a temporary
 * file created exclusively with that mode, synced and renamed into place, so
 * a crash leaves the old content or the new one, never half of one.
 */
export function writePrivateFileAtomic(file: string, data: string | Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`;
  rmSync(tmp, { force: true }); // a leftover of a crash; 'wx' then guarantees the file is ours, created 0600
  const fd = openSync(tmp, 'wx', PRIVATE_MODE);
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  try {
    const dir = openSync(path.dirname(file), 'r');
    try { fsyncSync(dir); } finally { closeSync(dir); }
  } catch { /* not every platform can fsync a directory */ }
}

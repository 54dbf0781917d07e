/**
 * Small secret files in the data directory (or beside it): the media signing
 * key, the audit key. Mode 0600, never in state.db, so that a copy of the
 * database (sent with a bug report, opened with sqlite3) does not carry them.
 *
 * Creation is exclusive and durable: the content goes to a temporary file
 * (0600) that is synced and then hard-linked into place, which fails if the
 * name exists. So a concurrent creator never overwrites a key already handed
 * out, and a power cut never leaves an empty key file behind a chain or links
 * that were made with the key (what a plain create-then-write can do).
 */
import { chmodSync, closeSync, fsyncSync, linkSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';

/** Called when an existing secret file was readable by others (its mode, before it was set to 0600). */
export type LooseModeHandler = (mode: number) => void;

/** The file's content; null when it does not exist. A mode readable by group or others is set to 0600 (best effort: a read-only mount). */
export function readSecretFile(file: string, onLoose?: LooseModeHandler): Buffer | null {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077) {
      chmodSync(file, 0o600);
      onLoose?.(mode);
    }
  } catch { /* best effort (a read-only mount, filesystems without modes) */ }
  return data;
}

/** Reads the file, or creates it with `make()` (exclusive, 0600, synced). `created` says which. */
export function loadOrCreateSecretFile(file: string, make: () => Buffer, onLoose?: LooseModeHandler): { data: Buffer; created: boolean } {
  const existing = readSecretFile(file, onLoose);
  if (existing) return { data: existing, created: false };
  const data = make();
  const tmp = `${file}.${process.pid}.tmp`;
  rmSync(tmp, { force: true }); // a leftover of a crash; 'wx' then guarantees the file is ours, created 0600
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      // Another process created it meanwhile: use theirs.
      rmSync(tmp, { force: true });
      return { data: readFileSync(file), created: false };
    }
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS') { rmSync(tmp, { force: true }); throw err; }
    // A filesystem without hard links: exclusive create of the name itself, then write and sync.
    rmSync(tmp, { force: true });
    return writeExclusive(file, data);
  }
  rmSync(tmp, { force: true });
  syncDir(path.dirname(file));
  return { data, created: true };
}

function writeExclusive(file: string, data: Buffer): { data: Buffer; created: boolean } {
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return { data: readFileSync(file), created: false };
    throw err;
  }
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  syncDir(path.dirname(file));
  return { data, created: true };
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch { /* not every platform can fsync a directory */ }
}

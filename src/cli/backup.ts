/**
 * `keng backup <dir>`: a consistent copy of a data directory, also while the
 * server runs on it.
 *
 * The SQLite databases (state.db; telemetry.db of the embedded store, or
 * influx-queue.db, the readings not yet sent to InfluxDB) are copied with
 * SQLite's online backup API (better-sqlite3 `db.backup()`), each in one
 * step: one read transaction gives a snapshot of the whole file. All of them
 * are in WAL mode, where a reader never blocks the server's writer, so the
 * server keeps taking readings meanwhile; only its checkpoints wait until
 * the copy is done. Copying in many small steps instead would restart from
 * the first page whenever the server commits between two steps, which under
 * a steady stream of readings may never finish.
 *
 * state.db is copied first, then the telemetry database: every reading
 * acknowledged (PUBACK) before the backup started is in it. Media files are
 * written once and renamed into place, so copying the ones the copied
 * state.db lists gives exactly the library of that snapshot. The admin
 * token, the media signing key, the command keys and the audit key are
 * copied too (mode 0600): a restored Keng keeps its admin token, its
 * speakers' links stay valid, its speakers keep obeying its signed commands
 * and its keyed audit log still verifies. An audit key kept elsewhere
 * (audit.keyFile, KENG_AUDIT_KEY) is not copied: that is what "elsewhere" is for.
 *
 * The audit anchor file is copied FIRST, before the state snapshot: every
 * anchor in the copy then names an entry the copied state.db holds (one
 * appended after the snapshot would look like a cut tail in the restore).
 *
 * In cluster mode the state and the readings are in PostgreSQL: the backup
 * adds a pg_dump of the cluster database (backup-cluster.ts), and the media
 * and firmware files copied are the ones the dumped rows name.
 *
 * `keng-backup.json` (the manifest: versions, time, files with sizes and
 * SHA-256) is written last; a directory without it is an unfinished backup.
 */
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { Errors } from '../core/errors.js';
import { preparePrivateDb, tightenSqliteFiles, writePrivateFileAtomic } from '../core/private-files.js';
import { STATE_DB_FILE } from '../storage/state/index.js';
import { ADMIN_TOKEN_FILE } from '../auth/index.js';
import { SIGNING_KEY_FILE } from '../media/index.js';
import { COMMAND_KEYS_FILE } from '../rpc/index.js';
import { AUDIT_ANCHORS_FILE, AUDIT_CLUSTER_ANCHORS_FILE, AUDIT_KEY_FILE } from '../audit/index.js';
import { FIRMWARE_SIGNING_KEY_FILE } from '../firmware/index.js';
import { CLUSTER_DUMP_FILE, dumpClusterDb } from './backup-cluster.js';

export const MANIFEST_FILE = 'keng-backup.json';
/** The telemetry databases a data directory may hold (embedded store; queue in front of InfluxDB). */
export const TELEMETRY_DB_FILES = ['telemetry.db', 'influx-queue.db'] as const;
const MEDIA_DIR = 'media';
const FIRMWARE_DIR = 'firmware';
/**
 * Small secret files that belong to the state; copied when present.
 * Cluster mode keeps the command keys and the link-signing keys in PostgreSQL (encrypted: backed up
 * with the database and the audit key, docs/cluster.md "Shared secrets"); a node's files, if any,
 * are still copied: they are what it imported, and what it uses again in embedded mode.
 */
const SECRET_FILES = [ADMIN_TOKEN_FILE, SIGNING_KEY_FILE, COMMAND_KEYS_FILE, AUDIT_KEY_FILE, FIRMWARE_SIGNING_KEY_FILE];

export interface BackupFile { path: string; bytes: number; sha256: string }

export interface BackupManifest {
  format: 1;
  kind: 'keng-backup';
  createdAt: string;
  finishedAt: string;
  keng: string;
  node: string;
  sqlite: string;
  host: string;
  source: string;
  /** Highest applied state migration of the copied state.db. */
  stateSchemaVersion: number;
  files: BackupFile[];
  /** Media rows whose file was gone (deleted after the state snapshot was taken). */
  missingMedia: string[];
  /** Firmware packages the state names whose binary was not found. */
  missingFirmware: string[];
  /** Cluster mode: the dump of the cluster database (pg_dump custom format). */
  database?: { file: string; server: string; pgDump: string };
  restore: string;
}

export interface BackupOptions {
  dataDir: string;
  target: string;
  now?: () => Date;
  /** Cluster mode: the cluster database (KENG_DATABASE_URL) is dumped too; `pgDump` is the program (default `pg_dump`). */
  database?: { url: string; pgDump?: string };
}

/** The package version, from the package.json above this file (src/ in tests, dist/src/ when built). */
export function kengVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const p = path.join(dir, 'package.json');
    if (existsSync(p)) {
      const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'keng' && pkg.version) return pkg.version;
    }
    dir = path.dirname(dir);
  }
  return 'unknown';
}

function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** Copies a live SQLite database in one backup step (one snapshot), then checks the copy. */
async function backupDb(source: string, dest: string): Promise<void> {
  preparePrivateDb(dest); // created 0600 before SQLite writes to it (core/private-files.ts)
  const db = new Database(source, { fileMustExist: true, timeout: 5000 });
  try {
    // 0x7fffffff pages per step: the rest of the file in one step (see the file comment).
    await db.backup(dest, { progress: () => 0x7fffffff });
  } finally {
    db.close();
  }
  const copy = new Database(dest, { fileMustExist: true });
  try {
    const check = copy.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new Error(`the copy of ${path.basename(source)} failed its integrity check: ${String(check)}`);
  } finally {
    copy.close();
  }
  tightenSqliteFiles(dest);
}

function sqliteVersion(): string {
  const db = new Database(':memory:');
  try { return db.prepare('SELECT sqlite_version()').pluck().get() as string; } finally { db.close(); }
}

function assertEmptyTarget(target: string): void {
  if (!existsSync(target)) return;
  if (!statSync(target).isDirectory()) throw Errors.BACKUP_TARGET_NOT_EMPTY(target);
  if (readdirSync(target).length > 0) throw Errors.BACKUP_TARGET_NOT_EMPTY(target);
}

function copySecret(dataDir: string, target: string, f: string, files: string[]): void {
  copyFileSync(path.join(dataDir, f), path.join(target, f));
  chmodSync(path.join(target, f), 0o600);
  files.push(f);
}

export async function backupDataDir(opts: BackupOptions): Promise<BackupManifest> {
  const now = opts.now ?? (() => new Date());
  const dataDir = path.resolve(opts.dataDir);
  const target = path.resolve(opts.target);
  const stateFile = path.join(dataDir, STATE_DB_FILE);
  if (!existsSync(stateFile)) throw Errors.NO_STATE(dataDir, STATE_DB_FILE);
  if (target === dataDir || target.startsWith(dataDir + path.sep)) {
    throw Errors.VALIDATION(`the backup directory ${target} must not be inside the data directory ${dataDir}`);
  }
  assertEmptyTarget(target);
  const createdAt = now().toISOString();
  // Holds credential hashes, tokens and keys: the owner only.
  mkdirSync(target, { recursive: true, mode: 0o700 });
  chmodSync(target, 0o700);

  const files: string[] = [];
  // Anchors before the snapshot (see the file comment).
  for (const f of [AUDIT_ANCHORS_FILE, AUDIT_CLUSTER_ANCHORS_FILE]) {
    if (existsSync(path.join(dataDir, f))) copySecret(dataDir, target, f, files);
  }
  await backupDb(stateFile, path.join(target, STATE_DB_FILE));
  files.push(STATE_DB_FILE);
  for (const f of TELEMETRY_DB_FILES) {
    if (!existsSync(path.join(dataDir, f))) continue;
    await backupDb(path.join(dataDir, f), path.join(target, f));
    files.push(f);
  }

  // The media the copied state knows (a newer upload is not in that state; a restored server would delete its file).
  const copy = new Database(path.join(target, STATE_DB_FILE), { readonly: true, fileMustExist: true });
  let stateSchemaVersion: number;
  let media: Array<{ id: string; ext: string }> = [];
  let firmware: string[] = [];
  try {
    stateSchemaVersion = (copy.prepare('SELECT MAX(version) FROM schema_migrations').pluck().get() as number | null) ?? 0;
    // Cluster mode: the dump's lists (below); the node's state.db lists what it had before cluster mode.
    if (!opts.database) {
      const hasMedia = copy.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'media'").pluck().get();
      if (hasMedia) media = copy.prepare('SELECT id, ext FROM media ORDER BY id').all() as Array<{ id: string; ext: string }>;
      const hasFirmware = copy.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'firmware_packages'").pluck().get();
      if (hasFirmware) firmware = copy.prepare('SELECT id FROM firmware_packages ORDER BY id').pluck().all() as string[];
    }
  } finally {
    copy.close();
  }
  let database: BackupManifest['database'];
  if (opts.database) {
    const dump = await dumpClusterDb({ url: opts.database.url, file: path.join(target, CLUSTER_DUMP_FILE), ...(opts.database.pgDump ? { pgDump: opts.database.pgDump } : {}) });
    chmodSync(path.join(target, CLUSTER_DUMP_FILE), 0o600);
    files.push(CLUSTER_DUMP_FILE);
    media = dump.media;
    firmware = dump.firmware;
    database = { file: CLUSTER_DUMP_FILE, server: dump.serverVersion, pgDump: dump.pgDumpVersion };
  }
  const missingMedia: string[] = [];
  mkdirSync(path.join(target, MEDIA_DIR), { mode: 0o750 });
  for (const m of media) {
    const name = `${m.id}.${m.ext}`;
    const from = path.join(dataDir, MEDIA_DIR, name);
    if (!existsSync(from)) { missingMedia.push(m.id); continue; }
    copyFileSync(from, path.join(target, MEDIA_DIR, name));
    files.push(path.join(MEDIA_DIR, name));
  }
  // Firmware binaries the copied state knows: what devices run is not to be rebuilt from memory.
  const missingFirmware: string[] = [];
  if (firmware.length) mkdirSync(path.join(target, FIRMWARE_DIR), { mode: 0o700 });
  for (const id of firmware) {
    const name = path.join(FIRMWARE_DIR, `${id}.bin`);
    if (!existsSync(path.join(dataDir, name))) { missingFirmware.push(id); continue; }
    copySecret(dataDir, target, name, files);
  }
  for (const f of SECRET_FILES) {
    if (existsSync(path.join(dataDir, f))) copySecret(dataDir, target, f, files);
  }

  const manifest: BackupManifest = {
    format: 1, kind: 'keng-backup', createdAt, finishedAt: now().toISOString(),
    keng: kengVersion(), node: process.versions.node,
    sqlite: sqliteVersion(),
    host: hostname(), source: dataDir, stateSchemaVersion,
    files: files.map((f) => ({ path: f, bytes: statSync(path.join(target, f)).size, sha256: sha256File(path.join(target, f)) })),
    missingMedia,
    missingFirmware,
    ...(database ? { database } : {}),
    restore: database
      ? `Stop every node; restore ${CLUSTER_DUMP_FILE} into an empty database with pg_restore --no-owner --dbname=<KENG_DATABASE_URL> ${CLUSTER_DUMP_FILE}; copy the other files except keng-backup.json into each node's empty data directory (media and firmware: or into the shared storage); start the nodes.`
      : 'Stop Keng; copy everything in this directory except keng-backup.json into an empty data directory (KENG_DATA_DIR), owned by the user Keng runs as; start Keng.',
  };
  // Written last, renamed into place: its presence marks a finished backup.
  writePrivateFileAtomic(path.join(target, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

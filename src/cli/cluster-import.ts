/**
 * `keng cluster import [--data-dir D] [--dry-run] [--json]`: copies an embedded node's shared state
 * (state.db: the device registry, accounts, the audit chain, schedules, firmware, media records, Modbus
 * settings, shared attributes, gateway sub-devices) into the cluster database (KENG_DATABASE_URL), so
 * the node can switch to cluster mode without registering devices and users again
 * (docs/cluster.md "Switching an existing node to cluster mode").
 *
 * - The data directory's lock is taken for the whole import (a server running on it is refused,
 *   and no server starts on it meanwhile). state.db is upgraded to this build's schema as the server
 *   would, then read through a second, read-only connection in one read transaction (one snapshot).
 * - Everything is written in ONE PostgreSQL transaction: all or nothing. It takes an advisory lock
 *   and the rows every registry write and audit append lock, so a node started meanwhile waits.
 * - A database that already holds Keng state (any imported table not empty, or an audit head that
 *   moved) is refused (KENG_ERR_CLUSTER_NOT_EMPTY, exit 73): importing twice never duplicates, and
 *   a cluster in use is never overwritten. There is no --force on purpose: merging two registries
 *   and two audit chains has no safe meaning.
 * - The audit chain keeps its seq and hashes: it is checked in state.db first (with the audit key
 *   and the embedded anchors; a broken chain is refused), and again in PostgreSQL before the commit.
 *   The import itself is the next audit entry (`cluster.imported`).
 * - --dry-run writes nothing to PostgreSQL (not even its tables): row counts, the chain check and
 *   whether the database would be refused.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Command } from 'commander';
import { sql, type Transaction } from 'kysely';
import { loadConfig, type Config } from '../config/index.js';
import { Errors, createLogger, isKengError, systemClock } from '../core/index.js';
import { ALL_MIGRATIONS, PG_STATE_SCOPES } from '../migrations.js';
import { migrate, redactUrl } from '../storage/sql/index.js';
import { DataDirLock, StateDb, stateSqlitePort } from '../storage/state/index.js';
import {
  AUDIT_ANCHORS_FILE, AUDIT_CLUSTER_ANCHORS_FILE, AUDIT_KEY_FILE, AuditLog, anchorFiles, auditKeyLocation, readAnchorFiles, readAuditKey,
  verifyAuditChain, verifyAuditChainIn, type AuditKey, type ChainReport, type LocatedAnchor,
} from '../audit/index.js';
import { ADMIN_TOKEN_FILE } from '../auth/index.js';
import { SIGNING_KEY_FILE } from '../media/index.js';
import { FIRMWARE_SIGNING_KEY_FILE } from '../firmware/index.js';
import { COMMAND_KEYS_FILE } from '../rpc/index.js';
import { action, cliActor, out, withClusterDb } from './common.js';
import { copyTable, sqliteCount } from './cluster-copy.js';
import { IMPORTED_TABLES } from './cluster-tables.js';

/** Advisory lock key of the import ("KIMP"): two imports into one database take turns. */
const IMPORT_LOCK = 0x4b494d50;

export interface ImportReport {
  dataDir: string;
  database: string;
  dryRun: boolean;
  /** Rows per imported table (read from state.db; copied unless dryRun). */
  tables: Record<string, number>;
  audit: { entries: number; lastSeq: number; keyId: string | null; keySource: string | null; anchorsChecked: number; importSeq: number | null };
  /** Files the cluster's nodes need and the import does not copy. */
  files: { media: string[]; firmware: string[]; missing: string[]; secrets: string[]; readings: string[] };
  notes: string[];
}

interface Opts { dataDir?: string; dryRun?: boolean; json?: boolean }

/** Imported tables holding rows in PostgreSQL, and an audit head that moved: a database in use. */
async function stateInUse(trx: Transaction<unknown>): Promise<string[]> {
  const used: string[] = [];
  for (const { table } of IMPORTED_TABLES) {
    const exists = (await sql<{ t: string | null }>`SELECT to_regclass(${table}) AS t`.execute(trx)).rows[0]?.t;
    if (!exists) continue;
    const n = (await sql<{ n: number }>`SELECT count(*) AS n FROM ${sql.table(table)}`.execute(trx)).rows[0]!.n;
    if (n > 0) used.push(`${table}: ${n} row${n === 1 ? '' : 's'}`);
  }
  if ((await sql<{ t: string | null }>`SELECT to_regclass('audit_head') AS t`.execute(trx)).rows[0]?.t) {
    const head = (await sql<{ seq: number }>`SELECT seq FROM audit_head WHERE id = 1`.execute(trx)).rows[0];
    if (head && head.seq > 0 && !used.some((u) => u.startsWith('audit_log:'))) used.push(`audit_head at seq ${head.seq}`);
  }
  return used;
}

function chainRefusal(r: Extract<ChainReport, { ok: false }>, where: string): Error {
  if (r.kind === 'tampered') return Errors.AUDIT_CHAIN_BROKEN(r.seq, `${r.reason} (${where}; nothing imported: \`keng audit verify\` without KENG_DATABASE_URL shows it)`);
  return Errors.AUDIT_KEY(`${r.reason} (${where}; give \`keng cluster import\` the server's audit key; nothing imported)`);
}

/** Files under the data directory that the nodes need and the import does not move. */
function filesOf(src: Database.Database, dataDir: string): ImportReport['files'] {
  const media = (src.prepare('SELECT id, ext FROM media ORDER BY rowid').all() as Array<{ id: string; ext: string }>).map((m) => path.join(dataDir, 'media', `${m.id}.${m.ext}`));
  const firmware = (src.prepare('SELECT id FROM firmware_packages ORDER BY rowid').all() as Array<{ id: string }>).map((f) => path.join(dataDir, 'firmware', `${f.id}.bin`));
  const secrets = [SIGNING_KEY_FILE, FIRMWARE_SIGNING_KEY_FILE, COMMAND_KEYS_FILE, AUDIT_KEY_FILE, ADMIN_TOKEN_FILE].map((f) => path.join(dataDir, f)).filter((f) => existsSync(f));
  const readings = ['telemetry.db', 'influx-queue.db'].map((f) => path.join(dataDir, f)).filter((f) => existsSync(f));
  return { media, firmware, missing: [...media, ...firmware].filter((f) => !existsSync(f)), secrets, readings };
}

export async function clusterImport(o: Opts, config: Readonly<Config> = loadConfig()): Promise<ImportReport> {
  const url = config.cluster.databaseUrl;
  if (url === undefined) throw Errors.CONFIG('KENG_DATABASE_URL: not set; `keng cluster import` copies this node\'s state into the cluster database it names');
  const dataDir = path.resolve(o.dataDir ?? config.dataDir);
  if (!existsSync(path.join(dataDir, 'state.db'))) throw Errors.NO_STATE(dataDir, 'state.db');
  const logger = createLogger(process.env.KENG_LOG_LEVEL ? config.logLevel : 'warn', { destination: process.stderr });
  const notes: string[] = [];
  const lock = new DataDirLock({ dataDir, logger, clock: systemClock });
  try {
    await lock.start();
  } catch (err) {
    // A dry run only reads; it may plan while the server still runs.
    if (!o.dryRun || !isKengError(err) || err.code !== 'KENG_ERR_DATA_DIR_IN_USE') throw err;
    notes.push(`a Keng server runs on ${dataDir}: stop it before the import (the import refuses a data directory in use)`);
  }
  const state = new StateDb({ dataDir, logger: logger.child({ module: 'state' }), migrations: ALL_MIGRATIONS, create: false });
  let src: Database.Database | null = null;
  try {
    await state.start();
    const key: AuditKey | null = readAuditKey(dataDir, config.audit);
    const read = readAnchorFiles(anchorFiles(dataDir, config.audit.anchorFile, false));
    const anchors: LocatedAnchor[] = read.anchors;
    notes.push(...read.problems);
    const embedded = await verifyAuditChain(stateSqlitePort(state), { key, anchors });
    if (!embedded.ok) throw chainRefusal(embedded, 'the embedded chain in state.db');
    src = new Database(state.file, { readonly: true, fileMustExist: true });
    src.exec('BEGIN'); // one snapshot for every table, counts included
    const db = src;
    const tables: Record<string, number> = Object.fromEntries(IMPORTED_TABLES.map((t) => [t.table, sqliteCount(db, t.table)]));
    const files = filesOf(db, dataDir);
    let importSeq: number | null = null;
    await withClusterDb(url, async (pg) => {
      if (o.dryRun) {
        const used = await pg.snapshot(stateInUse);
        if (used.length) notes.push(`the import would be refused: the cluster database already holds Keng state (${used.join(', ')})`);
        return;
      }
      for (const { scope, migrations } of PG_STATE_SCOPES) await migrate(pg, scope, migrations);
      importSeq = await pg.write(async (trx) => {
        await sql`SELECT pg_advisory_xact_lock(${IMPORT_LOCK})`.execute(trx);
        // The rows every audit append and registry write lock first: a node starting meanwhile waits for the commit.
        await sql`SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE`.execute(trx);
        await sql`SELECT v FROM registry_version WHERE id = 1 FOR UPDATE`.execute(trx);
        const used = await stateInUse(trx);
        if (used.length) throw Errors.CLUSTER_NOT_EMPTY(used.join(', '));
        for (const t of IMPORTED_TABLES) {
          const n = await copyTable(db, trx, t);
          if (n !== tables[t.table]) throw Errors.INTERNAL(`${t.table}: ${n} rows copied of ${tables[t.table]}`);
        }
        const head = db.prepare('SELECT seq, hash FROM audit_head WHERE id = 1').get() as { seq: number; hash: string } | undefined;
        if (head) await sql`UPDATE audit_head SET seq = ${head.seq}, hash = ${head.hash} WHERE id = 1`.execute(trx);
        // Nodes already running reload areas and devices when the version moves.
        await sql`UPDATE registry_version SET v = v + 1 WHERE id = 1`.execute(trx);
        const copied = await verifyAuditChainIn(trx, { key, anchors });
        if (!copied.ok) throw chainRefusal(copied, 'the chain as copied into PostgreSQL');
        if (copied.lastSeq !== embedded.lastSeq) throw Errors.INTERNAL(`audit chain: ${copied.lastSeq} entries copied of ${embedded.lastSeq}`);
        const audit = new AuditLog({ db: pg, clock: systemClock, key });
        const entry = await audit.record({ actor: cliActor(), action: 'cluster.imported', target: `node:${config.cluster.nodeId ?? 'embedded'}`, after: { dataDir, tables } }, trx);
        return entry.seq;
      });
    });
    if (existsSync(path.join(dataDir, AUDIT_CLUSTER_ANCHORS_FILE))) {
      notes.push(`${path.join(dataDir, AUDIT_CLUSTER_ANCHORS_FILE)} already exists: its anchors name the chain of a cluster database this directory used before; move it aside before a node starts here, or \`keng audit verify\` reports them`);
    }
    if (!key && embedded.count > 0) notes.push(`no audit key at ${auditKeyLocation(dataDir, config.audit).label}: the chain is not keyed yet; the first node keys it`);
    return {
      dataDir, database: redactUrl(url), dryRun: o.dryRun === true, tables, files, notes,
      audit: { entries: embedded.count, lastSeq: embedded.lastSeq, keyId: key?.id ?? null, keySource: key?.source ?? null, anchorsChecked: embedded.anchors, importSeq },
    };
  } finally {
    if (src) { try { src.exec('COMMIT'); } catch { /* not in a transaction */ } src.close(); }
    await state.stop();
    await lock.stop();
  }
}

function printReport(r: ImportReport, config: Readonly<Config>): void {
  out(r.dryRun ? `Dry run: nothing written. ${r.dataDir} → ${r.database} would copy:` : `Imported ${r.dataDir} into ${r.database} (one transaction):`);
  const width = Math.max(...Object.keys(r.tables).map((t) => t.length));
  for (const [t, n] of Object.entries(r.tables)) out(`  ${t.padEnd(width)}  ${n}`);
  const a = r.audit;
  out(`Audit chain: ${a.entries} entries, checked${a.keyId ? ` with key id ${a.keyId}` : ''} and ${a.anchorsChecked} anchor${a.anchorsChecked === 1 ? '' : 's'}`
    + `${r.dryRun ? '' : `; seq and hashes kept, verified in PostgreSQL before the commit; the import is entry ${a.importSeq}`}.`);
  if (a.keyId) out(`  Every node needs this audit key (id ${a.keyId}, read from ${a.keySource}): KENG_AUDIT_KEY, audit.keyFile or <dataDir>/${AUDIT_KEY_FILE}, the same on each.`);
  out(`  Anchors: nodes anchor the cluster's chain in <dataDir>/${AUDIT_CLUSTER_ANCHORS_FILE}. ${path.join(r.dataDir, AUDIT_ANCHORS_FILE)} stays valid for the imported part:`);
  out(`  keep it, and check it with \`keng audit verify --anchors ${path.join(r.dataDir, AUDIT_ANCHORS_FILE)}\` (KENG_DATABASE_URL set).`);
  out();
  out('Not imported:');
  const store = config.telemetry.store === 'influxdb' ? 'InfluxDB, which the cluster nodes can use too (KENG_TELEMETRY_STORE=influxdb)' : 'this data directory';
  out(`  readings: stay in ${store}${r.files.readings.length ? ` (${r.files.readings.join(', ')})` : ''}; the cluster's history starts empty (docs/cluster.md).`);
  if (r.files.media.length || r.files.firmware.length) {
    out('  files: copy them to the same path on every node, or to the shared storage (docs/cluster.md "Media library", "Firmware packages"):');
    for (const f of [...r.files.media, ...r.files.firmware]) out(`    ${f}${r.files.missing.includes(f) ? '  (MISSING here)' : ''}`);
  }
  if (r.files.secrets.length) {
    out('  secret files: start the first cluster node on THIS data directory, it stores its keys and token in the database');
    out('  (docs/cluster.md "Shared secrets"); give every node the same audit key:');
    for (const f of r.files.secrets) out(`    ${f}`);
  }
  for (const n of r.notes) out(`note: ${n}`);
}

export function registerCluster(program: Command): void {
  const cluster = program.command('cluster').description('cluster mode (docs/cluster.md)');
  cluster.command('import')
    .description('copy this node\'s shared state (devices, accounts, audit chain, schedules, ...) from state.db into an unused cluster database (KENG_DATABASE_URL), in one transaction')
    .option('--data-dir <dir>', 'the embedded node\'s data directory (default: KENG_DATA_DIR)')
    .option('--dry-run', 'write nothing: row counts, the audit chain check, and whether the database would be refused')
    .option('--json', 'print the report as JSON')
    .action(action(async (o: Opts) => {
      const config = loadConfig();
      const r = await clusterImport(o, config);
      if (o.json) { out(JSON.stringify(r, null, 2)); return; }
      printReport(r, config);
    }));
}

/**
 * `keng audit verify` and `keng audit head` (docs/audit.md).
 *
 * verify: the chain with the audit key (the server's: KENG_AUDIT_KEY,
 * audit.keyFile or <dataDir>/audit-key) and every anchor it can read
 * (<dataDir>/audit-anchors.jsonl, audit.anchorFile, and --anchors files:
 * anchor lines, `keng audit head` output, or the server's JSON log).
 * Exit status: 0 intact; 1 tampered (KENG_ERR_AUDIT_CHAIN_BROKEN, first bad
 * seq and why); 78 the key is missing or is not the chain's (KENG_ERR_AUDIT_KEY);
 * 66 no state. Nothing is created or written: the CLI only reads.
 *
 * head: the current head signed with the key, one JSON line to keep elsewhere.
 */
import type { Command } from 'commander';
import { loadConfig, type Config } from '../config/index.js';
import { Errors } from '../core/index.js';
import type { Db } from '../storage/sql/index.js';
import { withClusterDb } from './common.js';
import { stateSqlitePort, type StateDb } from '../storage/state/index.js';
import { anchorFiles, auditKeyLocation, chainHead, readAnchorFiles, readAuditKey, signAnchor, verifyAuditChain, type AuditKey, type ChainReport } from '../audit/index.js';

type Action = <A extends unknown[]>(fn: (...args: A) => Promise<void>) => (...args: A) => Promise<void>;

export interface AuditCliDeps {
  /** Opens the existing state store (KENG_ERR_NO_STATE when there is none) and runs fn on it. */
  withState<T>(fn: (db: StateDb) => T | Promise<T>): Promise<T>;
  /** One-line KENG_ERR errors and the exit status. */
  action: Action;
}

/**
 * The chain's database: PostgreSQL in cluster mode (KENG_DATABASE_URL, the one chain every node appends to),
 * the data directory's state.db otherwise.
 */
async function withChainDb<T>(config: Readonly<Config>, deps: AuditCliDeps, fn: (db: Db<unknown>) => Promise<T>): Promise<T> {
  const url = config.cluster.databaseUrl;
  return url === undefined ? deps.withState((state) => fn(stateSqlitePort(state))) : withClusterDb(url, fn);
}

/** The server's audit key as the CLI finds it (never generated here); null when its file does not exist. */
export function cliAuditKey(config: Readonly<Config> = loadConfig()): AuditKey | null {
  return readAuditKey(config.dataDir, config.audit);
}

function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** "OK: 12 audit entries, chain intact (last seq 12, keyed since seq 3, 4 anchors checked)". */
function okLine(r: ChainReport): string {
  if (r.count === 0) return 'OK: 0 audit entries, chain intact';
  const keyed = r.keyedSince === null
    ? 'NOT keyed: plain sha256 links, which anyone holding the database can recompute; the server keys the chain at its next start'
    : `keyed since seq ${r.keyedSince}, ${r.anchors} anchor${r.anchors === 1 ? '' : 's'} checked`;
  return `OK: ${r.count} audit entries, chain intact (last seq ${r.lastSeq}, ${keyed})`;
}

export function registerAudit(program: Command, deps: AuditCliDeps): void {
  const audit = program.command('audit').description('the keyed, hash-chained audit log (docs/audit.md)');
  audit.command('verify')
    .description('check the audit chain with the audit key, and every anchor: OK, or the first bad seq and why (exit 1; 78: key missing or wrong)')
    .option('--anchors <files...>', 'more anchors to check: anchor lines, `keng audit head` output, or the server\'s JSON log')
    .option('--json', 'print JSON')
    .action(deps.action(async (o: { anchors?: string[]; json?: boolean }) => {
      const config = loadConfig();
      const { report, notes } = await withChainDb(config, deps, async (db) => {
        const key = cliAuditKey(config);
        // Anchors are read before the chain: one written meanwhile may name entries a snapshot taken earlier lacks.
        const files = [...anchorFiles(config.dataDir, config.audit.anchorFile, config.cluster.databaseUrl !== undefined), ...(o.anchors ?? [])];
        const read = readAnchorFiles(files);
        const notes = [...read.problems, ...read.missing.map((f) => `no anchor file ${f}`)];
        if (!key) notes.push(`no audit key at ${auditKeyLocation(config.dataDir, config.audit).label}`);
        return { report: await verifyAuditChain(db, { key, anchors: read.anchors }), notes };
      });
      if (o.json) out(JSON.stringify({ ...report, notes }, null, 2));
      if (!report.ok) {
        if (report.kind === 'tampered') throw Errors.AUDIT_CHAIN_BROKEN(report.seq, report.reason);
        throw Errors.AUDIT_KEY(`${report.reason} (${report.kind === 'no-key' ? 'give the CLI the server\'s key' : 'wrong key'}; docs/audit.md)`);
      }
      if (o.json) return;
      out(okLine(report));
      for (const n of notes) out(`note: ${n}`);
    }));
  audit.command('head')
    .description('print the head of the audit chain signed with the audit key (one JSON line to keep elsewhere; check later with verify --anchors)')
    .action(deps.action(async () => {
      const config = loadConfig();
      const anchor = await withChainDb(config, deps, async (db) => {
        const key = cliAuditKey(config);
        if (!key) throw Errors.AUDIT_KEY(`no audit key at ${auditKeyLocation(config.dataDir, config.audit).label}; the head is signed with the server's key`);
        return signAnchor(await chainHead(db), key, Date.now(), 'head');
      });
      out(JSON.stringify(anchor));
    }));
}

/**
 * The server's side of the keyed audit chain (docs/audit.md), a component
 * started right after the state store, before anything records:
 *
 *  - start: loads the audit key (key.ts), generating <dataDir>/audit-key only
 *    while the chain has no keyed entry; refuses to start with a missing key
 *    or another key than the chain's (KENG_ERR_AUDIT_KEY, exit 78): writing on
 *    with a new key would make every earlier keyed entry unverifiable. Then
 *    keys the chain (the `audit.chain_keyed` entry, once) and anchors the head.
 *  - every `audit.anchorIntervalSec` (when the head moved) and at stop:
 *    anchors the head again.
 *
 * Anchoring = the signed head (anchor.ts) logged at info level, for the log
 * shipping to carry out of reach of whoever holds only the database, and
 * appended to <dataDir>/audit-anchors.jsonl and `audit.anchorFile`.
 */
import { sql } from 'kysely';
import type { Db } from '../storage/sql/index.js';
import type { Clock } from '../core/clock.js';
import { Errors } from '../core/errors.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import { anchorFiles, appendAnchor, readAnchorFiles, signAnchor, type AuditAnchor } from './anchor.js';
import { auditKeyLocation, createAuditKey, readAuditKey, type AuditKey, type AuditKeySettings } from './key.js';
import { chainHead, type AuditLog } from './log.js';
import { verifyAuditChain, type ChainReport } from './verify.js';

export interface AuditChainSettings extends AuditKeySettings {
  anchorFile?: string;
  anchorIntervalSec: number;
}

export interface AuditChainOptions {
  audit: AuditLog;
  /** The state store as a Db (the chain's tables). */
  db: Db<unknown>;
  dataDir: string;
  settings: AuditChainSettings;
  logger: Logger;
  clock: Clock;
}

export class AuditChain implements Component {
  readonly name = 'audit';
  private readonly o: AuditChainOptions;
  private key: AuditKey | null = null;
  private timer: NodeJS.Timeout | null = null;
  private anchored: { seq: number; hash: string } | null = null;

  constructor(opts: AuditChainOptions) {
    this.o = opts;
  }

  /** Where anchors go (and are read from by verify). */
  get anchorFiles(): string[] { return anchorFiles(this.o.dataDir, this.o.settings.anchorFile, this.o.db.dialect === 'postgres'); }

  async start(): Promise<void> {
    const { audit, dataDir, settings, logger } = this.o;
    const key = await this.loadKey();
    this.key = key;
    audit.useKey(key);
    await audit.ensureKeyed();
    const files = this.anchorFiles;
    try {
      await this.anchor('start');
    } catch (err) {
      // A configured anchor file that cannot be written is a setting to fix, like an unreadable TLS file.
      if (settings.anchorFile === undefined) throw err;
      throw Errors.CONFIG(`KENG_AUDIT_ANCHOR_FILE (audit.anchorFile): cannot append to ${files.join(' or ')} (${(err as Error).message})`);
    }
    logger.debug({ keyId: key.id, keySource: key.source, anchorFiles: files, dataDir }, 'audit chain keyed');
    this.timer = setInterval(() => void this.tick(), settings.anchorIntervalSec * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!this.key) return;
    try { await this.anchor('stop'); } catch (err) { this.o.logger.error({ err }, 'could not anchor the audit head at stop'); }
    this.key = null;
  }

  /** The key in use (after start). */
  get auditKey(): AuditKey | null { return this.key; }

  /** The current head, signed, without writing it anywhere (GET /api/v1/audit/head). */
  async signedHead(reason = 'head'): Promise<AuditAnchor> {
    const key = this.requireKey();
    return signAnchor(await chainHead(this.o.db), key, this.o.clock.now(), reason);
  }

  /** Signs the head, logs it and appends it to every anchor file. */
  async anchor(reason: string): Promise<AuditAnchor> {
    const a = await this.signedHead(reason);
    this.o.logger.info({ auditAnchor: a }, 'audit head anchored');
    for (const f of this.anchorFiles) appendAnchor(f, a);
    this.anchored = { seq: a.seq, hash: a.hash };
    return a;
  }

  /** The whole check, as `keng audit verify` does it: anchors read first, then the chain. */
  verify(extraAnchorFiles: readonly string[] = []): Promise<ChainReport> {
    const { anchors } = readAnchorFiles([...this.anchorFiles, ...extraAnchorFiles]);
    return verifyAuditChain(this.o.db, { key: this.requireKey(), anchors });
  }

  private async tick(): Promise<void> {
    try {
      const head = await chainHead(this.o.db);
      if (this.anchored && head.seq === this.anchored.seq && head.hash === this.anchored.hash) return;
      await this.anchor('interval');
    } catch (err) {
      this.o.logger.error({ err }, 'could not anchor the audit head');
    }
  }

  private requireKey(): AuditKey {
    if (!this.key) throw Errors.NOT_READY('the audit chain is not started');
    return this.key;
  }

  /** The configured key, created only for a chain not keyed yet; it must be the chain's. */
  private async loadKey(): Promise<AuditKey> {
    const { dataDir, settings, logger } = this.o;
    const onLoose = (file: string) => (mode: number): void => {
      logger.warn({ file, mode: mode.toString(8) }, 'audit key file was readable by others; permissions set to 0600');
    };
    const where = auditKeyLocation(dataDir, settings);
    const k = this.o.db.kysely;
    const keyed = (await sql<{ seq: number; key_id: string }>`SELECT seq, key_id FROM audit_log WHERE key_id IS NOT NULL ORDER BY seq DESC LIMIT 1`.execute(k)).rows[0];
    const since = keyed ? (await sql<{ s: number }>`SELECT MIN(seq) AS s FROM audit_log WHERE key_id IS NOT NULL`.execute(k)).rows[0]!.s : null;
    let key = readAuditKey(dataDir, settings, onLoose(where.file ?? ''));
    if (!key) {
      if (keyed) {
        throw Errors.AUDIT_KEY(`the audit chain is keyed since seq ${since} (key id ${keyed.key_id}) but ${where.label} does not exist: restore it from a backup `
          + '(keng backup copies <dataDir>/audit-key), or point audit.keyFile / KENG_AUDIT_KEY at that key. A new key would leave the keyed entries unverifiable');
      }
      const r = createAuditKey(dataDir, settings, onLoose(where.file ?? ''));
      key = r.key;
      if (r.created) {
        logger.warn({ file: where.file, keyId: key.id },
          `generated the audit key in ${where.file} (mode 0600); back it up with the data directory, or keep it elsewhere (audit.keyFile): without it the audit log cannot be verified`);
      }
    }
    if (keyed && keyed.key_id !== key.id) {
      throw Errors.AUDIT_KEY(`the key from ${key.source} (id ${key.id}) is not the key the audit chain is keyed with (id ${keyed.key_id}, since seq ${since}); `
        + 'give Keng that key (restore the key file, or fix audit.keyFile / KENG_AUDIT_KEY)');
    }
    return key;
  }
}

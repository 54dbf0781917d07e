/**
 * The secrets every node of a cluster must share, in PostgreSQL (`cluster_secrets`), sealed with
 * AES-256-GCM (seal.ts) under a key derived from the audit key: the command key ring (src/rpc/command-keys),
 * the media and firmware link-signing keys. A copy of the database (pg_dump) alone holds no usable key.
 *
 * - `read`: the row, opened; a row this node cannot open is an error naming the cause
 *   (KENG_ERR_SECRETS_KEY, counted): the caller refuses to start, and never makes a new secret in
 *   its place (the speakers would not trust it, and every other node would still use the old one).
 * - `createIfAbsent`: insert-if-absent, then read back: of nodes starting at once, every one ends
 *   with the first insert's value.
 * - `update`: read, change and write one row under its row lock (FOR UPDATE), so that changes made
 *   on two nodes at once apply one after the other; `version` counts them (other nodes poll it).
 */
import { sql } from 'kysely';
import type { Registry } from 'prom-client';
import type { Clock } from '../../core/clock.js';
import { Errors } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { counterOn } from '../../core/metrics.js';
import type { Db } from '../sql/index.js';
import { deriveKek, seal, unseal, type SecretsKek } from './seal.js';

export interface SharedSecret { version: number; data: Buffer }

export interface SharedSecretsOptions {
  /** PostgreSQL (cluster mode). */
  db: Db<unknown>;
  /** The root secret: the audit key's bytes, known once the audit chain has started; null: not (yet) known. */
  rootSecret: () => Buffer | null;
  /** Where the root secret comes from, for messages (e.g. "KENG_AUDIT_KEY (audit.key)"). */
  rootLabel?: () => string;
  clock: Clock;
  logger: Logger;
  metrics?: Registry;
}

interface Row { version: number; key_id: string; nonce: Buffer; sealed: Buffer }

export class SharedSecrets {
  private kek: SecretsKek | null = null;
  private readonly failures;

  constructor(private readonly o: SharedSecretsOptions) {
    this.failures = counterOn(o.metrics, 'keng_cluster_secret_decrypt_failures_total',
      'Shared secrets in PostgreSQL this node could not decrypt (another KENG_AUDIT_KEY than the nodes that wrote them, or an altered row)', ['secret']);
  }

  get db(): Db<unknown> { return this.o.db; }

  /** The row's version (changes counted), or null when there is no row. One small SELECT: what nodes poll. */
  async version(name: string): Promise<number | null> {
    const r = await sql<{ version: number }>`SELECT version FROM cluster_secrets WHERE name = ${name}`.execute(this.o.db.kysely);
    return r.rows[0]?.version ?? null;
  }

  /** The secret, or null when there is no row. Throws KENG_ERR_SECRETS_KEY when the row does not decrypt. */
  async read(name: string, what = name): Promise<SharedSecret | null> {
    const r = await sql<Row>`SELECT version, key_id, nonce, sealed FROM cluster_secrets WHERE name = ${name}`.execute(this.o.db.kysely);
    const row = r.rows[0];
    return row ? this.open(name, what, row) : null;
  }

  /** Stores `data` unless the row exists, then reads the row back: `created` says whose value it holds. */
  async createIfAbsent(name: string, data: Buffer, what = name): Promise<SharedSecret & { created: boolean }> {
    const kek = this.key();
    const { nonce, sealed } = seal(kek, name, data);
    const ins = await sql`INSERT INTO cluster_secrets (name, version, key_id, nonce, sealed, updated_at)
      VALUES (${name}, 1, ${kek.id}, ${nonce}, ${sealed}, ${this.o.clock.now()}) ON CONFLICT (name) DO NOTHING`.execute(this.o.db.kysely);
    const created = Number(ins.numAffectedRows ?? 0n) === 1;
    const back = await this.read(name, what);
    if (!back) throw new Error(`cluster_secrets row "${name}" vanished right after its insert`);
    return { ...back, created };
  }

  /**
   * Changes the row under its lock: `change` gets the current value and returns the new one (or
   * throws: nothing is written). Only database calls are awaited inside the transaction.
   */
  async update(name: string, change: (current: Buffer) => Buffer, what = name): Promise<SharedSecret> {
    const kek = this.key();
    return this.o.db.write(async (trx) => {
      const lock = this.o.db.dialect === 'postgres' ? sql` FOR UPDATE` : sql``;
      const row = (await sql<Row>`SELECT version, key_id, nonce, sealed FROM cluster_secrets WHERE name = ${name}${lock}`.execute(trx)).rows[0];
      if (!row) throw new Error(`no cluster_secrets row "${name}" to change`);
      const current = this.open(name, what, row);
      const next = change(current.data);
      const { nonce, sealed } = seal(kek, name, next);
      const version = current.version + 1;
      await sql`UPDATE cluster_secrets SET version = ${version}, key_id = ${kek.id}, nonce = ${nonce}, sealed = ${sealed}, updated_at = ${this.o.clock.now()}
        WHERE name = ${name}`.execute(trx);
      return { version, data: next };
    });
  }

  private key(): SecretsKek {
    if (this.kek) return this.kek;
    const root = this.o.rootSecret();
    if (!root) throw Errors.SECRETS_KEY('the audit key is not loaded yet (the shared secrets are encrypted with a key derived from it)');
    this.kek = deriveKek(root);
    return this.kek;
  }

  private open(name: string, what: string, row: Row): SharedSecret {
    const kek = this.key();
    const data = unseal(kek, name, Buffer.from(row.nonce), Buffer.from(row.sealed));
    if (data) return { version: Number(row.version), data };
    this.failures.inc({ secret: name });
    const source = this.o.rootLabel?.() ?? 'the audit key';
    const why = row.key_id !== kek.id
      ? `it was encrypted with a key derived from another audit key (key-encryption key id ${row.key_id}; this node's, from ${source}: ${kek.id}): give this node the same KENG_AUDIT_KEY as the other nodes`
      : `it does not decrypt although the key id matches (${kek.id}): the row was damaged or altered; restore it from a backup of the database`;
    const err = Errors.SECRETS_KEY(`cannot decrypt the ${what} stored in PostgreSQL (cluster_secrets "${name}"): ${why}. This node does not make a new one, which the speakers and the other nodes would not know`);
    this.o.logger.error({ secret: name, rowKeyId: row.key_id, keyId: kek.id }, err.message);
    throw err;
  }
}

export interface AdoptOptions {
  name: string;
  /** For messages: "command key ring", "media link-signing key". */
  what: string;
  /** The node's own file (what it used in embedded mode), for messages. */
  file: string;
  /** Its content, null when it has none. */
  local: Buffer | null;
  /** A new secret, when neither the database nor the file has one. */
  make: () => Buffer;
  /** Whether the file holds the same secret as the database (default: same bytes). */
  same?: (a: Buffer, b: Buffer) => boolean;
}

/**
 * At a node's start in cluster mode: the database's secret wins. When the database has none yet, the
 * node's own file is imported (a node switching from embedded to cluster mode keeps the trust its
 * speakers have in it), else a new one is made; of nodes starting at once, the first insert wins.
 * A file that differs from the database's secret is named in a warning: it is no longer used.
 */
export async function adoptSharedSecret(store: SharedSecrets, a: AdoptOptions, logger: Logger): Promise<SharedSecret> {
  const same = a.same ?? ((x: Buffer, y: Buffer) => x.equals(y));
  const existing = await store.read(a.name, a.what);
  const got = existing ? { ...existing, created: false } : await store.createIfAbsent(a.name, a.local ?? a.make(), a.what);
  if (got.created) {
    if (a.local) logger.info({ secret: a.name, file: a.file }, `imported the ${a.what} of ${a.file} into the cluster database (encrypted); every node now uses it`);
    else logger.info({ secret: a.name }, `generated the ${a.what} in the cluster database (encrypted); every node uses it`);
  } else if (a.local && !same(a.local, got.data)) {
    logger.warn({ secret: a.name, file: a.file },
      `${a.file} holds another ${a.what} than the cluster database; the database's wins and the file is not used in cluster mode (docs/cluster.md "Shared secrets")`);
  }
  return { version: got.version, data: got.data };
}

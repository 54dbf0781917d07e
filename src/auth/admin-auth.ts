/**
 * The admin token (README "Settings", KENG_ADMIN_TOKEN): a bearer
 * token with full admin rights, for bootstrap and automation. When none is
 * configured, <dataDir>/admin-token is used; on first start one is generated
 * there (mode 0600) and where it was written is logged once. Only a SHA-256
 * of the token stays in memory.
 *
 * Cluster mode without KENG_ADMIN_TOKEN: one token for every node (a request
 * reaches whichever node the balancer picks), sealed in PostgreSQL like the
 * other shared secrets (src/storage/secrets): the first node's file is
 * imported, or a token generated; a node without a file gets the cluster's
 * written to its own <dataDir>/admin-token, so it can be read on any node.
 * A node whose file holds another token uses the cluster's (warned).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { randomBase62 } from '../core/random.js';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import { adoptSharedSecret, type SharedSecrets } from '../storage/secrets/index.js';
import { ALL_AREAS, type Authenticator, type Principal } from './types.js';

export const ADMIN_TOKEN_FILE = 'admin-token';
/** Cluster mode: the generated admin token's row in `cluster_secrets`. */
export const ADMIN_TOKEN_SECRET = 'admin-token';
/** Shortest token accepted from the token file (the config schema enforces the same for KENG_ADMIN_TOKEN). */
const MIN_TOKEN_LENGTH = 16;

export interface AdminAuthOptions {
  dataDir: string;
  adminToken?: string;
  logger: Logger;
  /** Cluster mode: without adminToken, the token is the cluster's (see the header). */
  shared?: SharedSecrets;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

export class AdminAuth implements Component, Authenticator {
  readonly name = 'auth';
  private digest: Buffer | null = null;
  private source: 'config' | 'file' | 'generated' | null = null;
  private readonly dataDir: string;
  private readonly logger: Logger;
  private readonly shared: SharedSecrets | undefined;
  /** The configured token is hashed at once; the plain text is not kept. */
  private readonly configuredDigest: Buffer | null;

  constructor(opts: AdminAuthOptions) {
    this.dataDir = opts.dataDir;
    this.logger = opts.logger;
    this.shared = opts.shared;
    const configured = opts.adminToken?.trim();
    this.configuredDigest = configured ? sha256(configured) : null;
  }

  /** Where the token came from (after start). */
  get tokenSource(): 'config' | 'file' | 'generated' | null { return this.source; }

  /** Path of the token file under the data directory. */
  get tokenFile(): string { return path.join(this.dataDir, ADMIN_TOKEN_FILE); }

  async start(): Promise<void> {
    if (this.configuredDigest) {
      this.digest = this.configuredDigest;
      this.source = 'config';
      return;
    }
    const file = this.tokenFile;
    const existing = this.readTokenFile(file);
    if (this.shared) { await this.startShared(this.shared, file, existing); return; }
    if (existing) {
      this.digest = sha256(existing);
      this.source = 'file';
      return;
    }
    const token = randomBase62(43); // core/random.ts: ~256 bits, never starts with '-' (read as an option by CLI clients)
    mkdirSync(this.dataDir, { recursive: true });
    writeFileSync(file, `${token}\n`, { mode: 0o600 });
    chmodSync(file, 0o600); // the file may have existed (empty) with other permissions
    this.digest = sha256(token);
    this.source = 'generated';
    this.logger.warn({ file },
      `generated an admin token and wrote it to ${file} (mode 0600); use it as "Authorization: Bearer <token>" or set KENG_ADMIN_TOKEN`);
  }

  async stop(): Promise<void> {
    this.digest = null;
  }

  private async startShared(shared: SharedSecrets, file: string, existing: string | null): Promise<void> {
    const got = await adoptSharedSecret(shared, {
      name: ADMIN_TOKEN_SECRET, what: 'admin token', file, local: existing ? Buffer.from(existing, 'utf8') : null,
      make: () => Buffer.from(randomBase62(43), 'utf8'),
    }, this.logger);
    const token = got.data.toString('utf8');
    this.digest = sha256(token);
    this.source = existing ? 'file' : 'generated';
    if (existing) return;
    mkdirSync(this.dataDir, { recursive: true });
    writeFileSync(file, `${token}\n`, { mode: 0o600 });
    chmodSync(file, 0o600);
    this.logger.warn({ file },
      `wrote the cluster's admin token to ${file} (mode 0600); use it as "Authorization: Bearer <token>" on any node, or set KENG_ADMIN_TOKEN on every node`);
  }

  /** Constant-time check of a candidate admin token. False before start(). */
  verify(token: string): boolean {
    if (!this.digest || typeof token !== 'string' || token.length === 0) return false;
    return timingSafeEqual(sha256(token), this.digest);
  }

  authenticate(bearer: string): Principal | null {
    return this.verify(bearer) ? { kind: 'admin', id: 'admin', role: 'admin', areas: [ALL_AREAS] } : null;
  }

  private readTokenFile(file: string): string | null {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new Error(`cannot read the admin token file ${file}: ${(err as Error).message}`, { cause: err });
    }
    const token = text.trim();
    if (!token) return null;
    if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
      throw new Error(`the admin token file ${file} must hold one token of at least ${MIN_TOKEN_LENGTH} characters`);
    }
    try {
      const mode = statSync(file).mode & 0o777;
      if (mode & 0o077) {
        chmodSync(file, 0o600);
        this.logger.warn({ file, mode: mode.toString(8) }, 'admin token file was readable by others; permissions set to 0600');
      }
    } catch { /* best effort (e.g. a read-only mount) */ }
    return token;
  }
}

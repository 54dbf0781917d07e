/**
 * The installation's command keys (firmware-protocols/device-protocol.md §11.6): Ed25519 keys that
 * sign `broadcast.play` and `broadcast.stop`. One key is active and signs every new send; keys
 * rotated out stay listed (and so still verify at the speakers) until retired, so that a rotation
 * does not strand commands signed a moment before it, nor speakers that have not fetched the new key yet.
 *
 * Embedded mode: kept in <dataDir>/command-keys.json (file.ts, mode 0600); the first start generates a key.
 *
 * Cluster mode (`shared`): one ring for every node, sealed in PostgreSQL (src/storage/secrets): a
 * speaker that fetched the keys from one node obeys commands signed by any. At start the database's
 * ring wins; when it has none, this node's file is imported (its speakers keep trusting it), else a
 * key is generated (nodes starting at once end with the first insert's ring). A rotation or
 * retirement is one locked update of that row; every node polls its version (COMMAND_KEYS_POLL_MS)
 * and reloads when it moved, so the others sign with the new key and list it within about a second.
 *
 * Either way a rotation or retirement is written before it takes effect in memory.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { systemClock, type Clock } from '../../core/clock.js';
import { Errors, isKengError } from '../../core/errors.js';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import { COMMAND_KEY_ALG } from '../../core/protocol.js';
import { adoptSharedSecret, type SharedSecrets } from '../../storage/secrets/index.js';
import type { CommandSignature, CommandSigner, CommandToSign } from '../types.js';
import { COMMAND_KEYS_FILE, parseRing, readRing, writeRing, type StoredKey, type StoredRing } from './file.js';
import { keyFromSeed, newSeed, signCommand, signCommandAsync, type SigningKey } from './keys.js';

/** Cluster mode: how often each node looks at the shared ring's version (ms). */
export const COMMAND_KEYS_POLL_MS = 1_000;
/** The ring's row in `cluster_secrets`. */
export const COMMAND_KEYS_SECRET = 'command-keys';
const WHAT = 'command key ring';

/** A listed key, as `GET /api/v1/command-keys` shows it (`kid`, `alg`, `publicKey` are the protocol's). */
export interface CommandKeyInfo {
  kid: string;
  alg: typeof COMMAND_KEY_ALG;
  /** base64url of the 32 raw bytes of the Ed25519 public key. */
  publicKey: string;
  /** Signs new commands (exactly one key is active). */
  active: boolean;
  createdAt: number;
}

export interface CommandKeysOptions {
  dataDir: string;
  logger: Logger;
  clock?: Clock;
  /** Cluster mode: the ring lives sealed in PostgreSQL, shared by every node (see the header). */
  shared?: SharedSecrets;
  /** Cluster mode: period of the version check (default COMMAND_KEYS_POLL_MS). */
  pollMs?: number;
}

interface Loaded { stored: StoredRing; keys: Map<string, SigningKey> }

export class CommandKeys implements Component, CommandSigner {
  readonly name = 'command-keys';
  private readonly o: CommandKeysOptions;
  private ring: Loaded | null = null;
  /** Cluster mode: the version of the shared ring held in memory, and the poll. */
  private version = -1;
  /** Cluster mode: bumped around each change made here, so a poll that read before it is not applied over it. */
  private changes = 0;
  private pollTimer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private pollFailing = false;
  /** Cluster mode: a version of the row this node could not decrypt (or parse). */
  private undecryptable: number | null = null;

  constructor(opts: CommandKeysOptions) {
    this.o = opts;
  }

  get file(): string { return path.join(this.o.dataDir, COMMAND_KEYS_FILE); }

  async start(): Promise<void> {
    if (this.ring) return;
    if (this.o.shared) { await this.startShared(this.o.shared); return; }
    const existing = readRing(this.file, this.o.logger);
    if (existing) {
      this.ring = load(existing, this.file);
      this.o.logger.debug({ active: existing.active, keys: existing.keys.length }, 'command keys loaded');
      return;
    }
    mkdirSync(this.o.dataDir, { recursive: true });
    const stored = this.newRing();
    writeRing(this.file, stored);
    this.ring = load(stored, this.file);
    this.o.logger.info({ kid: stored.active, file: this.file }, 'generated the command signing key (mode 0600); speakers that verify commands need its public key (GET /api/v1/command-keys)');
  }

  async stop(): Promise<void> {
    clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    await this.polling;
    this.ring = null;
  }

  /** Cluster mode: the database's ring (or this node's file imported, or a new one), then the version poll. */
  private async startShared(shared: SharedSecrets): Promise<void> {
    let local: StoredRing | null = null;
    try {
      local = readRing(this.file, this.o.logger);
    } catch (err) {
      // Only an import needs the file: unusable, it must not decide anything (a new ring would strand its speakers).
      if (!(await shared.read(COMMAND_KEYS_SECRET, WHAT))) throw err;
      this.o.logger.warn({ err, file: this.file }, 'the command key file is not usable; not used in cluster mode (the cluster database has the ring)');
    }
    const got = await adoptSharedSecret(shared, {
      name: COMMAND_KEYS_SECRET, what: WHAT, file: this.file, local: local ? encode(local) : null,
      make: () => encode(this.newRing()), same: (a, b) => sameRing(decode(a), decode(b)),
    }, this.o.logger);
    this.ring = load(decode(got.data), `cluster_secrets "${COMMAND_KEYS_SECRET}"`);
    this.version = got.version;
    this.o.logger.debug({ active: this.ring.stored.active, keys: this.ring.stored.keys.length, version: got.version }, 'command keys loaded from the cluster database');
    this.pollTimer = setInterval(() => { void this.poll(); }, this.o.pollMs ?? COMMAND_KEYS_POLL_MS);
    this.pollTimer.unref();
  }

  /**
   * Cluster mode: one SELECT of the ring's version; the ring read again when another node changed it.
   * Failing (PostgreSQL away, a row this node cannot decrypt): the ring in memory stays, logged once.
   */
  poll(): Promise<void> {
    const shared = this.o.shared;
    if (!shared) return Promise.resolve();
    this.polling ??= (async () => {
      const changes = this.changes;
      let v: number | null = null;
      try {
        v = await shared.version(COMMAND_KEYS_SECRET);
        // A version that did not decrypt is not read again every second: it was logged and counted once.
        if (v === this.version || v === this.undecryptable) return;
        const got = await shared.read(COMMAND_KEYS_SECRET, WHAT);
        // A rotation made here meanwhile is newer than what was read: the next poll compares again.
        if (!got || changes !== this.changes || !this.ring) return;
        const before = this.ring.stored.active;
        this.ring = load(decode(got.data), `cluster_secrets "${COMMAND_KEYS_SECRET}"`);
        this.version = got.version;
        this.undecryptable = null;
        if (this.pollFailing) this.o.logger.info('command keys: reading the cluster database works again');
        this.pollFailing = false;
        this.o.logger.info({ active: this.ring.stored.active, previous: before, keys: this.ring.stored.keys.length, version: got.version },
          'command keys changed on another node; reloaded');
      } catch (err) {
        if (isKengError(err) && err.code === 'KENG_ERR_SECRETS_KEY') {
          this.undecryptable = v;
          this.o.logger.error({ err, version: v }, 'command keys: the ring changed in the cluster database cannot be used on this node; keeping the keys in memory');
          return;
        }
        if (!this.pollFailing) this.o.logger.warn({ err }, 'command keys: reading the cluster database failed; keeping the keys in memory and retrying');
        this.pollFailing = true;
      } finally {
        this.polling = undefined;
      }
    })();
    return this.polling;
  }

  /** kid of the key that signs new commands. */
  get activeKid(): string { return this.require().stored.active; }

  /** The active key first, then the rotated-out keys not yet retired, newest first. */
  list(): CommandKeyInfo[] {
    const { stored } = this.require();
    return stored.keys.map((k) => info(k, stored.active));
  }

  /** Signs with the active key (device protocol §11.6). KENG_ERR_NOT_READY before start(). */
  sign(cmd: CommandToSign): CommandSignature {
    const r = this.require();
    return signCommand(r.keys.get(r.stored.active)!, cmd);
  }

  /** sign() on libuv's thread pool, with the key active now. Rejects with KENG_ERR_NOT_READY before start(). */
  async signAsync(cmd: CommandToSign): Promise<CommandSignature> {
    const r = this.require();
    return signCommandAsync(r.keys.get(r.stored.active)!, cmd);
  }

  /** A new key becomes active; the previous ones stay listed (still valid at the speakers) until retired. */
  async rotate(): Promise<CommandKeyInfo> {
    this.require();
    const key = this.newKey();
    const { previous } = await this.change((stored) => ({ format: 1, active: key.kid, keys: [key, ...stored.keys] }));
    this.o.logger.info({ kid: key.kid, previous: previous.active }, 'command key rotated');
    return info(key, key.kid);
  }

  /**
   * Removes a rotated-out key: it is no longer listed, speakers that refresh their list stop
   * accepting it, and its private part is deleted. The active key cannot be retired (rotate first).
   */
  async retire(kid: string): Promise<CommandKeyInfo> {
    this.require();
    let retired: StoredKey | undefined;
    const { previous } = await this.change((stored) => {
      retired = stored.keys.find((k) => k.kid === kid);
      if (!retired) throw Errors.NOT_FOUND(`Command key "${kid}"`);
      if (kid === stored.active) throw Errors.COMMAND_KEY_ACTIVE(kid);
      return { ...stored, keys: stored.keys.filter((k) => k.kid !== kid) };
    });
    this.o.logger.info({ kid }, 'command key retired');
    return info(retired!, previous.active);
  }

  /**
   * Writes the ring `next(current)`, then uses it. Cluster mode: `current` is the database's ring
   * read under its row lock (another node's rotation included), so concurrent changes never lose one.
   */
  private async change(next: (current: StoredRing) => StoredRing): Promise<{ previous: StoredRing; stored: StoredRing }> {
    const shared = this.o.shared;
    if (!shared) {
      const previous = this.require().stored;
      const stored = next(previous);
      writeRing(this.file, stored);
      this.ring = load(stored, this.file);
      return { previous, stored };
    }
    let previous: StoredRing | undefined;
    let stored: StoredRing | undefined;
    this.changes++;
    const got = await shared.update(COMMAND_KEYS_SECRET, (data) => {
      previous = decode(data);
      stored = next(previous);
      return encode(stored);
    }, WHAT);
    this.ring = load(stored!, `cluster_secrets "${COMMAND_KEYS_SECRET}"`);
    this.version = got.version;
    this.changes++;
    return { previous: previous!, stored: stored! };
  }

  private newRing(): StoredRing {
    const key = this.newKey();
    return { format: 1, active: key.kid, keys: [key] };
  }

  private newKey(): StoredKey {
    const seed = newSeed();
    const k = keyFromSeed(seed);
    return { kid: k.kid, alg: COMMAND_KEY_ALG, publicKey: k.publicKey, seed, createdAt: (this.o.clock ?? systemClock).now() };
  }

  private require(): Loaded {
    if (!this.ring) throw Errors.NOT_READY('command keys are not loaded');
    return this.ring;
  }
}

function info(k: StoredKey, active: string): CommandKeyInfo {
  return { kid: k.kid, alg: k.alg, publicKey: k.publicKey, active: k.kid === active, createdAt: k.createdAt };
}

/** The ring as the database holds it (sealed): its JSON. */
function encode(ring: StoredRing): Buffer {
  return Buffer.from(JSON.stringify(ring), 'utf8');
}

function decode(data: Buffer): StoredRing {
  const ring = parseRing(data.toString('utf8'));
  if (!ring) throw Errors.SECRETS_KEY(`the ${WHAT} in cluster_secrets "${COMMAND_KEYS_SECRET}" decrypts but is not a valid key ring; restore the row from a backup of the database`);
  return ring;
}

/** The same keys, the same one active. */
function sameRing(a: StoredRing, b: StoredRing): boolean {
  const ids = (r: StoredRing): string => r.keys.map((k) => `${k.kid}:${k.seed}`).sort().join(',');
  return a.active === b.active && ids(a) === ids(b);
}

/** Builds the signing keys, checking that each stored public key and kid belong to its seed. */
function load(stored: StoredRing, file: string): Loaded {
  const keys = new Map<string, SigningKey>();
  for (const k of stored.keys) {
    let key: SigningKey;
    try { key = keyFromSeed(k.seed); } catch (err) { throw new Error(`${file}: key ${k.kid}: ${(err as Error).message}`, { cause: err }); }
    if (key.kid !== k.kid || key.publicKey !== k.publicKey) throw new Error(`${file}: key ${k.kid} does not match its private part`);
    keys.set(k.kid, key);
  }
  return { stored, keys };
}

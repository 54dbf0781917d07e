/**
 * The installation's command keys (firmware-protocols/device-protocol.md §11.6): Ed25519 keys that
 * sign `broadcast.play` and `broadcast.stop`. One key is active and signs every new send; keys
 * rotated out stay listed (and so still verify at the speakers) until retired, so that a rotation
 * does not strand commands signed a moment before it, nor speakers that have not fetched the new key yet.
 *
 * The first start generates a key. Kept in <dataDir>/command-keys.json (file.ts, mode 0600).
 * Rotation and retirement write the whole ring before the change takes effect in memory.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { systemClock, type Clock } from '../../core/clock.js';
import { Errors } from '../../core/errors.js';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import { COMMAND_KEY_ALG } from '../../core/protocol.js';
import type { CommandSignature, CommandSigner, CommandToSign } from '../types.js';
import { COMMAND_KEYS_FILE, readRing, writeRing, type StoredKey, type StoredRing } from './file.js';
import { keyFromSeed, newSeed, signCommand, signCommandAsync, type SigningKey } from './keys.js';

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
}

interface Loaded { stored: StoredRing; keys: Map<string, SigningKey> }

export class CommandKeys implements Component, CommandSigner {
  readonly name = 'command-keys';
  private readonly o: CommandKeysOptions;
  private ring: Loaded | null = null;

  constructor(opts: CommandKeysOptions) {
    this.o = opts;
  }

  get file(): string { return path.join(this.o.dataDir, COMMAND_KEYS_FILE); }

  async start(): Promise<void> {
    if (this.ring) return;
    const existing = readRing(this.file, this.o.logger);
    if (existing) {
      this.ring = load(existing, this.file);
      this.o.logger.debug({ active: existing.active, keys: existing.keys.length }, 'command keys loaded');
      return;
    }
    mkdirSync(this.o.dataDir, { recursive: true });
    const key = this.newKey();
    const stored: StoredRing = { format: 1, active: key.kid, keys: [key] };
    writeRing(this.file, stored);
    this.ring = load(stored, this.file);
    this.o.logger.info({ kid: key.kid, file: this.file }, 'generated the command signing key (mode 0600); speakers that verify commands need its public key (GET /api/v1/command-keys)');
  }

  async stop(): Promise<void> {
    this.ring = null;
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
  rotate(): CommandKeyInfo {
    const { stored } = this.require();
    const key = this.newKey();
    const next: StoredRing = { format: 1, active: key.kid, keys: [key, ...stored.keys] };
    writeRing(this.file, next);
    this.ring = load(next, this.file);
    this.o.logger.info({ kid: key.kid, previous: stored.active }, 'command key rotated');
    return info(key, key.kid);
  }

  /**
   * Removes a rotated-out key: it is no longer listed, speakers that refresh their list stop
   * accepting it, and its private part is deleted. The active key cannot be retired (rotate first).
   */
  retire(kid: string): CommandKeyInfo {
    const { stored } = this.require();
    const key = stored.keys.find((k) => k.kid === kid);
    if (!key) throw Errors.NOT_FOUND(`Command key "${kid}"`);
    if (kid === stored.active) throw Errors.COMMAND_KEY_ACTIVE(kid);
    const next: StoredRing = { ...stored, keys: stored.keys.filter((k) => k.kid !== kid) };
    writeRing(this.file, next);
    this.ring = load(next, this.file);
    this.o.logger.info({ kid }, 'command key retired');
    return info(key, stored.active);
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

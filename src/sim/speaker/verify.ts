/**
 * Signed commands checked the way a loudspeaker does it (firmware-protocols/device-protocol.md
 * §11.6, version 1.1). Written from the protocol text with node:crypto alone, sharing no code with
 * the controller's signer (only the protocol's words, from core/protocol.ts), so that the simulator
 * checks the contract rather than Keng's own reading of it.
 *
 * A speaker that verifies acts only on what `signed` says, and refuses (`rejected` + a reason):
 * a signature that does not verify with a listed key (`bad_signature`, or `unknown_key` for a kid
 * it does not know), a `deviceId` that is not its own (`wrong_device`), a `requestId` that is not
 * the R of the topic the command came on (`wrong_request_id`), an `expiresAt` that has passed
 * (`expired`), a `requestId` it has already executed (`replayed`); with `requireSigned`, also an
 * unsigned `broadcast.play` / `broadcast.stop` (`unsigned`).
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { COMMAND_KEY_ALG, SIGNED_METHODS, type SignedCommandRefusal } from '../../core/protocol.js';

/** One entry of `GET /api/v1/command-keys`. */
export interface CommandKey { kid: string; alg: string; publicKey: string }

export interface CommandVerifierOptions {
  deviceId: string;
  keys: readonly CommandKey[];
  /** Refuse `broadcast.play` and `broadcast.stop` that carry no signature. Default false. */
  requireSigned?: boolean;
  /** Executed request ids remembered against replays (besides those whose expiresAt passed). Default 1024. */
  remember?: number;
}

/** What to act on: from `signed` when the command was signed, from the payload otherwise. */
export interface VerifiedCommand { ok: true; signed: boolean; method: unknown; params: unknown; expiresAt: unknown }
export type VerifyResult = VerifiedCommand | { ok: false; detail: string };

const SIGNED: ReadonlySet<string> = new Set(SIGNED_METHODS);
/** DER header of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it. */
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const B64URL = /^[A-Za-z0-9_-]+$/;

export class CommandVerifier {
  private keys = new Map<string, KeyObject>();
  /** requestId → expiresAt of the signed commands carried out. */
  private readonly executed = new Map<string, number>();

  constructor(private readonly o: CommandVerifierOptions) {
    this.setKeys(o.keys);
  }

  /** Replaces the accepted keys (after the installation rotated its key). Ignores keys that are not Ed25519. */
  setKeys(keys: readonly CommandKey[]): void {
    const m = new Map<string, KeyObject>();
    for (const k of keys) {
      const raw = k.alg === COMMAND_KEY_ALG && B64URL.test(k.publicKey) ? Buffer.from(k.publicKey, 'base64url') : Buffer.alloc(0);
      if (raw.length === 32) m.set(k.kid, createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' }));
    }
    this.keys = m;
  }

  /** Checks a request received on `.../rpc/request/<topicRequestId>`. */
  check(topicRequestId: string, req: Record<string, unknown>, now: number): VerifyResult {
    const { signed, sig, kid } = req;
    if (signed === undefined && sig === undefined && kid === undefined) {
      if (this.o.requireSigned && typeof req.method === 'string' && SIGNED.has(req.method)) return refuse('unsigned');
      return { ok: true, signed: false, method: req.method, params: req.params, expiresAt: req.expiresAt };
    }
    if (typeof signed !== 'string' || typeof sig !== 'string' || typeof kid !== 'string' || !B64URL.test(sig)) return refuse('bad_signature');
    const key = this.keys.get(kid);
    if (!key) return refuse('unknown_key');
    const s = Buffer.from(sig, 'base64url');
    // The signature is over the UTF-8 bytes of `signed` exactly as received: never re-serialise it.
    if (s.length !== 64 || !verify(null, Buffer.from(signed, 'utf8'), key, s)) return refuse('bad_signature');
    let cmd: Record<string, unknown>;
    try {
      const v: unknown = JSON.parse(signed);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, detail: 'bad params: signed is not an object' };
      cmd = v as Record<string, unknown>;
    } catch {
      return { ok: false, detail: 'bad params: signed is not JSON' };
    }
    if (cmd.deviceId !== this.o.deviceId) return refuse('wrong_device');
    if (typeof cmd.requestId !== 'string' || cmd.requestId !== topicRequestId) return refuse('wrong_request_id');
    if (typeof cmd.expiresAt !== 'number' || !Number.isFinite(cmd.expiresAt) || cmd.expiresAt < now) return refuse('expired');
    if (this.executed.has(topicRequestId)) return refuse('replayed');
    return { ok: true, signed: true, method: cmd.method, params: cmd.params, expiresAt: cmd.expiresAt };
  }

  /**
   * Remembers a signed command that was carried out, until its expiresAt (after that the expiry
   * check refuses it anyway). Bounded: past `remember` ids, the oldest is forgotten.
   */
  markExecuted(requestId: string, expiresAt: number, now: number): void {
    this.executed.set(requestId, expiresAt);
    const max = this.o.remember ?? 1024;
    if (this.executed.size <= max) return;
    for (const [id, exp] of this.executed) if (exp < now) this.executed.delete(id);
    while (this.executed.size > max) this.executed.delete(this.executed.keys().next().value!);
  }
}

function refuse(detail: SignedCommandRefusal): { ok: false; detail: string } {
  return { ok: false, detail };
}

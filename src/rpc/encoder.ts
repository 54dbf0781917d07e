/**
 * A command's payload on the wire (device protocol "Commands (RPC)", §11.6):
 * `{method, params, expiresAt}` with the params of the method's send-time hook
 * (a signed media URL fresh at every send), plus `signed`, `sig` and `kid` for
 * a signed method. RpcService decides when and where; this decides what.
 *
 * Signed commands (device protocol §11.6, version 1.1): with a `signer`, every `broadcast.play` and
 * `broadcast.stop` also carries `signed`, `sig` and `kid`, computed at each publish (first send and
 * every re-send) because the device id and the topic's request id are inside `signed`, and its params
 * are exactly the params published (after the params hook).
 */
import { SIGNED_METHODS } from '../core/protocol.js';
import type { Logger } from '../core/logger.js';
import type { CommandSigner, ParamsHook, RpcRequest } from './types.js';

/** What goes into one request payload besides the params; `topicId` is the id in the topic (and in `signed`). */
export type Envelope = Pick<RpcRequest, 'deviceId' | 'method' | 'expiresAt'> & { topicId: string };

const SIGNED: ReadonlySet<string> = new Set(SIGNED_METHODS);

export interface CommandEncoderOptions {
  hooks: ReadonlyMap<string, ParamsHook>;
  signer?: CommandSigner;
  logger: Logger;
}

export class CommandEncoder {
  constructor(private readonly o: CommandEncoderOptions) {}

  /** Send-time params from the method's hook; null when the hook failed (logged). */
  sendParams(r: RpcRequest): Record<string, unknown> | null {
    try {
      const hook = this.o.hooks.get(r.method);
      return hook ? hook(r.params, r) : r.params;
    } catch (err) {
      this.o.logger.error({ err, requestId: r.id || undefined, deviceId: r.deviceId || undefined, method: r.method }, 'rpc params hook failed: request kept queued');
      return null;
    }
  }

  signs(method: string): boolean {
    return this.o.signer !== undefined && SIGNED.has(method);
  }

  /**
   * `{method, params, expiresAt}`, plus `signed`, `sig`, `kid` for a signed method (device protocol
   * §11.6: `signed` holds the device id, the topic's request id and exactly these params). Null when
   * signing failed (logged): the command stays queued rather than go out unsigned.
   */
  encode(e: Envelope, params: Record<string, unknown>): Buffer | null {
    const body: Record<string, unknown> = { method: e.method, params, expiresAt: e.expiresAt };
    if (this.signs(e.method)) {
      try {
        Object.assign(body, this.o.signer!.sign({ deviceId: e.deviceId, requestId: e.topicId, method: e.method, params, expiresAt: e.expiresAt }));
      } catch (err) {
        this.o.logger.error({ err, requestId: e.topicId, deviceId: e.deviceId, method: e.method }, 'rpc command signing failed: request kept queued');
        return null;
      }
    }
    return Buffer.from(JSON.stringify(body), 'utf8');
  }

  /**
   * encode() with the signature made on the thread pool (signer.signAsync); resolves to null when
   * signing failed (logged when `first()` says so: once per batch). Never rejects.
   */
  async encodeAsync(e: Envelope, params: Record<string, unknown>, first: () => boolean): Promise<Buffer | null> {
    try {
      const s = await this.o.signer!.signAsync!({ deviceId: e.deviceId, requestId: e.topicId, method: e.method, params, expiresAt: e.expiresAt });
      return Buffer.from(JSON.stringify({ method: e.method, params, expiresAt: e.expiresAt, signed: s.signed, sig: s.sig, kid: s.kid }), 'utf8');
    } catch (err) {
      if (first()) this.o.logger.error({ err, requestId: e.topicId, deviceId: e.deviceId, method: e.method }, 'rpc command signing failed: request kept for the next connect');
      return null;
    }
  }

}

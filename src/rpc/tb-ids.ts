/**
 * ThingsBoard integer request ids (device protocol §13.2). To a device whose connection logged in with
 * its access token, a command is published as `v1/devices/D/rpc/request/{n}` (the broker delivers it on
 * `v1/devices/me/...`) with an integer `n`: the Arduino/ESP32 SDK parses the id with atoi and answers on
 * `rpc/response/{n}`. `n` is stored in the command's row (`tb_id`, per device, only growing,
 * 1 … 2^31-1 then 1 again), so an answer maps back to the command also after a reconnect or a restart;
 * everything else (events, logs, the API) keeps Keng's own id `r_…`. A command first sent to a secret
 * session and re-sent to a token session gets its `n` then; either answer maps.
 *
 * Separate from RpcService because the allocation (per-device counters, the wrap, freeing an id an old
 * command still holds) is a rule of its own that the single send, the batch send and the re-send share;
 * the service only asks for the next id and the id to put in a topic.
 */
import type { BrokerPort } from '../broker/types.js';
import type { OpenCommands } from './open-commands.js';
import { MAX_TB_ID } from './store-sql.js';
import type { RpcRequest } from './types.js';

export class TbIds {
  /**
   * Last integer request id per device (rpc_tb_ids, loaded at start): this node is its only writer. Shared with
   * the cluster ownership (ownership.ts), which moves it past a previous session holder's ids on a claim.
   */
  readonly last = new Map<string, number>();

  constructor(
    /** `credentialOf` tells access-token sessions; without it every session is taken as id + secret. */
    private readonly broker: Partial<Pick<BrokerPort, 'credentialOf'>>,
    private readonly open: OpenCommands,
  ) {}

  /** Replaces what is held with the ids as recorded (at start). */
  load(rows: Iterable<readonly [string, number]>): void {
    this.last.clear();
    for (const [d, n] of rows) this.last.set(d, n);
  }

  /** A deleted device: its counter goes with it. */
  forget(deviceId: string): void {
    this.last.delete(deviceId);
  }

  /** The device's current connection logged in with its access token (ThingsBoard SDK: integer request ids). */
  isTokenSession(deviceId: string): boolean {
    return this.broker.credentialOf?.(deviceId) === 'token';
  }

  /** The id in the request topic: the integer id for an access-token session, else Keng's own id. */
  topicId(r: RpcRequest): string {
    return r.tbId !== null && this.isTokenSession(r.deviceId) ? String(r.tbId) : r.id;
  }

  /**
   * The next integer id of a device on an access-token session (undefined otherwise), 1 … 2^31-1
   * then 1 again. The caller stores it (insert / cas with tbId) in the window of the command's row;
   * if that window fails the id is skipped, which keeps ids growing.
   */
  next(deviceId: string): number | undefined {
    if (!this.isTokenSession(deviceId)) return undefined;
    const last = this.last.get(deviceId) ?? 0;
    const n = last >= MAX_TB_ID ? 1 : last + 1;
    this.last.set(deviceId, n);
    // After a wrap (2^31 commands) an old command may still hold n: the window's write frees it (store-sql.ts), memory too.
    const holder = this.open.byTbId(deviceId, n);
    if (holder && this.open.get(holder.id)) this.open.put({ ...holder, tbId: null });
    return n;
  }
}

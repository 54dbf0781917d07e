/** Types of the RPC service (firmware-protocols/device-protocol.md §11). */

export type RpcState = 'queued' | 'sent' | 'answered' | 'expired' | 'cancelled';

import type { RpcStatus } from '../core/protocol.js';

export type { RpcStatus };

export interface RpcRequest {
  id: string;
  deviceId: string;
  method: string;
  /** The params as stored (before any send-time params hook, e.g. signed media URLs). */
  params: Record<string, unknown>;
  expiresAt: number;
  state: RpcState;
  createdAt: number;
  sentAt: number | null;
  answeredAt: number | null;
  response: Record<string, unknown> | null;
  /**
   * The integer id this command was published with to an access-token session
   * (`v1/devices/me/rpc/request/{tbId}`, device protocol §13.2); null when it never was.
   */
  tbId: number | null;
}

export interface RpcSendOptions {
  /** Epoch ms; after this the device must not carry the command out (device protocol §11.3). */
  expiresAt: number;
  /**
   * sendMany: these publishes are urgent (an emergency alert's commands): device answers and events
   * wait until they are out (RpcServiceOptions.urgent, core/urgent.ts).
   */
  urgent?: boolean;
}

export interface RpcSendResult {
  requestId: string;
  /** 'sent' when it was published at once; 'queued' when the device is offline (or just connecting). */
  state: 'queued' | 'sent';
}

/** Why a device's response was refused. */
export type RpcRefusal = 'unknown_request' | 'wrong_device' | 'never_sent';

/** Typed events of RpcService, for the broadcast executor and others. */
export interface RpcEvents {
  /** Published to the device (first send or a re-send after reconnect). */
  sent: { request: RpcRequest; at: number; resend: boolean };
  /** The device answered a request it did get. `duplicate` = a repeated answer (QoS 1 at-least-once). */
  response: { request: RpcRequest; status: RpcStatus; detail?: string; payload: Record<string, unknown>; at: number; duplicate: boolean };
  /** expiresAt passed before the command was sent (queued) or answered (sent, after a grace period). */
  expired: { request: RpcRequest; at: number };
  /** A response that matches no request the device was sent. Counted and logged. */
  refused: { deviceId: string; requestId: string; reason: RpcRefusal; at: number };
  /**
   * Cluster mode: a queued command this node held was withdrawn by another node (found so on a hint, or when its own
   * move to `sent` missed): no longer held here, never published by this node.
   */
  withdrawn: { request: RpcRequest; at: number };
}

/**
 * Send-time parameter hook: turns stored params into the params published to
 * the device. Runs at every (re-)send, e.g. to put a fresh short-lived signed
 * media URL into `broadcast.play`. Must be synchronous and must not throw for
 * valid stored params (a throw keeps the command queued and is logged).
 * The result must not depend on the device or request id: sendMany() calls it
 * once for a whole batch (with a request whose id and deviceId are empty).
 */
export type ParamsHook = (params: Record<string, unknown>, request: RpcRequest) => Record<string, unknown>;

/**
 * What a signature covers (device protocol §11.6): the JSON inside `signed`. The device and request
 * ids are in it so that a signed command cannot be moved to another speaker or another topic.
 */
export interface CommandToSign {
  deviceId: string;
  requestId: string;
  method: string;
  /** Exactly the params published (after the params hook). */
  params: Record<string, unknown>;
  expiresAt: number;
}

/** The three keys a signed request adds to `{method, params, expiresAt}` (device protocol §11.6). */
export interface CommandSignature {
  /** The command as a JSON string: the bytes the signature is over. */
  signed: string;
  /** base64url of the Ed25519 signature of the UTF-8 bytes of `signed`. */
  sig: string;
  /** Id of the key that signed (listed at GET /api/v1/command-keys). */
  kid: string;
}

/** Signs commands at send time; throws when it cannot (the command then stays queued). */
export interface CommandSigner {
  sign(cmd: CommandToSign): CommandSignature;
  /**
   * The same off the main thread (libuv's thread pool), for a batch: 2,000 signatures are ~130 ms
   * of CPU that the event loop then does not spend. Optional; without it sign() is used.
   */
  signAsync?(cmd: CommandToSign): Promise<CommandSignature>;
}

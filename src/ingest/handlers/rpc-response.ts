/**
 * v1/devices/D/rpc/response/R (firmware-protocols/device-protocol.md §11):
 * `{"status": "accepted" | "rejected" | "ok" | "error", "detail"?: string, ...}`
 * → bus 'rpc.response' with the request id R.
 *
 * ThingsBoard compatibility: token devices "answer server-side RPC unchanged",
 * i.e. with whatever JSON their firmware returns. For them a JSON answer
 * without a valid `status` is taken as success and wrapped:
 * `{"status": "ok", "result": <their JSON>}`.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { fail, isPlainObject, parseJson, validateTree } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';
import { isRpcStatus } from '../../core/protocol.js';

export function handleRpcResponse(msg: InboundMessage, ctx: HandlerContext): HandleResult {
  const requestId = msg.requestId;
  if (!requestId) return fail('missing_request_id', 'rpc response without request id');
  const p = parseJson(msg.payload, OBJECT_MAX_DEPTH);
  if (!p.ok) return p;
  let payload: Record<string, unknown>;
  const v = p.value;
  if (isPlainObject(v) && isRpcStatus(v.status)) {
    if (v.detail !== undefined && typeof v.detail !== 'string') return fail('bad_rpc_response', '"detail" must be a string');
    payload = v;
  } else if (msg.identity.viaToken) {
    payload = { status: 'ok', result: v };
  } else {
    return fail('bad_rpc_response', '"status" must be one of accepted, rejected, ok, error');
  }
  const bad = validateTree(payload);
  if (bad) return bad;
  ctx.bus.emit('rpc.response', { deviceId: msg.identity.deviceId, requestId, payload, at: msg.receivedAt });
  return OK;
}

/**
 * v1/gateway/rpc `{"device": "Name", "id": 1, "data": {...}}` (ThingsBoard
 * gateway API; tb_gateway_mqtt.gw_send_rpc_reply): a sub-device's answer to
 * a server-side RPC its gateway got as `{"device", "data": {"id", "method",
 * "params"}}` (src/gateway/broker.ts). Becomes that device's `rpc.response`
 * for the Keng request id the integer stands for; an id this gateway was not
 * sent for that device is refused (unknown_rpc_id).
 *
 * ThingsBoard IoT Gateway sends `data` as an object, or as a string holding
 * JSON (its `dumps` of `{"success": ...}`); both are read. The answer is
 * mapped as a ThingsBoard device's answer is (device protocol §13): an object
 * with a Keng `status` is taken as it is; one with `error` (e.g. the
 * gateway's `{"error": "Request timeout", "code": 408}`) or `"success": false`
 * is an `error`; anything else is `{"status": "ok", "result": data}`.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { isRpcStatus } from '../../core/protocol.js';
import { fail, isPlainObject, parseJson, validateTree } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';
import { badName, validSubDeviceName } from './gateway-common.js';

function rpcId(v: unknown): number | null {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'string' && /^\d{1,10}$/.test(v)) return Number(v);
  return null;
}

function answer(data: unknown): Record<string, unknown> {
  let v = data;
  if (typeof v === 'string') { try { v = JSON.parse(v); } catch { /* a plain string answer */ } }
  if (isPlainObject(v)) {
    if (isRpcStatus(v.status) && (v.detail === undefined || typeof v.detail === 'string')) return v;
    if (v.error !== undefined || v.success === false) {
      return { status: 'error', detail: typeof v.error === 'string' ? v.error : 'the gateway reported a failure', result: v };
    }
  }
  return { status: 'ok', result: v ?? null };
}

export function handleGatewayRpc(msg: InboundMessage, ctx: HandlerContext): HandleResult {
  const p = parseJson(msg.payload, OBJECT_MAX_DEPTH + 1);
  if (!p.ok) return p;
  if (!isPlainObject(p.value)) return fail('not_object', 'payload must be a JSON object');
  const { device, id, data } = p.value;
  if (!validSubDeviceName(device)) return badName(device);
  const n = rpcId(id);
  if (n === null) return fail('bad_rpc_response', '"id" must be the integer id of the request');
  const hit = ctx.gateways.rpcAnswer(msg.identity.deviceId, device, n);
  if (hit === undefined) return fail('unknown_rpc_id', `no request ${n} was sent to this gateway for that device`);
  const payload = answer(data);
  const bad = validateTree(payload);
  if (bad) return bad;
  ctx.gateways.connected(msg.identity.deviceId, hit.deviceId, msg.receivedAt);
  ctx.bus.emit('rpc.response', { deviceId: hit.deviceId, requestId: hit.requestId, payload, at: msg.receivedAt });
  return OK;
}

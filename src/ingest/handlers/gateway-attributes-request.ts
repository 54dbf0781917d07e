/**
 * v1/gateway/attributes/request `{"id": 1, "device": "Name", "client": true,
 * "keys": ["a", "b"]}` (or `"key": "a"`; ThingsBoard gateway API,
 * tb_gateway_mqtt.gw_request_client_attributes / gw_request_shared_attributes),
 * answered on the gateway's v1/gateway/attributes/response as ThingsBoard does
 * (JsonConverter.getJsonObjectForGateway): `{"id", "device", "value": v}` when
 * one key is found, `{"id", "device", "values": {...}}` for several, neither
 * for none. `client: false` asks for shared attributes (none in Keng yet).
 * A refused name gets the answer for none.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { fail, isPlainObject, parseJson } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';
import { badName, subDevice, validSubDeviceName } from './gateway-common.js';

function keysOf(v: Record<string, unknown>): string[] | null {
  if (typeof v.key === 'string') return [v.key];
  if (Array.isArray(v.keys) && v.keys.every((k): k is string => typeof k === 'string')) return v.keys;
  if (typeof v.keys === 'string') return v.keys.split(',').map((k) => k.trim()).filter((k) => k.length > 0);
  return null;
}

export async function handleGatewayAttributesRequest(msg: InboundMessage, ctx: HandlerContext): Promise<HandleResult> {
  const p = parseJson(msg.payload, OBJECT_MAX_DEPTH);
  if (!p.ok) return p;
  if (!isPlainObject(p.value)) return fail('not_object', 'payload must be a JSON object');
  const { id, device } = p.value;
  if (!validSubDeviceName(device)) return badName(device);
  if (typeof id !== 'number' || !Number.isInteger(id)) return fail('bad_attributes_request', '"id" must be an integer');
  const keys = keysOf(p.value);
  if (keys === null) return fail('bad_attributes_request', '"keys" must be a list of strings (or "key" one string)');
  const identity = await subDevice(msg, ctx, device);
  const found: Record<string, unknown> = {};
  if (identity !== null) {
    const all = p.value.client === true
      ? ctx.registry.attributes(identity.deviceId)
      : ctx.sharedAttributes.sharedAttributes(identity.deviceId, keys);
    for (const k of keys) if (Object.hasOwn(all, k)) found[k] = all[k];
  }
  const body: Record<string, unknown> = { id, device };
  const names = Object.keys(found);
  if (names.length === 1) body.value = found[names[0]!];
  else if (names.length > 1) body.values = found;
  ctx.respond(msg, `v1/devices/${msg.identity.deviceId}/gateway/attributes/response`, body);
  return OK;
}

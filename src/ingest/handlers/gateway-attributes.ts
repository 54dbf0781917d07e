/**
 * v1/gateway/attributes `{"Name A": {"firmware": "1.2", ...}, "Name B": {...}}`
 * (ThingsBoard gateway API; tb_gateway_mqtt.gw_send_attributes): client
 * attributes of each sub-device, merged exactly like a device's own
 * `v1/devices/D/attributes` (handlers/attributes.ts). Each device's object is
 * checked with the same limits; one invalid part refuses the whole message.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { fail, isPlainObject, parseJson, quote, validateTree } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';
import { badName, subDevice, validSubDeviceName } from './gateway-common.js';

export async function handleGatewayAttributes(msg: InboundMessage, ctx: HandlerContext): Promise<HandleResult> {
  const p = parseJson(msg.payload, OBJECT_MAX_DEPTH + 1);
  if (!p.ok) return p;
  if (!isPlainObject(p.value)) return fail('not_object', 'payload must be a JSON object of device name → attributes');
  const parts: Array<[string, Record<string, unknown>]> = [];
  for (const name in p.value) {
    if (!validSubDeviceName(name)) return badName(name);
    const attrs = p.value[name];
    if (!isPlainObject(attrs)) return fail('not_object', `${quote(name.slice(0, 64))}: attributes must be a JSON object`);
    const bad = validateTree(attrs);
    if (bad) return { ...bad, detail: `${quote(name.slice(0, 64))}: ${bad.detail}` };
    parts.push([name, attrs]);
  }
  if (parts.length === 0) return fail('empty', 'no device in the message');
  for (const [name, attrs] of parts) {
    const identity = await subDevice(msg, ctx, name);
    if (identity !== null && Object.keys(attrs).length > 0) ctx.registry.mergeAttributes(identity.deviceId, attrs);
  }
  return OK;
}

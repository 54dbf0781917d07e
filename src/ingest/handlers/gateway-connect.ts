/**
 * v1/gateway/connect `{"device": "Name", "type": "default"}` (ThingsBoard
 * gateway API; tb_gateway_mqtt.gw_connect_device): the sub-device is online
 * from now on. A name the gateway has no device for is created (when the
 * gateway may create sub-devices; `type` becomes its model unless it is
 * ThingsBoard's "default") or refused and counted.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { fail, parseObject } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';
import { badName, subDevice, validSubDeviceName } from './gateway-common.js';

export async function handleGatewayConnect(msg: InboundMessage, ctx: HandlerContext): Promise<HandleResult> {
  const p = parseObject(msg.payload, OBJECT_MAX_DEPTH);
  if (!p.ok) return p;
  const { device, type } = p.value;
  if (!validSubDeviceName(device)) return badName(device);
  if (type !== undefined && typeof type !== 'string') return fail('bad_value', '"type" must be a string');
  await subDevice(msg, ctx, device, type);
  return OK;
}

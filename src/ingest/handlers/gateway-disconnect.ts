/**
 * v1/gateway/disconnect `{"device": "Name"}` (ThingsBoard gateway API;
 * tb_gateway_mqtt.gw_disconnect_device): the sub-device is offline until its
 * gateway connects it again or sends data for it. Only the gateway's own
 * sub-devices are affected; any other name changes nothing.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { parseObject } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';
import { badName, validSubDeviceName } from './gateway-common.js';

export function handleGatewayDisconnect(msg: InboundMessage, ctx: HandlerContext): HandleResult {
  const p = parseObject(msg.payload, OBJECT_MAX_DEPTH);
  if (!p.ok) return p;
  const { device } = p.value;
  if (!validSubDeviceName(device)) return badName(device);
  ctx.gateways.disconnected(msg.identity.deviceId, device, msg.receivedAt);
  return OK;
}

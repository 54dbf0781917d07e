/**
 * ThingsBoard OTA chunk request (firmware-protocols/device-protocol.md
 * §13.6): `v2/fw/request/{n}/chunk/{k}`, payload the chunk size. The chunk of
 * the device's assigned package is written to its connection on
 * `v2/fw/response/{n}/chunk/{k}` (raw bytes; empty past the end); with no
 * package, or a chunk size above the payload limit, ThingsBoard's error word
 * on `v2/fw/error`. Written directly (the Python SDK subscribes
 * `v2/fw/response/+`, which no chunk topic matches).
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { fail } from '../json.js';
import { OK, type HandlerContext } from './context.js';

export async function handleFwRequest(msg: InboundMessage, ctx: HandlerContext): Promise<HandleResult> {
  const { requestId, chunk } = msg;
  if (requestId === undefined || chunk === undefined) return fail('missing_request_id', 'firmware request without request id or chunk');
  const { deviceId } = msg.identity;
  const answer = await ctx.firmware.chunk(deviceId, requestId, msg.payload, chunk, ctx.config.mqtt.maxPayloadBytes);
  if (answer.ok) ctx.deliver(deviceId, `v2/fw/response/${requestId}/chunk/${chunk}`, answer.payload);
  else ctx.deliver(deviceId, 'v2/fw/error', Buffer.from(answer.error));
  return OK;
}

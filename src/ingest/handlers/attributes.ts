/**
 * v1/devices/D/attributes (firmware-protocols/device-protocol.md §3): client
 * attributes such as firmware, model, capabilities; latest value only.
 * A JSON object, nesting ≤ OBJECT_MAX_DEPTH, keys 1-64 characters, finite
 * numbers, bounded strings and node count. The registry merges, emits
 * 'attributes' and flushes the state itself.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { parseObject } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';

export function handleAttributes(msg: InboundMessage, ctx: HandlerContext): HandleResult {
  const p = parseObject(msg.payload, OBJECT_MAX_DEPTH);
  if (!p.ok) return p;
  ctx.registry.mergeAttributes(msg.identity.deviceId, p.value);
  return OK;
}

/**
 * v1/devices/D/status (firmware-protocols/device-protocol.md §3): `{"online": true, ...}`,
 * retained; also the device's Last Will, `{"online": false}`.
 *
 * Decision: the payload's `online` flag does NOT change presence. Spec
 * "Access rules": "The server's presence tracking does not depend on the
 * device sending a status message: connect and disconnect (including
 * keep-alive loss) update online and lastSeen" — the broker does that. A Last
 * Will (or a stale retained `{"online": false}`) can be delivered after the
 * same device has already reconnected; applying it would mark a connected
 * device offline. So the message is validated, and any extra fields besides
 * `online` (e.g. reason, ip, fw) are kept as the client attribute `status`
 * (replaced by each status message that carries extras).
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { fail, parseObject } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';

export function handleStatus(msg: InboundMessage, ctx: HandlerContext): HandleResult {
  const p = parseObject(msg.payload, OBJECT_MAX_DEPTH);
  if (!p.ok) return p;
  const { online, ...extra } = p.value;
  if (typeof online !== 'boolean') return fail('bad_value', '"online" must be a boolean');
  let hasExtra = false;
  for (const _ in extra) { hasExtra = true; break; }
  if (hasExtra) ctx.registry.mergeAttributes(msg.identity.deviceId, { status: extra });
  return OK;
}

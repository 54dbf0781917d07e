/**
 * ThingsBoard device claiming (firmware-protocols/device-protocol.md §13.8): the device publishes
 * `{"secretKey", "durationMs"}` to `v1/devices/me/claim` so that a user may claim it with that key
 * over ThingsBoard's REST API within `durationMs`. ThingsBoard sends nothing back over MQTT (the
 * user learns the outcome from the REST call), so there is no answer topic to refuse on.
 *
 * Keng does not support claiming: devices are registered by operators, or by provisioning with a
 * key scoped to an area, never by whoever holds a secret the firmware announces. The request is
 * not dropped silently: it is acknowledged, counted (`keng_mqtt_claims_refused_total`), logged at
 * debug, and recorded on the device as the client attribute `claimRequest`
 * (`{"state": "refused", "at", "reason"}`), where operators see it with the device's status.
 * Nothing is published to the device. The secret key is never stored or logged.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { formatTime } from '../../core/time.js';
import { parseObject } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';

export const CLAIM_REFUSED_REASON = 'claiming is not supported: devices are registered by operators or by provisioning';

export function handleTbClaim(msg: InboundMessage, ctx: HandlerContext): HandleResult {
  const deviceId = msg.identity.deviceId;
  // ThingsBoard accepts an empty payload (no secret); anything else must be a JSON object.
  const p = msg.payload.length === 0 ? null : parseObject(msg.payload, OBJECT_MAX_DEPTH, undefined, true);
  if (p !== null && !p.ok) return p;
  const durationMs = p?.value.durationMs;
  ctx.claims.inc();
  ctx.logger.debug({ deviceId, durationMs: typeof durationMs === 'number' ? durationMs : undefined, reason: CLAIM_REFUSED_REASON }, 'device claim request refused');
  ctx.registry.mergeAttributes(deviceId, {
    claimRequest: { state: 'refused', at: formatTime(msg.receivedAt, 'UTC'), reason: CLAIM_REFUSED_REASON },
  });
  return OK;
}

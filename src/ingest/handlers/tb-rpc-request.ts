/**
 * ThingsBoard client-side RPC (firmware-protocols/device-protocol.md
 * §13.3): a device publishes `{"method", "params"}` to
 * v1/devices/me/rpc/request/{n}; Keng answers on v1/devices/me/rpc/response/{n},
 * written to the device's connection even before it subscribed (the SDKs ask right after CONNECT).
 *   - getSessionLimits → {"maxPayloadSize", "maxInflightMessages",
 *     "rateLimit": {"messages", "telemetryMessages", "telemetryDataPoints"}},
 *     rates as ThingsBoard's "count:seconds,count:seconds";
 *   - any other method → {"error": "unsupported method"}.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import type { Config } from '../../config/schema.js';
import { DEFAULT_MAX_FIELDS } from '../codec.js';
import { fail, parseObject } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';

export interface SessionLimits {
  maxPayloadSize: number;
  maxInflightMessages: number;
  rateLimit: { messages: string; telemetryMessages: string; telemetryDataPoints: string };
}

/**
 * A token bucket (sustained `rate`/s, capacity `burst`) as ThingsBoard limits
 * a client can keep to: "<rate>:1,<burst>:<window>" where window = the time
 * the bucket takes to refill (burst / rate). Both entries are within what the
 * bucket admits. A rate below 1/s becomes "1:<seconds per message>".
 */
export function tbRate(rate: number, burst: number): string {
  const sustained = rate >= 1 ? `${Math.floor(rate)}:1` : `1:${Math.ceil(1 / rate)}`;
  const window = Math.max(1, Math.ceil(burst / rate));
  return `${sustained},${Math.floor(burst)}:${window}`;
}

/**
 * The broker limits messages (all types alike) per device; there is no
 * separate data-point limit, so telemetryDataPoints is the message limit
 * times the most fields a record may carry.
 */
export function sessionLimits(mqtt: Config['mqtt']): SessionLimits {
  const messages = tbRate(mqtt.rateLimitPerSec, mqtt.rateLimitBurst);
  return {
    maxPayloadSize: mqtt.maxPayloadBytes,
    maxInflightMessages: mqtt.maxInflightMessages,
    rateLimit: {
      messages,
      telemetryMessages: messages,
      telemetryDataPoints: tbRate(mqtt.rateLimitPerSec * DEFAULT_MAX_FIELDS, mqtt.rateLimitBurst * DEFAULT_MAX_FIELDS),
    },
  };
}

export function handleTbRpcRequest(msg: InboundMessage, ctx: HandlerContext): HandleResult {
  const requestId = msg.requestId;
  if (!requestId) return fail('missing_request_id', 'rpc request without request id');
  const p = parseObject(msg.payload, OBJECT_MAX_DEPTH);
  if (!p.ok) return p;
  const method = p.value.method;
  if (typeof method !== 'string' || method.length === 0) return fail('bad_rpc_request', '"method" must be a non-empty string');
  const topic = `v1/devices/${msg.identity.deviceId}/rpc/response/${requestId}`;
  ctx.respond(msg, topic, method === 'getSessionLimits' ? sessionLimits(ctx.config.mqtt) : { error: 'unsupported method' });
  return OK;
}

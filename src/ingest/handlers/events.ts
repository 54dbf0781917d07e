/**
 * v1/devices/D/events (firmware-protocols/device-protocol.md §3): structured events, a
 * JSON object with a string `type`. Emitted on the bus as 'device.event'
 * (the broadcast service consumes playback events).
 *
 * Spec "Playback events":
 *   {"type": "playback", "broadcastId": string,
 *    "state": "started" | "completed" | "failed" | "preempted" | "stopped",
 *    "at": <ms>, "detail"?: string}
 * A malformed playback event is refused (`bad_playback_event`); other event
 * types are passed on as they are (after the generic JSON limits).
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { fail, parseObject, type Failure } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';
import { PLAYBACK_STATES, isPlaybackState } from '../../core/protocol.js';
const MAX_TYPE_LENGTH = 64;
const MAX_BROADCAST_ID_LENGTH = 128;

export function validatePlaybackEvent(e: Record<string, unknown>): Failure | null {
  const { broadcastId, state, at, detail } = e;
  if (typeof broadcastId !== 'string' || broadcastId.length === 0 || broadcastId.length > MAX_BROADCAST_ID_LENGTH) {
    return fail('bad_playback_event', `broadcastId must be a string of 1-${MAX_BROADCAST_ID_LENGTH} characters`);
  }
  if (!isPlaybackState(state)) {
    return fail('bad_playback_event', `state must be one of ${PLAYBACK_STATES.join(', ')}`);
  }
  if (typeof at !== 'number' || !Number.isFinite(at) || at < 0) return fail('bad_playback_event', 'at must be epoch milliseconds');
  if (detail !== undefined && typeof detail !== 'string') return fail('bad_playback_event', 'detail must be a string');
  return null;
}

export function handleEvent(msg: InboundMessage, ctx: HandlerContext): HandleResult {
  const p = parseObject(msg.payload, OBJECT_MAX_DEPTH);
  if (!p.ok) return p;
  const payload = p.value;
  const type = payload.type;
  if (typeof type !== 'string' || type.length === 0 || type.length > MAX_TYPE_LENGTH) {
    return fail('bad_event', `"type" must be a string of 1-${MAX_TYPE_LENGTH} characters`);
  }
  if (type === 'playback') {
    const bad = validatePlaybackEvent(payload);
    if (bad) return bad;
  }
  ctx.bus.emit('device.event', { deviceId: msg.identity.deviceId, payload, at: msg.receivedAt });
  return OK;
}

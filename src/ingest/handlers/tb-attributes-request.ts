/**
 * ThingsBoard attribute request (firmware-protocols/device-protocol.md
 * §13.4): `{"clientKeys": "a,b" | ["a","b"], "sharedKeys": ...}` on
 * v1/devices/me/attributes/request/{n}, answered on
 * v1/devices/me/attributes/response/{n} (written to the device's connection, even before it subscribed) with
 * `{"client": {...}, "shared": {...}}`. Keys not set are left out. With
 * neither clientKeys nor sharedKeys every attribute is returned, both sides
 * present; with only one of them the answer has only that side, as
 * ThingsBoard's (its JsonConverter leaves an empty side out), so firmware that
 * asked for shared keys finds exactly `{"shared": {...}}`. Shared attributes
 * are the device's effective set (src/attributes), `sharedKeys` filtering it.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { fail, parseObject, type Failure } from '../json.js';
import { OBJECT_MAX_DEPTH, OK, type HandlerContext } from './context.js';

/** undefined = absent; string[] = the requested keys; Failure = wrong type. */
export function parseKeys(v: unknown, name: string): string[] | undefined | Failure {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v.split(',').map((k) => k.trim()).filter((k) => k.length > 0);
  if (Array.isArray(v) && v.every((k): k is string => typeof k === 'string')) return v;
  return fail('bad_attributes_request', `"${name}" must be a comma-separated string or an array of strings`);
}

function isFailure(v: string[] | undefined | Failure): v is Failure {
  return typeof v === 'object' && !Array.isArray(v);
}

function pick(all: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (Object.hasOwn(all, k)) out[k] = all[k];
  return out;
}

export function handleTbAttributesRequest(msg: InboundMessage, ctx: HandlerContext): HandleResult {
  const requestId = msg.requestId;
  if (!requestId) return fail('missing_request_id', 'attributes request without request id');
  const p = parseObject(msg.payload, OBJECT_MAX_DEPTH, undefined, true);
  if (!p.ok) return p;
  const clientKeys = parseKeys(p.value.clientKeys, 'clientKeys');
  if (isFailure(clientKeys)) return clientKeys;
  const sharedKeys = parseKeys(p.value.sharedKeys, 'sharedKeys');
  if (isFailure(sharedKeys)) return sharedKeys;

  const { deviceId } = msg.identity;
  const all = clientKeys === undefined && sharedKeys === undefined;
  const clientAttrs = ctx.registry.attributes(deviceId);
  const answer: { client?: Record<string, unknown>; shared?: Record<string, unknown> } = {};
  if (all || clientKeys) answer.client = all ? { ...clientAttrs } : pick(clientAttrs, clientKeys!);
  if (all || sharedKeys) answer.shared = ctx.sharedAttributes.sharedAttributes(deviceId, sharedKeys);
  ctx.respond(msg, `v1/devices/${deviceId}/attributes/response/${requestId}`, answer);
  return OK;
}

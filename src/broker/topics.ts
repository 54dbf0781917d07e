/**
 * Topic access rules for device connections: pure, no I/O, unit-tested.
 *
 * Spec device-protocol.md "Topics" and "Access rules": a device may publish
 * only to its own `v1/devices/D/{telemetry,attributes,status,events,rpc/response/R}`
 * and subscribe only to its own `v1/devices/D/rpc/request/+`.
 * Spec "ThingsBoard compatibility": a device that logged in with its access
 * token may use `v1/devices/me/...` for every topic, publish client-side RPC
 * (`rpc/request/{n}`) and attribute requests (`attributes/request/{n}`), and its
 * SDK's four subscriptions are granted.
 * ThingsBoard OTA (device protocol §13.6): every device may publish
 * `v2/fw/request/{n}/chunk/{k}` and subscribe to `v2/fw/response/...` and
 * `v2/fw/error`; the answers are written to the device's own connection
 * (BrokerPort.deliverTo, QoS 0), never routed between devices.
 * A device of kind `gateway` also publishes and subscribes ThingsBoard's gateway API,
 * `v1/gateway/...` (firmware-protocols/gateway.md).
 *
 * Hot path: `DeviceAcl.publish` runs for every inbound PUBLISH, so it uses
 * prefix checks at offsets (no regex, no split) and returns shared constant
 * objects for the fixed topics; only a request id allocates (the slice).
 */
import { DEVICE_ID_RE, type DeviceIdentity } from '../devices/types.js';
import type { InboundType } from './types.js';

export const TOPIC_ROOT = 'v1/devices/';
export const ME_PREFIX = 'v1/devices/me/';
/** Longest request id accepted in `rpc/.../R` and `attributes/.../n`. */
export const MAX_REQUEST_ID_LENGTH = 128;

/** Why a publish or subscription was refused (the `reason` label of the refusal counters). */
export type TopicRefusal =
  /** `$SYS/...` or any other `$` topic: reserved for the broker. */
  | 'reserved_topic'
  /** Another device's `v1/devices/X/...`. */
  | 'other_device'
  /** `v1/devices/me/...` from a device that logged in with id + secret. */
  | 'me_requires_token'
  /** Own prefix, but not one of the topics this device may use in this direction. */
  | 'forbidden_topic'
  /** Outside `v1/devices/`. */
  | 'unknown_topic'
  /** Empty or malformed request id, or a wildcard where none is allowed. */
  | 'bad_request_id';

export interface PublishAccess {
  type: InboundType;
  /** R of rpc/response/R, n of rpc/request/n, attributes/request/n and v2/fw/request/n/chunk/k. */
  requestId?: string;
  /** A request (or answer) on a `v1/devices/me/...` topic. */
  viaMe?: boolean;
  /** k of v2/fw/request/n/chunk/k. */
  chunk?: number;
}

export const FW_PREFIX = 'v2/fw/';
const FW_REQUEST = 'v2/fw/request/';
/** The filters ThingsBoard SDKs subscribe for OTA answers (Python: `+`; Arduino, older: `#`; ThingsBoard's own name: `+/chunk/+`). */
const FW_FILTERS: ReadonlySet<string> = new Set(['v2/fw/response/+', 'v2/fw/response/#', 'v2/fw/response/+/chunk/+', 'v2/fw/error']);

/** `v2/fw/request/{n}/chunk/{k}`: n and k decimal (1..9 digits each), or null. */
function fwRequest(topic: string): PublishAccess | null {
  const m = /^v2\/fw\/request\/(\d{1,9})\/chunk\/(\d{1,9})$/.exec(topic);
  return m ? { type: 'fw.request', requestId: m[1]!, chunk: Number(m[2]) } : null;
}

export interface SubscribeAccess {
  /** The filter to subscribe to: always the real-id form `v1/devices/D/...`. */
  topic: string;
  /** True when the client asked with `v1/devices/me/...` (deliveries must be rewritten back to `me`). */
  viaMe: boolean;
}

// Shared results for the topics without a request id (no allocation per message).
const TELEMETRY: PublishAccess = Object.freeze({ type: 'telemetry' });
const ATTRIBUTES: PublishAccess = Object.freeze({ type: 'attributes' });
const STATUS: PublishAccess = Object.freeze({ type: 'status' });
const EVENTS: PublishAccess = Object.freeze({ type: 'events' });
const CLAIM: PublishAccess = Object.freeze({ type: 'claim' });

// ThingsBoard gateway API (firmware-protocols/gateway.md): a device of kind `gateway`
// publishes for the devices behind it on `v1/gateway/...`. Its subscriptions are kept
// in real-id form, `v1/devices/G/gateway/...`, so that what the server publishes for
// one gateway reaches that gateway only, and are delivered back as `v1/gateway/...`.
export const GATEWAY_ROOT = 'v1/gateway/';
const GATEWAY_PUBLISH: ReadonlyMap<string, PublishAccess> = new Map(([
  ['connect', 'gateway.connect'], ['disconnect', 'gateway.disconnect'], ['telemetry', 'gateway.telemetry'],
  ['attributes', 'gateway.attributes'], ['attributes/request', 'gateway.attributes.request'], ['rpc', 'gateway.rpc'],
  ['claim', 'gateway.claim'],
] as const).map(([suffix, type]) => [suffix, Object.freeze({ type })]));
const GATEWAY_SUBSCRIBE: ReadonlySet<string> = new Set(['attributes', 'attributes/response', 'rpc']);

const RPC_RESPONSE = 'rpc/response/';
const RPC_REQUEST = 'rpc/request/';
const ATTR_REQUEST = 'attributes/request/';
const ATTR_RESPONSE = 'attributes/response/';

/** Suffixes (after `v1/devices/D/`) a token device's SDK subscribes to, device protocol §13. */
const TB_SUB_EXACT = 'attributes';

/** True when `s` is a usable request id: 1..128 chars, no level separator, no wildcard. */
function validRequestId(topic: string, from: number): boolean {
  const len = topic.length - from;
  if (len <= 0 || len > MAX_REQUEST_ID_LENGTH) return false;
  for (let i = from; i < topic.length; i++) {
    const c = topic.charCodeAt(i);
    if (c === 47 /* / */ || c === 43 /* + */ || c === 35 /* # */) return false;
  }
  return true;
}

/** True when the rest of `filter` from `from` is `+` or a concrete request id. */
function validIdFilter(filter: string, from: number): boolean {
  if (filter.length === from + 1 && filter.charCodeAt(from) === 43 /* + */) return true;
  return validRequestId(filter, from);
}

/** Is `topic` from `off` exactly `word`? */
function isExactly(topic: string, off: number, word: string): boolean {
  return topic.length === off + word.length && topic.startsWith(word, off);
}

/**
 * The compiled rules for one authenticated connection: prefixes computed once
 * per connection (the broker keeps one per client).
 */
export class DeviceAcl {
  /** `v1/devices/D/` */
  readonly ownPrefix: string;
  /** `v1/devices/D/status`: where a device's (own or LWT) status is retained. */
  readonly statusTopic: string;
  /** `v1/devices/G/gateway/` for a gateway (where its `v1/gateway/...` subscriptions are kept); null otherwise. */
  readonly gatewayPrefix: string | null;

  constructor(readonly identity: DeviceIdentity) {
    this.ownPrefix = `${TOPIC_ROOT}${identity.deviceId}/`;
    this.statusTopic = `${this.ownPrefix}status`;
    this.gatewayPrefix = identity.kind === 'gateway' ? `${this.ownPrefix}gateway/` : null;
  }

  /** Locate the suffix: offset after the own or `me` prefix, or a refusal. */
  private suffixStart(topic: string): number | TopicRefusal {
    if (topic.charCodeAt(0) === 36 /* $ */) return 'reserved_topic';
    // Own prefix first: a device whose id is literally "me" is then just itself.
    if (topic.startsWith(this.ownPrefix)) return this.ownPrefix.length;
    if (topic.startsWith(ME_PREFIX)) return this.identity.viaToken ? ME_PREFIX.length : 'me_requires_token';
    if (topic.startsWith(TOPIC_ROOT)) return 'other_device';
    return 'unknown_topic';
  }

  /**
   * May this device publish to `topic`, and what is it? Spec "Topics" (device → server rows)
   * plus the ThingsBoard client-side requests for token devices.
   */
  publish(topic: string): PublishAccess | TopicRefusal {
    if (topic.startsWith(FW_REQUEST)) return fwRequest(topic) ?? 'bad_request_id';
    const off = this.suffixStart(topic);
    if (typeof off === 'string') return off === 'unknown_topic' ? this.gatewayPublish(topic) : off;
    switch (topic.charCodeAt(off)) {
      case 116: // t
        return isExactly(topic, off, 'telemetry') ? TELEMETRY : 'forbidden_topic';
      case 115: // s
        return isExactly(topic, off, 'status') ? STATUS : 'forbidden_topic';
      case 101: // e
        return isExactly(topic, off, 'events') ? EVENTS : 'forbidden_topic';
      case 99: // c
        // ThingsBoard device claiming: taken (counted, recorded, refused) rather than dropped as a forbidden topic.
        return this.identity.viaToken && isExactly(topic, off, 'claim') ? CLAIM : 'forbidden_topic';
      case 97: // a
        if (isExactly(topic, off, 'attributes')) return ATTRIBUTES;
        if (topic.startsWith(ATTR_REQUEST, off)) {
          if (!this.identity.viaToken) return 'forbidden_topic';
          return this.withId('attributes.request', topic, off + ATTR_REQUEST.length);
        }
        return 'forbidden_topic';
      case 114: // r
        if (topic.startsWith(RPC_RESPONSE, off)) return this.withId('rpc.response', topic, off + RPC_RESPONSE.length);
        if (topic.startsWith(RPC_REQUEST, off)) {
          // Server → device for everyone; device → server only as ThingsBoard client-side RPC.
          if (!this.identity.viaToken) return 'forbidden_topic';
          return this.withId('rpc.request', topic, off + RPC_REQUEST.length);
        }
        return 'forbidden_topic';
      default:
        return 'forbidden_topic';
    }
  }

  /** A gateway's `v1/gateway/{connect,disconnect,telemetry,attributes,attributes/request,rpc,claim}`. */
  private gatewayPublish(topic: string): PublishAccess | TopicRefusal {
    if (this.gatewayPrefix === null || !topic.startsWith(GATEWAY_ROOT)) return 'unknown_topic';
    return GATEWAY_PUBLISH.get(topic.slice(GATEWAY_ROOT.length)) ?? 'forbidden_topic';
  }

  /** A gateway's `v1/gateway/{attributes,attributes/response,rpc}`, kept as `v1/devices/G/gateway/...`. */
  private gatewaySubscribe(filter: string): SubscribeAccess | TopicRefusal {
    if (this.gatewayPrefix === null || !filter.startsWith(GATEWAY_ROOT)) return 'unknown_topic';
    const rest = filter.slice(GATEWAY_ROOT.length);
    return GATEWAY_SUBSCRIBE.has(rest) ? { topic: this.gatewayPrefix + rest, viaMe: false } : 'forbidden_topic';
  }

  private withId(type: InboundType, topic: string, from: number): PublishAccess | TopicRefusal {
    if (!validRequestId(topic, from)) return 'bad_request_id';
    // `me` form unless the device's own prefix matched (a device whose id is literally "me").
    if (topic.startsWith(ME_PREFIX) && !topic.startsWith(this.ownPrefix)) return { type, requestId: topic.slice(from), viaMe: true };
    return { type, requestId: topic.slice(from) };
  }

  /**
   * May this device subscribe to `filter`? Every device: its own
   * `rpc/request/+` (or one request id). Token devices also: `attributes`,
   * `attributes/response/+`, `rpc/response/+`, in `me` or real-id form. A
   * `me` filter is rewritten to the real-id filter (server publishes always
   * use the real id).
   */
  subscribe(filter: string): SubscribeAccess | TopicRefusal {
    if (filter.startsWith(FW_PREFIX)) return FW_FILTERS.has(filter) ? { topic: filter, viaMe: false } : 'forbidden_topic';
    const off = this.suffixStart(filter);
    if (typeof off === 'string') return off === 'unknown_topic' ? this.gatewaySubscribe(filter) : off;
    const viaMe = off === ME_PREFIX.length && !filter.startsWith(this.ownPrefix);
    let ok = false;
    if (filter.startsWith(RPC_REQUEST, off)) {
      if (!validIdFilter(filter, off + RPC_REQUEST.length)) return 'bad_request_id';
      ok = true;
    } else if (this.identity.viaToken) {
      if (isExactly(filter, off, TB_SUB_EXACT)) ok = true;
      else if (filter.startsWith(ATTR_RESPONSE, off) || filter.startsWith(RPC_RESPONSE, off)) {
        const from = off + (filter.startsWith(ATTR_RESPONSE, off) ? ATTR_RESPONSE.length : RPC_RESPONSE.length);
        if (!validIdFilter(filter, from)) return 'bad_request_id';
        ok = true;
      }
    }
    if (!ok) return 'forbidden_topic';
    return { topic: viaMe ? this.ownPrefix + filter.slice(off) : filter, viaMe };
  }

  /**
   * Delivery check (authorizeForward): only the device's own topics ever reach
   * it. Returns the topic to deliver on: rewritten to `me` when `viaMe`, or
   * null when the packet must not be delivered. A topic already in `me` form
   * (a queued packet of a persistent session) is accepted for token devices.
   */
  forward(topic: string, viaMe: boolean): string | null {
    // Only ever written by BrokerPort.deliverTo to this connection: nothing publishes v2/fw/ through routing.
    if (topic.startsWith(FW_PREFIX)) return topic;
    if (topic.startsWith(this.ownPrefix)) {
      if (this.gatewayPrefix !== null && topic.startsWith(this.gatewayPrefix)) return GATEWAY_ROOT + topic.slice(this.gatewayPrefix.length);
      return viaMe ? ME_PREFIX + topic.slice(this.ownPrefix.length) : topic;
    }
    if (this.identity.viaToken && topic.startsWith(ME_PREFIX)) return topic;
    return null;
  }
}

/** Convenience for one-off checks (tests, tools): the broker keeps a DeviceAcl per connection. */
export function parseDeviceTopic(topic: string, identity: DeviceIdentity): PublishAccess | TopicRefusal {
  return new DeviceAcl(identity).publish(topic);
}

export function checkDeviceSubscription(filter: string, identity: DeviceIdentity): SubscribeAccess | TopicRefusal {
  return new DeviceAcl(identity).subscribe(filter);
}

// ------------------------------------------------------------ service (IOC) clients

/** What a read-only service client may subscribe to under `v1/devices/{+|D}/`. */
export type ServiceTopicKind = 'telemetry' | 'status' | 'attributes';

export interface ServiceFilter {
  kind: ServiceTopicKind;
  /** The device of a single-device filter; undefined for `+`. */
  deviceId?: string;
}

const SERVICE_KINDS: readonly ServiceTopicKind[] = ['telemetry', 'status', 'attributes'];

/**
 * Subscription rules for service clients (src/broker/service-clients.ts):
 * exactly `v1/devices/+/{telemetry,status,attributes}` or the same with one
 * device id. Never `#`, `$` topics, other suffixes or deeper levels.
 */
export function serviceSubscription(filter: string): ServiceFilter | TopicRefusal {
  if (filter.charCodeAt(0) === 36 /* $ */) return 'reserved_topic';
  if (!filter.startsWith(TOPIC_ROOT)) return 'unknown_topic';
  const slash = filter.indexOf('/', TOPIC_ROOT.length);
  if (slash < 0) return 'forbidden_topic';
  const kind = SERVICE_KINDS.find((k) => isExactly(filter, slash + 1, k));
  if (kind === undefined) return 'forbidden_topic';
  const id = filter.slice(TOPIC_ROOT.length, slash);
  if (id === '+') return { kind };
  return DEVICE_ID_RE.test(id) ? { kind, deviceId: id } : 'forbidden_topic';
}

/**
 * The device id and kind of a concrete topic a service client may receive
 * (`v1/devices/D/{telemetry,status,attributes}`), or null for anything else.
 */
export function serviceDelivery(topic: string): ServiceFilter | null {
  const r = serviceSubscription(topic);
  return typeof r === 'string' || r.deviceId === undefined ? null : r;
}

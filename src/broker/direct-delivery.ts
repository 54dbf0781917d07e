/**
 * Answers to a device's own requests, written to its connection (BrokerPort.deliverTo).
 *
 * Device protocol, "ThingsBoard compatibility": answers to a device's own requests (attribute
 * requests, client-side RPC) go to that device's connection even when it has not subscribed yet.
 * ThingsBoard SDKs publish a request right after CONNECT: the Python SDK's paho client writes the
 * PUBLISH as soon as the socket is open, before the CONNACK and so before the SUBSCRIBEs its
 * on_connect sends. aedes routes a broker publish through subscriptions only, so such an answer
 * would reach nobody.
 *
 * aedes 1.2 `Client#publish` (lib/client.js) writes to that one client whatever its
 * subscriptions: `new Packet` → `deliver0` (QoS 0) or `deliverQoS` (QoS 1: message id, written,
 * PUBACK expected; with a persistent session also stored with `outgoingEnqueue` first). Both run
 * the broker's `authorizeForward` (DeviceHooks.forward: only the device's own topics, `me`
 * rewrite), so this path is held to the same delivery rules as a routed publish.
 */
import { ME_PREFIX } from './topics.js';
import type { DeviceSession } from './session.js';

/** `topic` (real-id form) as the device asked: `v1/devices/me/...` when `viaMe`. */
export function answerTopic(s: DeviceSession, topic: string, viaMe: boolean): string {
  const own = s.acl.ownPrefix;
  return viaMe && s.identity.viaToken && topic.startsWith(own) ? ME_PREFIX + topic.slice(own.length) : topic;
}

/** Writes one PUBLISH to the session's connection; resolves once written (QoS 1: before its PUBACK). */
export function deliverToSession(s: DeviceSession, topic: string, payload: Buffer, qos: 0 | 1, viaMe: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    s.client.publish(
      { cmd: 'publish', topic: answerTopic(s, topic, viaMe), payload, qos, retain: false, dup: false },
      (err?: Error) => (err ? reject(err) : resolve()),
    );
  });
}

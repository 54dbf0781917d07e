import type { Component } from '../core/lifecycle.js';
import type { DeviceIdentity } from '../devices/types.js';

/** Message types a device may send (firmware-protocols/device-protocol.md §3). */
export type InboundType =
  | 'telemetry' | 'attributes' | 'status' | 'events' | 'rpc.response'
  /** ThingsBoard compatibility: client-side RPC and attribute requests. */
  | 'rpc.request' | 'attributes.request'
  /** ThingsBoard device claiming (`v1/devices/me/claim`): not supported, counted and recorded. */
  | 'claim'
  /** ThingsBoard OTA: `v2/fw/request/{n}/chunk/{k}`. */
  | 'fw.request'
  /** ThingsBoard gateway API (v1/gateway/...): a gateway for the devices behind it. */
  | 'gateway.connect' | 'gateway.disconnect' | 'gateway.telemetry' | 'gateway.attributes'
  | 'gateway.attributes.request' | 'gateway.rpc' | 'gateway.claim';

export interface InboundMessage {
  identity: DeviceIdentity;
  type: InboundType;
  /** The R or n of rpc/.../R, attributes/request/n and v2/fw/request/n/chunk/k. */
  requestId?: string;
  /** The request came on a `v1/devices/me/...` topic: its answer goes back in that form. */
  viaMe?: boolean;
  /** The k of v2/fw/request/n/chunk/k. */
  chunk?: number;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retain: boolean;
  receivedAt: number;
}

/** Outcome of handling one inbound message. A rejected message is dropped (not routed), counted and logged. */
export type HandleResult = { ok: true } | { ok: false; reason: string; detail?: string };

/**
 * The handler is awaited BEFORE the broker acknowledges a QoS 1 message, so a
 * handler that resolves has made the message durable.
 */
export type InboundHandler = (msg: InboundMessage) => Promise<HandleResult>;

export interface PublishOptions { qos?: 0 | 1; retain?: boolean }

export interface DeliverOptions {
  qos?: 0 | 1;
  /** Deliver on `v1/devices/me/...` (the device asked on a `me` topic) rather than on its real id. */
  viaMe?: boolean;
}

/**
 * The broker behind an interface: the embedded aedes broker today, an external
 * cluster (EMQX etc. with shared subscriptions) later.
 */
export interface BrokerPort extends Component {
  /** Server → device publish (RPC requests, attribute responses, retained status). */
  publish(topic: string, payload: string | Buffer, opts?: PublishOptions): Promise<void>;
  /**
   * The answer to a device's own request (ThingsBoard attribute request, client-side RPC), written
   * to that device's current connection whether or not it has subscribed to the answer's topic:
   * ThingsBoard SDKs publish requests right after CONNECT, before their SUBSCRIBEs. `topic` is in
   * real-id form (`v1/devices/D/...`). Resolves false when the device has no connection now (the
   * answer is dropped: it was for that connection).
   *
   * Limitation for an external broker (a cluster reached as a client): it cannot write to one
   * connection, so there this is a publish on the topic, received only once the device has
   * subscribed; a request sent before the SUBSCRIBE then goes unanswered (the SDK times out and
   * asks again) unless the implementation holds the answer until it sees the subscription.
   */
  deliverTo(deviceId: string, topic: string, payload: string | Buffer, opts?: DeliverOptions): Promise<boolean>;
  isConnected(deviceId: string): boolean;
  /**
   * How the device's current connection logged in: `token` (ThingsBoard access token as MQTT
   * username), `secret` (device id + secret); null when it is not connected.
   */
  credentialOf(deviceId: string): 'secret' | 'token' | null;
  connectedCount(): number;
  /**
   * Disconnect a device (e.g. disabled). With `credential`, only a connection
   * that logged in with that credential (its secret, or its access token): a
   * rotated secret does not cost a device on its token its connection.
   */
  kick(deviceId: string, credential?: 'secret' | 'token'): void;
  /** A deleted device: disconnect it and end its persistent MQTT session. */
  forget(deviceId: string): void;
  /** Bound listener addresses (ephemeral ports in tests); `mqtts` when the TLS listener is on. */
  address(): { mqtt: { host: string; port: number }; mqtts?: { host: string; port: number } };
  ready(): boolean;
}

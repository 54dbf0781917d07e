import type { Component } from '../core/lifecycle.js';
import type { DeviceIdentity } from '../devices/types.js';

/** Message types a device may send (firmware-protocols/device-protocol.md §3). */
export type InboundType =
  | 'telemetry' | 'attributes' | 'status' | 'events' | 'rpc.response'
  /** ThingsBoard compatibility: client-side RPC and attribute requests. */
  | 'rpc.request' | 'attributes.request'
  /** ThingsBoard gateway API (v1/gateway/...): a gateway for the devices behind it. */
  | 'gateway.connect' | 'gateway.disconnect' | 'gateway.telemetry' | 'gateway.attributes'
  | 'gateway.attributes.request' | 'gateway.rpc' | 'gateway.claim';

export interface InboundMessage {
  identity: DeviceIdentity;
  type: InboundType;
  /** The R or n of rpc/.../R and attributes/request/n. */
  requestId?: string;
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

/**
 * The broker behind an interface: the embedded aedes broker today, an external
 * cluster (EMQX etc. with shared subscriptions) later.
 */
export interface BrokerPort extends Component {
  /** Server → device publish (RPC requests, attribute responses, retained status). */
  publish(topic: string, payload: string | Buffer, opts?: PublishOptions): Promise<void>;
  isConnected(deviceId: string): boolean;
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

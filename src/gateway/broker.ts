/**
 * The broker as the rest of Keng sees it once gateways exist: a sub-device
 * behind a ThingsBoard-style gateway has no MQTT connection of its own, so
 * "is it connected" and "send it this command" go through its gateway.
 * Everything else is the wrapped broker's.
 *
 * RpcService (and everything that sends to devices) publishes
 * `v1/devices/D/rpc/request/R` as for any device; for a sub-device this
 * becomes one `v1/gateway/rpc` message to its gateway (Gateways.toGateway),
 * and the gateway's answer comes back through ingest
 * (handlers/gateway-rpc.ts) as that device's `rpc.response`.
 */
import type { BrokerPort, DeliverOptions, PublishOptions } from '../broker/types.js';
import type { Gateways } from './gateways.js';

export class GatewayAwareBroker implements BrokerPort {
  readonly name = 'broker';

  constructor(private readonly inner: BrokerPort, private readonly gateways: Pick<Gateways, 'toGateway' | 'subConnected'>) {}

  /** The wrapped broker is started and stopped by the app itself. */
  async start(): Promise<void> { /* the wrapped broker's */ }
  async stop(): Promise<void> { /* the wrapped broker's */ }

  publish(topic: string, payload: string | Buffer, opts?: PublishOptions): Promise<void> {
    const viaGateway = this.gateways.toGateway(topic, payload);
    return viaGateway === null
      ? this.inner.publish(topic, payload, opts)
      : this.inner.publish(viaGateway.topic, viaGateway.payload, { qos: opts?.qos ?? 1 });
  }

  isConnected(deviceId: string): boolean {
    if (this.inner.isConnected(deviceId)) return true;
    const gw = this.gateways.subConnected(deviceId);
    return gw !== undefined && this.inner.isConnected(gw);
  }

  /** Answers and OTA chunks go to a device's own connection: a sub-device has none (its gateway answers for it). */
  deliverTo(deviceId: string, topic: string, payload: string | Buffer, opts?: DeliverOptions): Promise<boolean> {
    return this.inner.deliverTo(deviceId, topic, payload, opts);
  }
  /** A sub-device has no login of its own: null, so commands to it keep Keng's ids (its gateway numbers them). */
  credentialOf(deviceId: string): 'secret' | 'token' | null { return this.inner.credentialOf(deviceId); }
  connectedCount(): number { return this.inner.connectedCount(); }
  kick(deviceId: string, credential?: 'secret' | 'token'): void { this.inner.kick(deviceId, credential); }
  forget(deviceId: string): void { this.inner.forget(deviceId); }
  address(): ReturnType<BrokerPort['address']> { return this.inner.address(); }
  ready(): boolean { return this.inner.ready(); }
}

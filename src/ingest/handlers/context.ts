/** What every message handler gets from IngestService. */
import type { InboundMessage, HandleResult } from '../../broker/types.js';
import type { Config } from '../../config/schema.js';
import type { EventBus } from '../../core/events.js';
import type { Logger } from '../../core/logger.js';
import type { Metrics } from '../../core/metrics.js';
import type { DeviceRegistryApi } from '../../devices/registry-types.js';
import type { DeviceIdentity } from '../../devices/types.js';
import type { TelemetryLimits } from '../codec.js';
import type { GroupCommitter } from '../group-commit.js';

export type IngestRegistry = Pick<DeviceRegistryApi, 'updateLatest' | 'mergeAttributes' | 'attributes' | 'getDevice'>;

/**
 * ThingsBoard shared attributes (server-set attributes devices can read,
 * src/attributes). Without a source (tests of ingest alone) the answer is {}.
 */
export interface SharedAttributesSource {
  /** The shared attributes among `keys` (all of them when keys is undefined). */
  sharedAttributes(deviceId: string, keys: string[] | undefined): Record<string, unknown>;
}

export const NO_SHARED_ATTRIBUTES: SharedAttributesSource = { sharedAttributes: () => ({}) };

/** ThingsBoard OTA downloads (src/firmware): one chunk of a device's assigned package, or an error word. */
export interface FirmwareChunkSource {
  chunk(deviceId: string, requestId: string, payload: Buffer, index: number, maxBytes: number): Promise<{ ok: true; payload: Buffer } | { ok: false; error: string }>;
}

export const NO_FIRMWARE: FirmwareChunkSource = { chunk: async () => ({ ok: false, error: 'NOT_FOUND' }) };

/**
 * The sub-devices of ThingsBoard-style gateways (src/gateway implements it):
 * which Keng device a gateway's device name is, and their presence. A
 * refused name is counted and listed by the implementation; handlers skip it.
 */
export interface GatewayIngest {
  resolve(gateway: DeviceIdentity, name: string, type: string | undefined, at: number):
    { ok: true; deviceId: string } | { ok: false; reason: string } | Promise<{ ok: true; deviceId: string } | { ok: false; reason: string }>;
  connected(gatewayId: string, deviceId: string, at: number): void;
  disconnected(gatewayId: string, name: string, at: number): void;
  /** The Keng request a gateway's RPC answer is for (only its own), or undefined. */
  rpcAnswer(gatewayId: string, name: string, id: number): { deviceId: string; requestId: string } | undefined;
}

/** Without a gateway module every sub-device is refused. */
export const NO_GATEWAYS: GatewayIngest = {
  resolve: () => ({ ok: false, reason: 'not_allowed' }),
  connected: () => undefined,
  disconnected: () => undefined,
  rpcAnswer: () => undefined,
};

export interface HandlerContext {
  config: Pick<Config, 'telemetry' | 'mqtt'>;
  limits: TelemetryLimits;
  registry: IngestRegistry;
  commit: Pick<GroupCommitter, 'join'>;
  bus: Pick<EventBus, 'emit'>;
  logger: Logger;
  metrics: Pick<Metrics, 'readingsAcceptedTotal'>;
  sharedAttributes: SharedAttributesSource;
  /** ThingsBoard claim requests refused (tb-claim.ts). */
  claims: { inc(): void };
  /**
   * The answer to `to` (a device's own request), QoS 1, written to the device's connection even
   * before it subscribed (BrokerPort.deliverTo), on `topic` given in real-id form and sent back in
   * the form the request came in (`me` or real id). Fire-and-forget: failures are logged, never thrown.
   */
  respond(to: InboundMessage, topic: string, body: unknown): void;
  firmware: FirmwareChunkSource;
  /** Server → device, straight to its connection (QoS 0); dropped when it is not connected. */
  deliver(deviceId: string, topic: string, payload: Buffer): void;
  gateways: GatewayIngest;
}

export type MessageHandler = (msg: InboundMessage, ctx: HandlerContext) => Promise<HandleResult> | HandleResult;

export const OK: HandleResult = { ok: true };

/** Limits for free-form JSON payloads (attributes, status, events, RPC). */
export const OBJECT_MAX_DEPTH = 8;

/**
 * IngestService: the handler the broker awaits for every device message
 * before it acknowledges it (src/broker/types.ts InboundHandler).
 *
 * Contract with the broker:
 *  - resolves {ok: true}: the message is handled (telemetry: durable on disk);
 *  - resolves {ok: false, reason, detail}: bad input; the broker drops it
 *    (still acknowledged), counts keng_rejected_total{reason} and logs it;
 *  - rejects: the telemetry store could not make the readings durable (or
 *    ingest is stopped): no PUBACK, the device keeps its data and retries.
 * Bad input never makes it reject.
 *
 * Metrics: the embedded AedesBroker already counts keng_messages_in_total{type}
 * for every routed message and keng_rejected_total{reason} for every
 * {ok: false} this returns, and touches presence (lastSeen) on every publish;
 * so by default ingest does neither (no double counting). A BrokerPort that
 * does not count can pass `countInbound: true`. Ingest counts
 * keng_readings_accepted_total and keng_commit_seconds; the store counts
 * written readings and duplicates.
 */
import type { BrokerPort, HandleResult, InboundHandler, InboundMessage, InboundType } from '../broker/types.js';
import type { Config } from '../config/schema.js';
import type { Clock } from '../core/clock.js';
import type { EventBus, Scalar } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { UrgentOutbound } from '../core/urgent.js';
import type { Logger } from '../core/logger.js';
import { counterOn, type Metrics } from '../core/metrics.js';
import type { TelemetryStore } from '../storage/telemetry/types.js';
import { telemetryLimits } from './codec.js';
import { GroupCommitter } from './group-commit.js';
import { fail } from './json.js';
import {
  NO_FIRMWARE, NO_GATEWAYS, NO_SHARED_ATTRIBUTES, type FirmwareChunkSource, type GatewayIngest, type HandlerContext, type IngestRegistry, type MessageHandler, type SharedAttributesSource,
} from './handlers/context.js';
import { handleTelemetry } from './handlers/telemetry.js';
import { handleAttributes } from './handlers/attributes.js';
import { handleStatus } from './handlers/status.js';
import { handleEvent } from './handlers/events.js';
import { handleRpcResponse } from './handlers/rpc-response.js';
import { handleTbRpcRequest } from './handlers/tb-rpc-request.js';
import { handleTbAttributesRequest } from './handlers/tb-attributes-request.js';
import { handleTbClaim } from './handlers/tb-claim.js';
import { handleFwRequest } from './handlers/fw-request.js';
import { GATEWAY_HANDLERS } from './handlers/gateway-handlers.js';

export interface IngestDeps {
  config: Pick<Config, 'telemetry' | 'mqtt'>;
  registry: IngestRegistry;
  store: Pick<TelemetryStore, 'writeBatch' | 'settleFinished'>;
  broker: Pick<BrokerPort, 'deliverTo'>;
  bus: Pick<EventBus, 'emit'>;
  logger: Logger;
  metrics: Pick<Metrics, 'messagesIn' | 'rejectedTotal' | 'readingsAcceptedTotal' | 'commitLatency'> & Partial<Pick<Metrics, 'registry'>>;
  clock: Clock;
  /** Count messagesInTotal{type} and rejectedTotal{reason} here (default false: the AedesBroker counts them). */
  countInbound?: boolean;
  /** ThingsBoard shared attributes (src/attributes); absent: none. */
  sharedAttributes?: SharedAttributesSource;
  /** ThingsBoard OTA chunks (src/firmware); absent: every request gets NOT_FOUND. */
  firmware?: FirmwareChunkSource;
  /** Sub-devices of ThingsBoard-style gateways (src/gateway); absent: every sub-device refused. */
  gateways?: GatewayIngest;
  /** Urgent outbound work (an emergency's commands) that device answers and events wait for; absent: none. */
  urgent?: Pick<UrgentOutbound, 'waiting'>;
  /**
   * Resolves when the state writes made so far are durable (the broadcast path's state window), rejects when
   * they could not be: answers and events are acknowledged only after it. Absent: writes are durable at once.
   */
  stateDurable?: () => Promise<void>;
}

/** One handler per message type (firmware-protocols/device-protocol.md §3, §13). */
const HANDLERS: Record<InboundType, MessageHandler> = {
  telemetry: handleTelemetry,
  attributes: handleAttributes,
  status: handleStatus,
  events: handleEvent,
  'rpc.response': handleRpcResponse,
  'rpc.request': handleTbRpcRequest,
  'attributes.request': handleTbAttributesRequest,
  claim: handleTbClaim,
  'fw.request': handleFwRequest,
  ...GATEWAY_HANDLERS,
};

interface CounterChild { inc(value?: number): void }

export class IngestService implements Component {
  readonly name = 'ingest';
  readonly commit: GroupCommitter;
  private readonly ctx: HandlerContext;
  private readonly log: Logger;
  private readonly rejectCounters = new Map<string, CounterChild>();

  constructor(private readonly deps: IngestDeps) {
    this.log = deps.logger;
    this.commit = new GroupCommitter({
      store: deps.store,
      intervalMs: deps.config.telemetry.commitIntervalMs,
      maxReadings: deps.config.telemetry.commitMaxReadings,
      maxInFlight: deps.config.telemetry.commitMaxInFlight,
      spacingMs: deps.config.telemetry.commitSpacingMs,
      metrics: deps.metrics,
      logger: deps.logger,
    });
    this.ctx = {
      config: deps.config,
      limits: telemetryLimits(deps.config.telemetry),
      registry: deps.registry,
      commit: this.commit,
      bus: deps.bus,
      logger: deps.logger,
      metrics: deps.metrics,
      sharedAttributes: deps.sharedAttributes ?? NO_SHARED_ATTRIBUTES,
      claims: counterOn(deps.metrics.registry, 'keng_mqtt_claims_refused_total',
        'ThingsBoard claim requests (v1/devices/me/claim) refused: Keng does not support claiming'),
      respond: (to, topic, body) => this.respond(to, topic, body),
      firmware: deps.firmware ?? NO_FIRMWARE,
      deliver: (deviceId, topic, payload) => {
        deps.broker.deliverTo(deviceId, topic, payload, { qos: 0 }).catch((err: unknown) => this.log.warn({ err, deviceId, topic }, 'direct delivery failed'));
      },
      gateways: deps.gateways ?? NO_GATEWAYS,
    };
  }

  async start(): Promise<void> {
    this.commit.open();
  }

  /** Called after the broker stopped taking messages: writes the last group commit. */
  async stop(): Promise<void> {
    await this.commit.close();
  }

  /** The broker's inbound handler (an arrow property: pass it around unbound). */
  readonly handle: InboundHandler = (msg: InboundMessage): Promise<HandleResult> => {
    if (msg.type === 'telemetry' && this.deps.countInbound !== true) {
      // Hot path (~20,000 messages/s): no async frame of its own; every message of a
      // group commit returns the same promise (handlers/telemetry.ts). Only the group
      // commit can reject here (store unavailable): let it propagate.
      const res = handleTelemetry(msg, this.ctx);
      return res instanceof Promise ? res : Promise.resolve(res);
    }
    // While an emergency's commands go out (core/urgent.ts), answers and events wait; telemetry never does.
    const wait = msg.type === 'telemetry' ? null : this.deps.urgent?.waiting;
    return wait ? wait.then(() => this.handleAny(msg)) : this.handleAny(msg);
  };

  /**
   * Readings that did not arrive over MQTT (a Modbus poll, src/modbus) take
   * the path of a telemetry message of that device: the same validation,
   * group commit (durable when this resolves), de-duplication, latest values,
   * `telemetry.accepted`/`telemetry` events (live feed, IOC) and store
   * (embedded or InfluxDB). The caller counts what it gets back as {ok: false}
   * (no broker does it here); a rejection means the store could not make the
   * readings durable.
   */
  readonly submitReadings = (deviceId: string, ts: number, values: Record<string, Scalar>): Promise<HandleResult> => {
    const device = this.deps.registry.getDevice(deviceId);
    if (!device) return Promise.resolve({ ok: false, reason: 'unknown_device', detail: `device ${deviceId} is not registered` });
    const msg: InboundMessage = {
      identity: { deviceId, kind: device.kind, area: device.area, viaToken: false },
      type: 'telemetry', payload: Buffer.from(JSON.stringify({ ts, values })), qos: 1, retain: false, receivedAt: this.deps.clock.now(),
    };
    const res = handleTelemetry(msg, this.ctx);
    return res instanceof Promise ? res : Promise.resolve(res);
  };

  private async handleAny(msg: InboundMessage): Promise<HandleResult> {
    const count = this.deps.countInbound === true;
    if (count) this.deps.metrics.messagesIn(msg.type).inc();
    const deviceId = msg.identity.deviceId;
    const handler = HANDLERS[msg.type] as MessageHandler | undefined;
    let res: HandleResult;
    if (!handler) {
      res = fail('unknown_type', `unknown message type ${String(msg.type)}`);
    } else if (msg.type === 'telemetry' || msg.type === 'gateway.telemetry') {
      // Only the group commit can reject here (store unavailable): let it propagate (no PUBACK).
      res = await handler(msg, this.ctx);
    } else {
      try {
        res = await handler(msg, this.ctx);
      } catch (err) {
        this.log.error({ err, deviceId, type: msg.type }, 'ingest handler failed');
        res = fail('internal_error', 'internal error');
      }
    }
    // An acknowledgement means stored: what the handler wrote (an answer's state, a playback event) commits first.
    // A failed commit rejects here: no PUBACK, the device is disconnected and resends.
    if (this.deps.stateDurable && msg.type !== 'telemetry' && msg.type !== 'gateway.telemetry') await this.deps.stateDurable();
    if (!res.ok && count) {
      this.counter(this.rejectCounters, this.deps.metrics.rejectedTotal, res.reason).inc();
      this.log.debug({ deviceId, type: msg.type, reason: res.reason, detail: res.detail }, 'device message refused');
    }
    return res;
  }

  /** Cached labelled children: one Map lookup instead of prom-client label hashing per message. */
  private counter(cache: Map<string, CounterChild>, metric: { labels(v: string): CounterChild }, label: string): CounterChild {
    let c = cache.get(label);
    if (!c) {
      c = metric.labels(label);
      cache.set(label, c);
    }
    return c;
  }

  private respond(to: InboundMessage, topic: string, body: unknown): void {
    const deviceId = to.identity.deviceId;
    const onError = (err: unknown): void => { this.log.warn({ err, deviceId, topic }, 'reply publish failed'); };
    try {
      this.deps.broker.deliverTo(deviceId, topic, JSON.stringify(body), { qos: 1, viaMe: to.viaMe === true }).then((delivered) => {
        if (!delivered) this.log.debug({ deviceId, topic }, 'reply not delivered: the device is no longer connected');
      }, onError);
    } catch (err) {
      onError(err);
    }
  }
}

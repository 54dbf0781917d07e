/**
 * What AedesBroker shares with its hook modules, one per session kind
 * (device-hooks.ts for devices, service-clients.ts for read-only service
 * clients): the running aedes instance, the stop flag, the one map every hook
 * looks its session up in, per-owner limits, cached counters and the refusals
 * both kinds answer a CONNECT with.
 */
import type { Aedes, AuthenticateError, Client, PublishPacket } from 'aedes';
import type { Config } from '../config/index.js';
import type { Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { ProvisionSession } from './provision-session.js';
import { peerAddress } from './proxy-accept.js';
import type { ServiceSession } from './service-clients.js';
import { DeviceLimits, type DeviceSession } from './session.js';

/**
 * Where refused (and consumed) publishes go after authorizePublish: aedes
 * routes every authorized packet, so we point it at a topic nobody can
 * subscribe to (authorizeSubscribe refuses `$` topics; `#`/`+` never match `$`).
 */
export const SINK_TOPIC = '$keng/dropped';

export type MqttConfig = Readonly<Config['mqtt']>;

/** An authenticated connection; the broker's hooks switch on `kind` once and hand it to that kind's module. */
export type BrokerSession = DeviceSession | ServiceSession | ProvisionSession;

export type AuthDone = (error: AuthenticateError | null, success: boolean | null) => void;
export type PubDone = (error?: Error | null) => void;
interface CounterChild { inc(): void }
/** messagesInTotal{type}, rejectedTotal{reason}, mqttRefusedTotal{op,reason} by op. */
type CounterKind = 'in' | 'rejected' | 'connect' | 'publish' | 'subscribe';

export function authError(returnCode: 2 | 3 | 4 | 5, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode: returnCode as AuthenticateError['returnCode'] });
}

export function sink(packet: PublishPacket): void {
  packet.topic = SINK_TOPIC;
  packet.retain = false;
}

export class BrokerContext {
  /** The running aedes instance (set by start(), cleared by stop()). */
  aedes: Aedes | null = null;
  stopping = false;
  /** Identity and state per authenticated connection, of either kind. */
  readonly states = new WeakMap<Client, BrokerSession>();
  /** Rate, abuse and warn state per device (outlives connections; swept when idle). */
  readonly limits = new Map<string, DeviceLimits>();
  private readonly counters: Record<CounterKind, Map<string, CounterChild>> = {
    in: new Map(), rejected: new Map(), connect: new Map(), publish: new Map(), subscribe: new Map(),
  };

  /** `closed`: the broker's handler for a connection's socket closing (its first close signal may be this one). */
  constructor(
    readonly config: MqttConfig, readonly logger: Logger, readonly metrics: Metrics, readonly clock: Clock,
    private readonly closed: (client: Client) => void,
  ) {}

  /** CONNECT accepted: from here on every hook finds `s` for its client. */
  admit(s: BrokerSession, done: AuthDone): void {
    this.states.set(s.client, s);
    s.client.conn.once('close', () => this.closed(s.client));
    done(null, true);
  }

  refuseConnect(client: Client, reason: string, code: 2 | 4 | 5, done: AuthDone, deviceId?: string): void {
    this.count('connect', reason);
    this.logger.debug({ clientId: client.id, deviceId, reason, remote: peerAddress(client.conn) }, 'mqtt connect refused');
    done(authError(code, reason), null);
  }

  /** The authenticator threw or rejected: CONNACK 3, the client may try again. */
  authUnavailable(client: Client, err: unknown, message: string, done: AuthDone): void {
    this.logger.error({ err, clientId: client.id }, message);
    this.count('connect', 'auth_error');
    done(authError(3, 'authentication unavailable'), null);
  }

  limitsFor(owner: string): DeviceLimits {
    let l = this.limits.get(owner);
    if (!l) {
      const c = this.config;
      l = new DeviceLimits(c.rateLimitPerSec, c.rateLimitBurst, c.abuseDisconnectAfter, this.clock.now());
      this.limits.set(owner, l);
    }
    return l;
  }

  /** Cached labelled counter children, one map per counter (the refusal path can be hot during a flood). */
  count(kind: CounterKind, label: string): void {
    const cache = this.counters[kind];
    let child = cache.get(label);
    if (!child) {
      const m = this.metrics;
      child = kind === 'in' ? m.messagesIn(label)
        : kind === 'rejected' ? m.rejectedTotal.labels({ reason: label })
          : m.mqttRefusedTotal.labels({ op: kind, reason: label });
      cache.set(label, child);
    }
    child.inc();
  }
}

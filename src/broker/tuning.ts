/**
 * The broker's aedes and socket settings that are not in the config file: defaults chosen for
 * field devices, shortened by tests. Separate from aedes-broker.ts so the listener code stays
 * readable.
 */
import { DEFAULT_SERVICE_RECHECK_MS } from './service-clients.js';
/** aedes and socket settings that are not in the config file (tests shorten them). */
export interface BrokerTuning {
  /** Time allowed between TCP accept and CONNECT (aedes default 30 s). */
  connectTimeoutMs: number;
  /** aedes $SYS heartbeat interval; wills of dead cluster peers are swept every 4×. */
  heartbeatIntervalMs: number;
  /**
   * Maximum MQTT keep-alive a client may ask for. 0 = no limit: aedes refuses
   * keep-alive 0 whenever a limit is set (with non-3.1.1 return code 6), and
   * field firmware sending keep-alive 0 exists; TCP keep-alive below detects
   * dead peers of such clients instead.
   */
  keepaliveLimit: number;
  /** Packets a client may pipeline before its CONNACK (authentication takes ~50 ms). */
  queueLimit: number;
  /** A client whose socket does not drain within this time is disconnected. */
  drainTimeoutMs: number;
  /** Client id length limit (aedes applies it to MQTT 3.1 only; ids up to 64 chars plus suffixes). */
  maxClientsIdLength: number;
  /** Bound on each phase of stop(). */
  stopTimeoutMs: number;
  /** TCP keep-alive probe delay (dead-peer detection for keep-alive 0 clients). */
  tcpKeepAliveMs: number;
  /** How often service clients' tokens are re-checked (revoked → disconnected). */
  serviceRecheckMs: number;
  /** mqtt.proxyProtocol "required": time allowed for the PROXY header after accept. */
  proxyHeaderTimeoutMs: number;
}

export const DEFAULT_TUNING: BrokerTuning = {
  connectTimeoutMs: 10_000,
  heartbeatIntervalMs: 60_000,
  keepaliveLimit: 0,
  queueLimit: 100,
  drainTimeoutMs: 30_000,
  maxClientsIdLength: 256,
  stopTimeoutMs: 5_000,
  tcpKeepAliveMs: 60_000,
  serviceRecheckMs: DEFAULT_SERVICE_RECHECK_MS,
  proxyHeaderTimeoutMs: 5_000,
};

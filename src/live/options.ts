/**
 * LiveFeed settings (all optional; defaults suit a commune server and the
 * 200-client benchmark). Those a user can set (config `live.*`, `tz`) take
 * their defaults from the config schema, which owns them.
 */
import { CONFIG_DEFAULTS } from '../config/index.js';

export interface LiveFeedSettings {
  /** socket.io path on the HTTP server. Default "/socket.io". */
  path: string;
  /** Time zone of the ISO 8601 times in events (config.tz). */
  tz: string;
  /** Allowed browser origins (config.http.corsOrigins); empty = no CORS headers (same origin only). */
  corsOrigins: readonly string[];
  /** Most connected clients; further handshakes are refused (KENG_ERR_RATE_LIMITED). */
  maxClients: number;
  /** Most device ids plus area codes one client may be subscribed to. */
  maxSubscriptions: number;
  /** How often client buffers are inspected (slow-client detection, drain, drop), ms. */
  checkIntervalMs: number;
  /** A client is "backed up" when this many socket.io packets wait in its engine buffer … */
  highWaterPackets: number;
  /** … or this many bytes wait in its socket's outgoing buffer. */
  highWaterBytes: number;
  /** A backed-up client counts as drained again below this many buffered bytes (and no waiting packets). */
  lowWaterBytes: number;
  /** A backed-up client holding more coalesced (device, field) entries than this is dropped. */
  maxPendingEntries: number;
  /** A client backed up without draining for longer than this is dropped, ms. */
  maxLagMs: number;
  /** Batched clients (`auth: {batch: true}`): a reading waits at most this long before its `telemetry.batch` is sent, ms. */
  batchIntervalMs: number;
  /** … and a batch is sent at once when it holds this many readings. */
  maxBatch: number;
  /**
   * A single-event client (no `auth.batch`) that is sent more than this many
   * `telemetry` events per second is throttled: it then gets the latest value
   * per (device, field) once per `throttleIntervalMs`, as `telemetry` events,
   * until its devices' rate falls below half of this (docs/live-feed.md).
   */
  maxEventRate: number;
  /** Throttled clients get their coalesced readings this often, ms. */
  throttleIntervalMs: number;
  /** How often connected clients' tokens are checked again (revoked or expired → disconnected), ms. */
  reauthIntervalMs: number;
  /** On stop, how long clients get to receive the disconnect before their connections are cut, ms. */
  stopGraceMs: number;
  /** `subscribe` + `unsubscribe` requests per second a client may send (sustained); more are refused (request-limit.ts). */
  requestRatePerSec: number;
  /** … and in a burst (a page that subscribes to several things at once). */
  requestBurst: number;
  /** A client with more refused requests than this within 10 s is disconnected. */
  requestFloodDisconnectAfter: number;
}

export const DEFAULT_LIVE_SETTINGS: Readonly<LiveFeedSettings> = Object.freeze({
  path: '/socket.io',
  tz: CONFIG_DEFAULTS.tz,
  corsOrigins: [],
  maxClients: CONFIG_DEFAULTS.live.maxClients,
  maxSubscriptions: 1000,
  checkIntervalMs: 50,
  highWaterPackets: 500,
  highWaterBytes: 256 * 1024,
  lowWaterBytes: 64 * 1024,
  maxPendingEntries: 50_000,
  maxLagMs: 30_000,
  batchIntervalMs: CONFIG_DEFAULTS.live.batchIntervalMs,
  maxBatch: 2000,
  maxEventRate: CONFIG_DEFAULTS.live.maxEventRate,
  throttleIntervalMs: CONFIG_DEFAULTS.live.throttleIntervalMs,
  reauthIntervalMs: 30_000,
  stopGraceMs: 300,
  requestRatePerSec: 10,
  requestBurst: 20,
  requestFloodDisconnectAfter: 100,
});

export function resolveSettings(o: Partial<LiveFeedSettings> = {}): LiveFeedSettings {
  const s: LiveFeedSettings = { ...DEFAULT_LIVE_SETTINGS, ...o };
  for (const k of ['maxClients', 'maxSubscriptions', 'checkIntervalMs', 'highWaterPackets', 'highWaterBytes', 'maxPendingEntries', 'maxLagMs', 'reauthIntervalMs', 'batchIntervalMs', 'maxBatch', 'maxEventRate', 'throttleIntervalMs',
    'requestRatePerSec', 'requestBurst', 'requestFloodDisconnectAfter'] as const) {
    if (!Number.isFinite(s[k]) || s[k] <= 0) throw new Error(`live: ${k} must be a positive number`);
  }
  if (s.lowWaterBytes < 0 || s.lowWaterBytes > s.highWaterBytes) throw new Error('live: lowWaterBytes must lie between 0 and highWaterBytes');
  if (!s.path.startsWith('/')) throw new Error('live: path must start with "/"');
  return s;
}

import { Type, type Static } from 'typebox';
import { Value } from 'typebox/value';
import { DEFAULT_TIME_ZONE } from '../core/time.js';

/**
 * The one settings schema. Defaults live here; a config file (KENG_CONFIG,
 * JSON) overrides them, then KENG_* environment variables (see env.ts).
 * Validated once at start, then deep-frozen and passed down.
 */
export const ConfigSchema = Type.Object({
  dataDir: Type.String({ minLength: 1, default: './data', description: 'State directory (KENG_DATA_DIR)' }),
  logLevel: Type.Union([
    Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'),
    Type.Literal('debug'), Type.Literal('trace'), Type.Literal('silent'),
  ], { default: 'info' }),
  /** Bearer token with full admin rights; when absent one is generated into <dataDir>/admin-token. */
  adminToken: Type.Optional(Type.String({ minLength: 16 })),
  tz: Type.String({ minLength: 1, default: DEFAULT_TIME_ZONE }),
  http: Type.Object({
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
    host: Type.String({ default: '0.0.0.0' }),
    bodyLimitBytes: Type.Integer({ minimum: 1024, default: 1_048_576 }),
    corsOrigins: Type.Array(Type.String(), { default: [] }),
    /**
     * Which reverse proxies' X-Forwarded-For to believe, so that the login guard throttles the real
     * client and not the proxy (config/README.md): false (default: the socket's address), true (any
     * peer: only when nothing reaches Keng but through the proxy), or the proxies' addresses / CIDRs.
     * (fastify ignores X-Forwarded-For for a bare hop count, so none is offered.)
     */
    trustProxy: Type.Union([Type.Boolean(), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })], { default: false }),
    /** GET /metrics and the details of /readyz without a token (behind a firewall that already restricts them). */
    openMetrics: Type.Boolean({ default: false }),
    /**
     * Requests per client address (IPv6: per /64) within a window; over it 429 KENG_ERR_RATE_LIMITED with
     * Retry-After. /healthz, /readyz, /metrics and the signed media links speakers fetch are not counted. 0 = off.
     */
    rateLimit: Type.Object({
      max: Type.Integer({ minimum: 0, default: 600 }),
      timeWindowSec: Type.Integer({ minimum: 1, maximum: 3600, default: 60 }),
    }, { default: {} }),
    /** Open connections (HTTP, socket.io) per client address; more are closed at once. 0 = no limit. */
    maxConnectionsPerIp: Type.Integer({ minimum: 0, default: 500 }),
    /** Connections and requests from 127.0.0.0/8 and ::1 are not limited (simulator, benchmarks, a local reverse proxy). */
    exemptLoopback: Type.Boolean({ default: true }),
  }, { default: {} }),
  mqtt: Type.Object({
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 1883 }),
    host: Type.String({ default: '0.0.0.0' }),
    /** Largest accepted PUBLISH payload; larger ones are refused and counted. */
    maxPayloadBytes: Type.Integer({ minimum: 256, maximum: 16_777_216, default: 262_144 }),
    /** Per-device sustained message rate (messages/second) and burst (token bucket); over it a device is slowed (flow control), never dropped. */
    rateLimitPerSec: Type.Number({ exclusiveMinimum: 0, default: 50 }),
    rateLimitBurst: Type.Integer({ minimum: 1, default: 500 }),
    /** Refused publishes within 60 s after which the device is disconnected. */
    abuseDisconnectAfter: Type.Integer({ minimum: 1, default: 20 }),
    /** Advice to devices (ThingsBoard getSessionLimits `maxInflightMessages`: their own QoS 1 window); not enforced. */
    maxInflightMessages: Type.Integer({ minimum: 1, default: 100 }),
    /** MQTT over TLS listener (same broker), opened only when tls.certFile and tls.keyFile are set. */
    tlsPort: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535, default: 8883 })),
    /** Open MQTT connections per client address (devices behind one NAT share one); more are closed at once. 0 = no limit. */
    maxConnectionsPerIp: Type.Integer({ minimum: 0, default: 1000 }),
    /** Connections from 127.0.0.0/8 and ::1 are not counted (simulator, benchmarks). */
    exemptLoopback: Type.Boolean({ default: true }),
    /** Device provision requests (`provision` login) per client address per minute; over it the answer is FAILURE, the key unchecked. */
    provisionRequestsPerMinute: Type.Integer({ minimum: 1, maximum: 10_000, default: 10 }),
    /**
     * Behind a TCP load balancer (docs/load-balancer.md): "required" = every MQTT connection (plain and TLS)
     * starts with a PROXY protocol header (v1 or v2) naming the device's address, sent by one of
     * trustedProxies; any other connection is closed. "off": no header is read (a header would be taken as MQTT and refused).
     */
    proxyProtocol: Type.Union([Type.Literal('off'), Type.Literal('required')], { default: 'off' }),
    /** Addresses / CIDR ranges of the load balancers allowed to send a PROXY header (only with proxyProtocol "required"). */
    trustedProxies: Type.Array(Type.String({ minLength: 1 }), { default: ['127.0.0.0/8', '::1'] }),
  }, { default: {} }),
  /**
   * TLS for HTTP (HTTPS on http.port) and MQTT (mqtt.tlsPort), when certFile
   * and keyFile are set (PEM files, read and checked at start; see src/tls.ts).
   */
  tls: Type.Object({
    certFile: Type.Optional(Type.String({ minLength: 1, description: 'PEM certificate, optionally followed by its chain (KENG_TLS_CERT_FILE)' })),
    keyFile: Type.Optional(Type.String({ minLength: 1, description: 'PEM private key of certFile, unencrypted (KENG_TLS_KEY_FILE)' })),
    caFile: Type.Optional(Type.String({ minLength: 1, description: 'PEM CA bundle used to complete the chain sent to clients (KENG_TLS_CA_FILE)' })),
  }, { default: {} }),
  telemetry: Type.Object({
    store: Type.Union([Type.Literal('embedded'), Type.Literal('influxdb')], { default: 'embedded' }),
    /** Readings older than this are refused (and the embedded store prunes them). */
    retentionDays: Type.Integer({ minimum: 1, default: 365 }),
    /** Spec: readings more than 5 minutes in the future are refused. */
    futureToleranceMs: Type.Integer({ minimum: 0, default: 300_000 }),
    /**
     * Group commit: while writes are under way and another may start, a batch gathers at most
     * this long before it goes too (0: at the next turn of the event loop). An idle writer never waits.
     */
    commitIntervalMs: Type.Integer({ minimum: 0, maximum: 1000, default: 0 }),
    /**
     * Group commit: once commits carry more than one message, the next one starts no sooner than
     * this after the last one started (at most ~330 disk syncs a second at 3). Under load the
     * batches grow instead of the commits, which costs less CPU per reading; a message waits at
     * most this long for it, and nothing is held after a commit of a single message (ingest/group-commit.ts).
     */
    commitSpacingMs: Type.Integer({ minimum: 0, maximum: 1000, default: 3 }),
    commitMaxReadings: Type.Integer({ minimum: 1, default: 20_000 }),
    /**
     * Batch writes that may be under way at once. With 1 (classic group commit), everything
     * that arrives while a commit runs goes in the next one, which starts as soon as the
     * broker's thread sees the commit finish (between two socket reads, not at the end of
     * its event-loop turn): the fewest, largest transactions, so the least writer CPU per
     * reading on a machine whose cores the broker and the writer share. More slots let the
     * writer thread find writes queued behind the one it commits (it merges them into one
     * transaction) without that hand-off.
     */
    commitMaxInFlight: Type.Integer({ minimum: 1, maximum: 16, default: 1 }),
    /** SQLite synchronous mode: 'full' survives power loss, 'normal' survives process crashes. */
    sync: Type.Union([Type.Literal('full'), Type.Literal('normal')], { default: 'full' }),
    /**
     * What deleting a device does to the readings it stored (docs/telemetry-storage.md "Deleting a device"):
     * 'keep' leaves them in the store until retention, never shown under a later device of the same id;
     * 'purge' also removes them (embedded store, InfluxDB queue and database, dead letters) in the background.
     */
    onDeviceDelete: Type.Union([Type.Literal('keep'), Type.Literal('purge')], { default: 'keep' }),
  }, { default: {} }),
  media: Type.Object({
    /** Largest accepted audio upload (413 above). */
    maxUploadBytes: Type.Integer({ minimum: 1024, default: 52_428_800 }),
    /** Lifetime of the signed media URLs handed to speakers. */
    signedUrlTtlSec: Type.Integer({ minimum: 30, maximum: 86_400, default: 900 }),
    /** Base URL speakers use to reach Keng's HTTP (e.g. http://10.0.0.2:8080); derived from http.host/port when absent. */
    publicBaseUrl: Type.Optional(Type.String({ minLength: 1 })),
    ffprobePath: Type.String({ default: '/usr/bin/ffprobe' }),
    ffmpegPath: Type.String({ default: '/usr/bin/ffmpeg' }),
    /** Longest accepted audio (422 above): checking decodes the whole file, so this bounds the work of one upload. */
    maxDurationSec: Type.Integer({ minimum: 1, maximum: 86_400, default: 3600 }),
    /** Uploads and TTS renders checked or encoded at once (each runs ffprobe/ffmpeg or espeak-ng); the others wait. */
    maxConcurrentJobs: Type.Integer({ minimum: 1, maximum: 32, default: 2 }),
    /** Requests that may wait for a free job; beyond that 503 KENG_ERR_MEDIA_BUSY with Retry-After. */
    maxQueuedJobs: Type.Integer({ minimum: 0, maximum: 1000, default: 8 }),
  }, { default: {} }),
  tts: Type.Object({
    espeakPath: Type.String({ default: '/usr/bin/espeak-ng' }),
    /** Words per minute. */
    speed: Type.Integer({ minimum: 80, maximum: 450, default: 150 }),
  }, { default: {} }),
  broadcast: Type.Object({
    /** A schedule occurrence missed while Keng was down still plays if it is at most this late; older ones are recorded as missed. */
    missedGraceSec: Type.Integer({ minimum: 0, maximum: 3600, default: 60 }),
    /** How long a broadcast stays valid for speakers that are offline when it starts (notAfter = start + this, or end of content). */
    offlineValiditySec: Type.Integer({ minimum: 0, default: 600 }),
    /**
     * A speaker that accepted a broadcast but has not reported its end (no playback events, e.g.
     * ThingsBoard firmware) this long after the content must have ended (notAfter + its length):
     * its target becomes `unconfirmed`.
     */
    playbackReportGraceSec: Type.Integer({ minimum: 0, maximum: 86_400, default: 60 }),
    /**
     * Hosts stream URLs may point at: names, `*.domain`, IP addresses, CIDR ranges, `*` (any public host).
     * Empty: any host whose addresses are all public. Private, loopback, link-local and unspecified
     * addresses are refused unless listed (docs in config/README.md).
     */
    streamHosts: Type.Array(Type.String({ minLength: 1, maxLength: 253 }), { default: [] }),
  }, { default: {} }),
  alerts: Type.Object({
    /** Loudspeaker volume of emergency alerts (0-100). */
    volume: Type.Integer({ minimum: 0, maximum: 100, default: 100 }),
    /** Seconds of attention tone before an alert's message. */
    toneSec: Type.Number({ minimum: 0.5, maximum: 30, default: 3 }),
    /** CAP `sender` of alerts raised here (CAP 1.2 §3.2.1: unique per originator, e.g. an address of the commune). */
    sender: Type.String({ minLength: 1, maxLength: 200, pattern: '^[^\\s,<>&]+$', default: 'keng@localhost' }),
    /** Serve active public alerts as a CAP Atom feed without login (GET /api/v1/alerts.atom). */
    publicFeed: Type.Boolean({ default: true }),
    /** How long loudspeakers may still start the notice of a cancelled alert. */
    cancelNoticeValiditySec: Type.Integer({ minimum: 10, maximum: 86_400, default: 600 }),
  }, { default: {} }),
  live: Type.Object({
    /** Batched live-feed clients (auth.batch) get at most one telemetry.batch per this many ms (docs/live-feed.md). */
    batchIntervalMs: Type.Integer({ minimum: 10, maximum: 10_000, default: 50 }),
    /** Most connected socket.io clients; further handshakes are refused. */
    maxClients: Type.Integer({ minimum: 1, default: 5000 }),
    /** A single-event client sent more telemetry events per second than this is throttled (docs/live-feed.md). */
    maxEventRate: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 200 }),
    /** Throttled clients get the latest value per device and field this often, ms. */
    throttleIntervalMs: Type.Integer({ minimum: 100, maximum: 60_000, default: 1000 }),
  }, { default: {} }),
  /** Logging in (src/auth/login-guard.ts, docs/roles.md "Logging in"). */
  auth: Type.Object({
    /** Failed logins in a row that lock an account for everyone (or, for the last usable admin, for the failing address only). */
    lockAfter: Type.Integer({ minimum: 3, maximum: 100, default: 10 }),
    /** First lock; each lock in a row lasts twice as long, up to lockMaxSec. */
    lockSec: Type.Integer({ minimum: 60, maximum: 86_400, default: 900 }),
    lockMaxSec: Type.Integer({ minimum: 60, maximum: 30 * 86_400, default: 86_400 }),
    /** Failed logins from one client address (any usernames) before each attempt from it must wait. */
    sourceFreeFailures: Type.Integer({ minimum: 0, maximum: 100, default: 5 }),
    /** Longest wait imposed on one client address. */
    sourceMaxDelaySec: Type.Integer({ minimum: 1, maximum: 3600, default: 300 }),
    /** A successful login makes its address a known one for the user this long (0: off). */
    knownSourceDays: Type.Integer({ minimum: 0, maximum: 365, default: 30 }),
  }, { default: {} }),
  /** Keng's own web app (src/web). */
  web: Type.Object({
    /**
     * Raster map tiles behind the speakers' map: an http(s) URL template with {z}, {x} and {y} (in any order)
     * (e.g. a commune's own tile server). Unset: the map is drawn from the speakers' positions alone,
     * which works without internet. The page's Content-Security-Policy allows this URL's host for images.
     */
    mapTileUrl: Type.Optional(Type.String({
      maxLength: 500, pattern: '^https?://[^/?#{}]+/(?=.*\\{z\\})(?=.*\\{x\\})(?=.*\\{y\\})',
      description: 'Map tiles, https://host/{z}/{x}/{y}.png (KENG_WEB_MAP_TILE_URL)',
    })),
    /** Shown under the map when tiles are on (tile services require it, e.g. "© OpenStreetMap"). */
    mapTileAttribution: Type.Optional(Type.String({ maxLength: 200 })),
  }, { default: {} }),
  /** The keyed audit chain and its anchors (docs/audit.md). */
  audit: Type.Object({
    /** The audit key itself, hex (64+ digits) or base64 (32+ bytes). Prefer the variable; never in a file you share. */
    key: Type.Optional(Type.String({ minLength: 1, description: 'Audit key, hex or base64 (KENG_AUDIT_KEY)' })),
    /** A file holding the audit key (hex or base64 text), e.g. on another disk or a secrets mount; default <dataDir>/audit-key. */
    keyFile: Type.Optional(Type.String({ minLength: 1, description: 'Audit key file (KENG_AUDIT_KEY_FILE)' })),
    /** A second append-only anchor file besides <dataDir>/audit-anchors.jsonl, e.g. on another disk. */
    anchorFile: Type.Optional(Type.String({ minLength: 1, description: 'Extra audit anchor file (KENG_AUDIT_ANCHOR_FILE)' })),
    /** The signed head is logged and appended to the anchor files this often (when it moved), and at start and stop. */
    anchorIntervalSec: Type.Integer({ minimum: 10, maximum: 86_400, default: 3600 }),
  }, { default: {} }),
  /** Modbus sensors polled over a TCP gateway or a serial line (src/modbus, firmware-protocols/modbus/README.md). */
  modbus: Type.Object({
    /** Longest wait for one answer (modbus-serial waits forever unless told); a slow or absent sensor costs its line this long. */
    requestTimeoutMs: Type.Integer({ minimum: 50, maximum: 60_000, default: 1000 }),
    /** Consecutive failed polls after which a device is shown offline (one success brings it back). */
    offlineAfterFailures: Type.Integer({ minimum: 1, maximum: 1000, default: 3 }),
    /** A failing device is polled less and less often (its interval doubled per failure) up to this many seconds apart. */
    maxBackoffSec: Type.Integer({ minimum: 1, maximum: 86_400, default: 300 }),
    /** Back-off bounds for reconnecting a lost TCP gateway or reopening a serial port. */
    reconnectMinMs: Type.Integer({ minimum: 10, maximum: 600_000, default: 500 }),
    reconnectMaxMs: Type.Integer({ minimum: 10, maximum: 3_600_000, default: 30_000 }),
    /** Serial devices a Modbus device may name (path prefixes): whoever registers sensors cannot make Keng open other files. */
    serialPathPrefixes: Type.Array(Type.String({ minLength: 2, pattern: '^/' }), { minItems: 1, default: ['/dev/tty', '/dev/serial/'] }),
  }, { default: {} }),
  /**
   * Cluster mode (docs/cluster.md): several Keng nodes on one PostgreSQL (state and the ingest commit) and one
   * Redis (a best-effort bus between nodes). Both URLs or neither: without them Keng is the embedded
   * single process (SQLite under dataDir). `nodeId` names this node (leases, logs); the host name by default.
   */
  cluster: Type.Object({
    databaseUrl: Type.Optional(Type.String({ minLength: 1 })),
    redisUrl: Type.Optional(Type.String({ minLength: 1 })),
    nodeId: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' })),
  }, { default: {} }),
  influx: Type.Object({
    url: Type.Optional(Type.String({ minLength: 1 })),
    api: Type.Union([Type.Literal('v2'), Type.Literal('v1')], { default: 'v2' }),
    token: Type.Optional(Type.String()),
    org: Type.Optional(Type.String()),
    bucket: Type.Optional(Type.String()),
    database: Type.String({ default: 'keng' }),
    username: Type.Optional(Type.String()),
    password: Type.Optional(Type.String()),
    measurement: Type.String({ default: 'telemetry' }),
    /** On-disk queue in front of InfluxDB: cap and warning threshold. */
    queueCapBytes: Type.Integer({ minimum: 1_048_576, default: 2_147_483_648 }),
    queueWarnRatio: Type.Number({ minimum: 0.1, maximum: 0.99, default: 0.8 }),
    batchLines: Type.Integer({ minimum: 1, default: 5000 }),
    timeoutMs: Type.Integer({ minimum: 100, default: 10_000 }),
    /** Retry back-off bounds while InfluxDB is unreachable (no give-up time: retries forever). */
    retryMinMs: Type.Integer({ minimum: 10, default: 500 }),
    retryMaxMs: Type.Integer({ minimum: 100, default: 30_000 }),
  }, { default: {} }),
});

export type Config = Static<typeof ConfigSchema>;

/** The schema's defaults alone (no file, no environment): what parts use when built without a config. */
export const CONFIG_DEFAULTS: Readonly<Config> = deepFreeze(Value.Default(ConfigSchema, {}) as Config);

export function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

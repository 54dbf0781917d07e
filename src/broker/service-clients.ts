/**
 * Read-only MQTT clients for machines: the provincial IOC attaches to the
 * broker as an ordinary MQTT client and receives its areas' device data
 * (documented in firmware-protocols/ioc-mqtt.md). ServiceClients holds the
 * broker's hooks for them (AedesBroker switches on the session kind and calls
 * in here for service sessions).
 *
 * - Credentials: an API token (`kengt_…`, POST /api/v1/tokens) as the
 *   username (password ignored), or username `token` with the API token as
 *   the password. The principal must have role `service` or `admin`; other
 *   roles are refused with CONNACK 5, unknown / revoked / expired tokens with
 *   CONNACK 4. A live connection is re-checked every `recheckMs`: a token
 *   revoked meanwhile loses its connection.
 * - Subscriptions: only `v1/devices/{+|D}/{telemetry,status,attributes}`
 *   (topics.ts serviceSubscription); a single-device filter outside the
 *   principal's areas (or of an unknown device) is refused like any other
 *   forbidden filter (SUBACK 0x80), so existence does not leak.
 * - Deliveries: checked per message against the device's CURRENT area
 *   (authorizeForward → null outside the scope).
 * - Publishes: every one is refused (dropped, counted as
 *   keng_mqtt_refused_total{op="publish",reason="read_only"}); the abuse rule
 *   of devices applies (too many within a minute → disconnected).
 * - Telemetry: devices' own telemetry publishes never reach subscribers (the
 *   broker sinks them). The server publishes each durable, normalised reading
 *   (bus 'telemetry') to `v1/devices/D/telemetry` as `{"ts": ms, "values": {...}}`,
 *   QoS 1, not retained, and only when a connected service client with a
 *   telemetry subscription covers the device's area (no cost otherwise).
 * - Persistent sessions (clean = false) are granted QoS 0 only: the broker
 *   keeps no offline queue for a machine that is away (its memory would grow
 *   with every reading); gaps are filled from the history API.
 */
import type { AedesPublishPacket, Client, PublishPacket, Subscription } from 'aedes';
import type { Gauge, Registry } from 'prom-client';
import { gaugeOn } from '../core/metrics.js';
import { API_TOKEN_PREFIX } from '../auth/api-tokens.js';
import type { Scope } from '../auth/policy.js';
import type { Principal } from '../auth/types.js';
import type { KengEvents } from '../core/events.js';
import { DEVICE_ID_RE, type DeviceAuthenticator } from '../devices/types.js';
import { authError, sink, type AuthDone, type BrokerContext, type PubDone } from './context.js';
import type { DeviceLimits } from './session.js';
import { TOPIC_ROOT, serviceDelivery, serviceSubscription } from './topics.js';

/** The username that announces "the password is an API token". */
export const SERVICE_TOKEN_USERNAME = 'token';
/** How often live service connections are re-authenticated (revoked tokens lose their connection). */
export const DEFAULT_SERVICE_RECHECK_MS = 30_000;
export const SERVICE_CONNECTIONS_METRIC = 'keng_mqtt_service_connections';

/** An authenticated machine principal, as the broker sees it. */
export interface ServicePrincipal {
  /** API token id (logs, client-id ownership). */
  id: string;
  role: 'service' | 'admin';
  /** May this principal read devices of area `area`? Called per delivery: keep it O(1). */
  inScope(area: string): boolean;
}

export type ServiceAuthResult =
  | { ok: true; principal: ServicePrincipal }
  | { ok: false; reason: 'bad_credentials' | 'role_not_allowed' };

/** What the broker needs to admit service clients (wired in app.ts from the accounts' token store). */
export interface ServiceAuthenticator {
  authenticate(token: string): ServiceAuthResult | Promise<ServiceAuthResult>;
  /** The current area of a device, or undefined when there is no such device. */
  deviceArea(deviceId: string): string | undefined;
}

/**
 * The API token in a CONNECT, or null when these are not service credentials
 * (then the device rules apply). Neither form takes a device's login away:
 * an API token (`kengt_` + 43 base64url characters, upper case included) is
 * not a valid device id, while a device id such as `kengt_pump-1` is; and a
 * device named `token` still logs in with its secret, since that form is
 * taken only when the password carries the prefix.
 */
export function serviceCredential(username: string, password: Buffer | undefined): string | null {
  if (username.startsWith(API_TOKEN_PREFIX) && !DEVICE_ID_RE.test(username)) return username;
  if (username === SERVICE_TOKEN_USERNAME && password !== undefined && password.length > API_TOKEN_PREFIX.length) {
    const p = password.toString('utf8');
    if (p.startsWith(API_TOKEN_PREFIX)) return p;
  }
  return null;
}

/**
 * Highest QoS a service client is granted: 1, or 0 for a persistent session
 * (no offline queue: module comment). SUBACK reports it (granted-qos.ts).
 */
export function serviceMaxQos(clean: boolean): 0 | 1 {
  return clean ? 1 : 0;
}

/** ServiceAuthenticator over a bearer Authenticator (the API token store), the policy's scope and the device registry. */
export function principalServiceAuthenticator(deps: {
  tokens: { authenticate(bearer: string): Principal | null | Promise<Principal | null> };
  policy: { scope(p: Principal): Scope };
  devices: { getDevice(id: string): { area: string } | null | undefined };
}): ServiceAuthenticator {
  return {
    async authenticate(token) {
      const p = await deps.tokens.authenticate(token);
      if (!p) return { ok: false, reason: 'bad_credentials' };
      if (p.role !== 'service' && p.role !== 'admin') return { ok: false, reason: 'role_not_allowed' };
      const scope = deps.policy.scope(p);
      return { ok: true, principal: { id: p.id, role: p.role, inScope: scope === 'all' ? () => true : (a) => scope.has(a) } };
    },
    deviceArea: (id) => deps.devices.getDevice(id)?.area ?? undefined,
  };
}

export class ServiceSession {
  readonly kind = 'service';
  registered = false;
  gone = false;
  /** Granted telemetry filters (the server publishes telemetry only while some session has one). */
  readonly telemetryFilters = new Set<string>();
  /**
   * `hooks`: the ServiceClients that admitted it. The broker reaches them through the
   * session: they exist only once a ServiceAuthenticator is set, and so does every service session.
   */
  constructor(
    readonly hooks: ServiceClients, readonly client: Client, public principal: ServicePrincipal, readonly token: string, readonly limits: DeviceLimits,
  ) {}
  /** Namespace of its client ids and key of its limits (never a valid device id: has a colon). */
  get owner(): string { return ownerKey(this.principal.id); }
}

export function ownerKey(principalId: string): string {
  return `service:${principalId}`;
}

/** The gauge of connected service clients (one per registry, shared by the brokers on it). */
export function serviceConnectionsGauge(r: Registry): Gauge {
  return gaugeOn(r, SERVICE_CONNECTIONS_METRIC, 'Connected read-only MQTT service clients (IOC)');
}

export interface ServiceClientsDeps {
  ctx: BrokerContext;
  auth: ServiceAuthenticator;
  /** A service client may not take a device's id as its client id. */
  devices: Pick<DeviceAuthenticator, 'isDevice'>;
  gauge: Gauge;
  recheckMs?: number;
}

/** Service sessions of one broker, and the broker's hooks for them. */
export class ServiceClients {
  private readonly live = new Set<ServiceSession>();
  private recheckTimer: NodeJS.Timeout | null = null;
  private rechecking = false;

  constructor(private readonly deps: ServiceClientsDeps) {}

  /** aedes `authenticate` for an API token: read-only client. CONNACK 5 for a token whose role may not. */
  authenticate(client: Client, token: string, done: AuthDone): void {
    const ctx = this.deps.ctx;
    this.verify(token).then((res) => {
      if (ctx.stopping || client.closed) { done(authError(3, 'connection closed'), null); return; }
      if (!res.ok) { ctx.refuseConnect(client, res.reason, res.reason === 'role_not_allowed' ? 5 : 4, done); return; }
      if (this.deps.devices.isDevice(client.id)) { ctx.refuseConnect(client, 'client_id_in_use', 2, done); return; }
      const owner = ownerKey(res.principal.id);
      // Service sessions live in their token's own namespace (a device id has no colon), so a
      // service client can neither take over a device's session nor another token's.
      client.id = `${owner}/${client.id}`;
      ctx.admit(this.add(client, res.principal, token, ctx.limitsFor(owner)), done);
    }, (err: unknown) => ctx.authUnavailable(client, err, 'service client authentication failed with an error', done));
  }

  private verify(token: string): Promise<ServiceAuthResult> {
    try { return Promise.resolve(this.deps.auth.authenticate(token)); } catch (err) { return Promise.reject(err); }
  }

  private add(client: Client, principal: ServicePrincipal, token: string, limits: DeviceLimits): ServiceSession {
    const s = new ServiceSession(this, client, principal, token, limits);
    this.live.add(s);
    if (!this.recheckTimer) {
      this.recheckTimer = setInterval(() => { void this.recheck(); }, this.deps.recheckMs ?? DEFAULT_SERVICE_RECHECK_MS);
      this.recheckTimer.unref();
    }
    return s;
  }

  /** aedes 'client': CONNACK about to go out. */
  registered(s: ServiceSession): void {
    if (s.gone || s.registered) return;
    s.registered = true;
    this.updateGauge();
    this.deps.ctx.logger.info({ tokenId: s.principal.id, role: s.principal.role, clientId: s.client.id }, 'mqtt service client connected');
  }

  /** First close signal. */
  gone(s: ServiceSession, cause: string): void {
    if (s.gone) return;
    s.gone = true;
    this.live.delete(s);
    if (s.registered) this.updateGauge();
    if (this.live.size === 0) this.stopRecheck();
    this.deps.ctx.logger.info({ tokenId: s.principal.id, clientId: s.client.id, cause }, 'mqtt service client disconnected');
  }

  /** Broker stop: forget everything. */
  clear(): void {
    this.live.clear();
    this.stopRecheck();
    this.deps.gauge.set(0);
  }

  /** aedes `authorizeSubscribe`: the (possibly adjusted) subscription, or null for a refused filter (granted 0x80). */
  authorizeSubscribe(s: ServiceSession, sub: Subscription): Subscription | null {
    const f = serviceSubscription(sub.topic);
    if (typeof f === 'string') return this.refuseSubscription(s, sub, f);
    if (f.deviceId !== undefined && !this.inScope(s, f.deviceId)) return this.refuseSubscription(s, sub, 'out_of_scope');
    if (f.kind === 'telemetry') s.telemetryFilters.add(sub.topic);
    // No offline queue for persistent sessions (module comment); QoS 2 is never offered. Restored
    // subscriptions are capped here; new ones already were, so SUBACK tells it (granted-qos.ts).
    sub.qos = Math.min(sub.qos, serviceMaxQos(s.client.clean)) as 0 | 1 | 2;
    return sub;
  }

  private refuseSubscription(s: ServiceSession, sub: Subscription, reason: string): null {
    this.deps.ctx.count('subscribe', reason);
    this.deps.ctx.logger.debug({ tokenId: s.principal.id, topic: sub.topic.slice(0, 200), reason }, 'service subscription refused');
    return null;
  }

  unsubscribed(s: ServiceSession, topics: string[]): void {
    for (const t of topics) s.telemetryFilters.delete(t);
  }

  /**
   * aedes `authorizeForward`: only the three device topics, only of devices in
   * the principal's scope (checked per message, against the device's current area).
   */
  forward(s: ServiceSession, packet: AedesPublishPacket): AedesPublishPacket | null {
    const d = serviceDelivery(packet.topic);
    // What the server publishes on `attributes` are shared attributes pushed to the device (settings), not device data.
    if (d === null || d.kind === 'attributes') return null;
    return this.inScope(s, d.deviceId!) ? packet : null;
  }

  /** An unknown device is out of every scope (existence does not leak). */
  private inScope(s: ServiceSession, deviceId: string): boolean {
    const area = this.deps.auth.deviceArea(deviceId);
    return area !== undefined && s.principal.inScope(area);
  }

  /** aedes `authorizePublish`: service clients are read-only, every publish (and will) is dropped, acknowledged and counted; abuse disconnects. */
  authorizePublish(s: ServiceSession, packet: PublishPacket, cb: PubDone): void {
    const ctx = this.deps.ctx;
    const topic = packet.topic;
    sink(packet);
    cb(null);
    const now = ctx.clock.now();
    ctx.count('publish', 'read_only');
    const fields = { tokenId: s.principal.id, clientId: s.client.id, topic: topic.length > 200 ? topic.slice(0, 200) : topic };
    const log = ctx.logger;
    if (s.limits.warn.allow(now)) log.warn(fields, 'service client publish refused: read-only (more within 1 min at debug)');
    else log.debug(fields, 'service client publish refused: read-only');
    s.limits.lastUsed = now;
    if (s.client.closed || !s.limits.abuse.hit(now)) return;
    s.limits.abuse.reset();
    ctx.count('publish', 'abuse_disconnect');
    log.warn({ tokenId: s.principal.id, clientId: s.client.id }, 'service client disconnected for repeated refused publishes');
    setImmediate(() => s.client.close());
  }

  /** Is some connected service client subscribed to telemetry and allowed to see `area`? O(service clients). */
  wantsTelemetry(area: string): boolean {
    for (const s of this.live) if (s.telemetryFilters.size > 0 && s.principal.inScope(area)) return true;
    return false;
  }

  /** Bus 'telemetry' (readings durable on disk) → `v1/devices/D/telemetry`, when anyone may receive it. */
  publishTelemetry(e: KengEvents['telemetry']): void {
    if (this.live.size === 0 || !this.wantsTelemetry(e.area)) return;
    const aedes = this.deps.ctx.aedes;
    if (!aedes || aedes.closed) return;
    const topic = `${TOPIC_ROOT}${e.deviceId}/telemetry`;
    const payload = Buffer.from(JSON.stringify({ ts: e.ts, values: e.values }), 'utf8');
    // Server publish (aedes.publish, bypassing authorizePublish).
    aedes.publish({ cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false }, (err) => {
      if (err) this.deps.ctx.logger.debug({ err, topic }, 'service telemetry publish failed');
    });
  }

  /** Re-authenticate live sessions: revoked or expired tokens are disconnected; scopes are refreshed. */
  async recheck(): Promise<void> {
    if (this.rechecking) return;
    this.rechecking = true;
    const { ctx } = this.deps;
    try {
      for (const s of [...this.live]) {
        if (s.gone || s.client.closed) continue;
        let res: ServiceAuthResult;
        try { res = await this.verify(s.token); } catch (err) {
          ctx.logger.warn({ err, tokenId: s.principal.id }, 'service client re-check failed; keeping the connection');
          continue;
        }
        if (res.ok) { s.principal = res.principal; continue; }
        ctx.count('connect', res.reason === 'bad_credentials' ? 'token_revoked' : res.reason);
        ctx.logger.warn({ tokenId: s.principal.id, clientId: s.client.id, reason: res.reason }, 'service client token no longer valid: disconnected');
        s.client.close();
      }
    } finally {
      this.rechecking = false;
    }
  }

  private updateGauge(): void {
    let n = 0;
    for (const s of this.live) if (s.registered) n++;
    this.deps.gauge.set(n);
  }

  private stopRecheck(): void {
    if (this.recheckTimer) clearInterval(this.recheckTimer);
    this.recheckTimer = null;
  }
}

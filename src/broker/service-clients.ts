/**
 * Read-only MQTT clients for machines: the provincial IOC attaches to the
 * broker as an ordinary MQTT client and receives its areas' device data
 * (documented in firmware-protocols/ioc-mqtt.md).
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
import type { AedesPublishPacket, Client, Subscription } from 'aedes';
import { Gauge, type Registry } from 'prom-client';
import { API_TOKEN_PREFIX } from '../auth/api-tokens.js';
import type { Scope } from '../auth/policy.js';
import type { Principal } from '../auth/types.js';
import type { KengEvents } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import { DEVICE_ID_RE } from '../devices/types.js';
import type { DeviceLimits } from './session.js';
import { TOPIC_ROOT, serviceDelivery, serviceSubscription, type TopicRefusal } from './topics.js';

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

/** ServiceAuthenticator over a bearer Authenticator (the API token store), the policy's scope and the device registry. */
export function principalServiceAuthenticator(deps: {
  tokens: { authenticate(bearer: string): Principal | null };
  policy: { scope(p: Principal): Scope };
  devices: { getDevice(id: string): { area: string } | null | undefined };
}): ServiceAuthenticator {
  return {
    authenticate(token) {
      const p = deps.tokens.authenticate(token);
      if (!p) return { ok: false, reason: 'bad_credentials' };
      if (p.role !== 'service' && p.role !== 'admin') return { ok: false, reason: 'role_not_allowed' };
      const scope = deps.policy.scope(p);
      return { ok: true, principal: { id: p.id, role: p.role, inScope: scope === 'all' ? () => true : (a) => scope.has(a) } };
    },
    deviceArea: (id) => deps.devices.getDevice(id)?.area ?? undefined,
  };
}

export class ServiceSession {
  registered = false;
  gone = false;
  /** Granted telemetry filters (the server publishes telemetry only while some session has one). */
  readonly telemetryFilters = new Set<string>();
  constructor(readonly client: Client, public principal: ServicePrincipal, readonly token: string, readonly limits: DeviceLimits) {}
  /** Namespace of its client ids and key of its limits (never a valid device id: has a colon). */
  get owner(): string { return ownerKey(this.principal.id); }
}

export function ownerKey(principalId: string): string {
  return `service:${principalId}`;
}

export interface ServiceClientsDeps {
  auth: ServiceAuthenticator;
  registry: Registry;
  logger: Logger;
  /** Count a refusal (keng_mqtt_refused_total{op,reason}); the broker's cached counters. */
  refused(op: 'connect' | 'publish' | 'subscribe', reason: string): void;
  /** Server publish (aedes.publish, bypassing authorizePublish). */
  publish(topic: string, payload: Buffer): void;
  recheckMs?: number;
}

/** Service sessions of one broker. The broker's hooks call in here for clients that are not devices. */
export class ServiceClients {
  private readonly byClient = new WeakMap<Client, ServiceSession>();
  private readonly live = new Set<ServiceSession>();
  private readonly gauge: Gauge;
  private recheckTimer: NodeJS.Timeout | null = null;
  private rechecking = false;

  constructor(private readonly deps: ServiceClientsDeps) {
    const r = deps.registry;
    this.gauge = (r.getSingleMetric(SERVICE_CONNECTIONS_METRIC) as Gauge | undefined)
      ?? new Gauge({ name: SERVICE_CONNECTIONS_METRIC, help: 'Connected read-only MQTT service clients (IOC)', registers: [r] });
  }

  get auth(): ServiceAuthenticator { return this.deps.auth; }

  get(client: Client): ServiceSession | undefined {
    return this.byClient.get(client);
  }

  authenticate(token: string): Promise<ServiceAuthResult> {
    try { return Promise.resolve(this.deps.auth.authenticate(token)); } catch (err) { return Promise.reject(err); }
  }

  add(client: Client, principal: ServicePrincipal, token: string, limits: DeviceLimits): ServiceSession {
    const s = new ServiceSession(client, principal, token, limits);
    this.byClient.set(client, s);
    this.live.add(s);
    if (!this.recheckTimer) {
      this.recheckTimer = setInterval(() => { void this.recheck(); }, this.deps.recheckMs ?? DEFAULT_SERVICE_RECHECK_MS);
      this.recheckTimer.unref();
    }
    return s;
  }

  /** aedes 'client': CONNACK about to go out. */
  registered(client: Client): void {
    const s = this.byClient.get(client);
    if (!s || s.gone || s.registered) return;
    s.registered = true;
    this.updateGauge();
    this.deps.logger.info({ tokenId: s.principal.id, role: s.principal.role, clientId: client.id }, 'mqtt service client connected');
  }

  /** First close signal; returns the session (once). */
  gone(client: Client, cause: string): ServiceSession | undefined {
    const s = this.byClient.get(client);
    if (!s || s.gone) return undefined;
    s.gone = true;
    this.live.delete(s);
    if (s.registered) this.updateGauge();
    if (this.live.size === 0) this.stopRecheck();
    this.deps.logger.info({ tokenId: s.principal.id, clientId: client.id, cause }, 'mqtt service client disconnected');
    return s;
  }

  /** Broker stop: forget everything. */
  clear(): void {
    this.live.clear();
    this.stopRecheck();
    this.gauge.set(0);
  }

  /** authorizeSubscribe for a service client: the (possibly adjusted) subscription, or a refusal reason. */
  subscribe(s: ServiceSession, sub: Subscription): Subscription | TopicRefusal | 'out_of_scope' {
    const f = serviceSubscription(sub.topic);
    if (typeof f === 'string') return f;
    if (f.deviceId !== undefined) {
      const area = this.deps.auth.deviceArea(f.deviceId);
      if (area === undefined || !s.principal.inScope(area)) return 'out_of_scope';
    }
    if (f.kind === 'telemetry') s.telemetryFilters.add(sub.topic);
    // No offline queue for persistent sessions (module comment); QoS 2 is never offered.
    sub.qos = s.client.clean ? (sub.qos > 1 ? 1 : sub.qos) : 0;
    return sub;
  }

  unsubscribed(s: ServiceSession, topics: string[]): void {
    for (const t of topics) s.telemetryFilters.delete(t);
  }

  /** authorizeForward: only the three device topics, only of devices in the principal's scope. */
  forward(s: ServiceSession, packet: AedesPublishPacket): AedesPublishPacket | null {
    const d = serviceDelivery(packet.topic);
    if (d === null) return null;
    const area = this.deps.auth.deviceArea(d.deviceId!);
    return area !== undefined && s.principal.inScope(area) ? packet : null;
  }

  /** A publish from a service client (always refused). True when the abuse rule says: disconnect. */
  refusePublish(s: ServiceSession, topic: string, now: number): boolean {
    this.deps.refused('publish', 'read_only');
    const fields = { tokenId: s.principal.id, clientId: s.client.id, topic: topic.length > 200 ? topic.slice(0, 200) : topic };
    const log = this.deps.logger;
    if (s.limits.warn.allow(now)) log.warn(fields, 'service client publish refused: read-only (more within 1 min at debug)');
    else log.debug(fields, 'service client publish refused: read-only');
    s.limits.lastUsed = now;
    if (s.client.closed || !s.limits.abuse.hit(now)) return false;
    s.limits.abuse.reset();
    this.deps.refused('publish', 'abuse_disconnect');
    log.warn({ tokenId: s.principal.id, clientId: s.client.id }, 'service client disconnected for repeated refused publishes');
    return true;
  }

  /** Is some connected service client subscribed to telemetry and allowed to see `area`? O(service clients). */
  wantsTelemetry(area: string): boolean {
    for (const s of this.live) if (s.telemetryFilters.size > 0 && s.principal.inScope(area)) return true;
    return false;
  }

  /** Bus 'telemetry' (readings durable on disk) → `v1/devices/D/telemetry`, when anyone may receive it. */
  publishTelemetry(e: KengEvents['telemetry']): void {
    if (this.live.size === 0 || !this.wantsTelemetry(e.area)) return;
    this.deps.publish(`${TOPIC_ROOT}${e.deviceId}/telemetry`, Buffer.from(JSON.stringify({ ts: e.ts, values: e.values }), 'utf8'));
  }

  /** Re-authenticate live sessions: revoked or expired tokens are disconnected; scopes are refreshed. */
  async recheck(): Promise<void> {
    if (this.rechecking) return;
    this.rechecking = true;
    try {
      for (const s of [...this.live]) {
        if (s.gone || s.client.closed) continue;
        let res: ServiceAuthResult;
        try { res = await this.authenticate(s.token); } catch (err) {
          this.deps.logger.warn({ err, tokenId: s.principal.id }, 'service client re-check failed; keeping the connection');
          continue;
        }
        if (res.ok) { s.principal = res.principal; continue; }
        this.deps.refused('connect', res.reason === 'bad_credentials' ? 'token_revoked' : res.reason);
        this.deps.logger.warn({ tokenId: s.principal.id, clientId: s.client.id, reason: res.reason }, 'service client token no longer valid: disconnected');
        s.client.close();
      }
    } finally {
      this.rechecking = false;
    }
  }

  private updateGauge(): void {
    let n = 0;
    for (const s of this.live) if (s.registered) n++;
    this.gauge.set(n);
  }

  private stopRecheck(): void {
    if (this.recheckTimer) clearInterval(this.recheckTimer);
    this.recheckTimer = null;
  }
}

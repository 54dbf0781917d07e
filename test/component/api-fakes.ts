/**
 * Small in-memory fakes of the registry, telemetry store and broker, for
 * testing the API server alone with fastify.inject(). Not the real modules:
 * just enough behaviour for the routes.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { loadConfig, type Config, type DeepPartial } from '../../src/config/index.js';
import { Errors, EventBus, Metrics, createLogger, type Scalar } from '../../src/core/index.js';
import type { CredentialKind, DeviceChanges, DeviceFilter, DeviceRegistryApi, NewArea, NewDevice, DeviceCredentials } from '../../src/devices/registry-types.js';
import type { Area, Device, DeviceView, LatestValue } from '../../src/devices/types.js';
import type { HistoryPoint, HistoryQuery, TelemetryRecord, TelemetryStore, WriteResult } from '../../src/storage/telemetry/types.js';
import type { BrokerPort } from '../../src/broker/types.js';
import { AdminAuth, AuthenticatorChain, Policy } from '../../src/auth/index.js';
import { ApiServer, type ApiExtension } from '../../src/api/index.js';
import type { Authenticator } from '../../src/auth/index.js';
import { NOOP_AUDIT, type AuditRecorder } from '../../src/audit/index.js';

export const ADMIN = 'fake-admin-token-0123456789abcdef';

export class FakeRegistry implements DeviceRegistryApi {
  areas = new Map<string, Area>();
  devices = new Map<string, Device>();
  online = new Map<string, boolean>();
  lastSeen = new Map<string, number>();
  attrs = new Map<string, Record<string, unknown>>();
  latestValues = new Map<string, Record<string, LatestValue>>();
  constructor(private readonly now: () => number = () => Date.now()) {}

  async createArea(a: NewArea): Promise<Area> {
    if (this.areas.has(a.code)) throw Errors.AREA_EXISTS(a.code);
    const area: Area = { code: a.code, name: a.name, level: a.level, parent: a.parent ?? null, createdAt: this.now() };
    this.areas.set(a.code, area);
    return area;
  }
  listAreas(): Area[] { return [...this.areas.values()]; }
  getArea(code: string): Area | undefined { return this.areas.get(code); }
  subtree(code: string): string[] {
    if (!this.areas.has(code)) return [];
    const out = [code];
    for (const a of this.areas.values()) if (a.parent === code) out.push(...this.subtree(a.code));
    return out;
  }
  async createDevice(d: NewDevice): Promise<{ device: Device; credentials: DeviceCredentials }> {
    if (this.devices.has(d.id)) throw Errors.DEVICE_EXISTS(d.id);
    if (!this.areas.has(d.area)) throw Errors.NOT_FOUND(`Area "${d.area}"`);
    const device: Device = {
      id: d.id, kind: d.kind, name: d.name, area: d.area, location: d.location ?? null, model: d.model ?? null,
      enabled: true, createdAt: this.now(), historyFrom: null,
    };
    this.devices.set(d.id, device);
    return { device, credentials: { secret: randomBytes(16).toString('hex'), accessToken: randomBytes(12).toString('hex') } };
  }
  getDevice(id: string): Device | undefined { return this.devices.get(id); }
  listDevices(f: DeviceFilter = {}): Device[] {
    const inArea = f.area !== undefined ? new Set(this.subtree(f.area)) : undefined;
    return [...this.devices.values()].filter((d) => (!inArea || inArea.has(d.area))
      && (f.kind === undefined || d.kind === f.kind) && (f.online === undefined || this.isOnline(d.id) === f.online));
  }
  async deleteDevice(id: string): Promise<boolean> { return this.devices.delete(id); }
  async updateDevice(id: string, c: DeviceChanges): Promise<Device | undefined> {
    const d = this.devices.get(id);
    if (!d) return undefined;
    if (c.area !== undefined && !this.areas.has(c.area)) throw Errors.NOT_FOUND(`Area "${c.area}"`);
    const next: Device = { ...d, ...c };
    this.devices.set(id, next);
    return next;
  }
  async rotateCredential(id: string, _kind: CredentialKind): Promise<string | undefined> {
    return this.devices.has(id) ? randomBytes(16).toString('hex') : undefined;
  }
  view(id: string): DeviceView | undefined {
    const d = this.devices.get(id);
    if (!d) return undefined;
    return { ...d, online: this.isOnline(id), lastSeen: this.lastSeen.get(id) ?? null, attributes: this.attributes(id), latest: this.latest(id) };
  }
  views(f?: DeviceFilter): DeviceView[] { return this.listDevices(f).map((d) => this.view(d.id)!); }
  setOnline(id: string, online: boolean, at: number): void { this.online.set(id, online); this.lastSeen.set(id, at); }
  touch(id: string, at: number): void { this.lastSeen.set(id, at); }
  isOnline(id: string): boolean { return this.online.get(id) ?? false; }
  isOnlineAnywhere(id: string): boolean { return this.isOnline(id); }
  mergeAttributes(id: string, a: Record<string, unknown>): void { this.attrs.set(id, { ...this.attributes(id), ...a }); }
  attributes(id: string): Record<string, unknown> { return this.attrs.get(id) ?? {}; }
  updateLatest(id: string, ts: number, values: Record<string, Scalar>): void {
    const cur = this.latest(id);
    for (const [k, v] of Object.entries(values)) if (!cur[k] || cur[k]!.ts <= ts) cur[k] = { ts, value: v };
    this.latestValues.set(id, cur);
  }
  latest(id: string): Record<string, LatestValue> { return { ...(this.latestValues.get(id) ?? {}) }; }
}

export class FakeStore implements TelemetryStore {
  readonly name = 'telemetry';
  readonly kind = 'embedded' as const;
  records: TelemetryRecord[] = [];
  queries: HistoryQuery[] = [];
  healthy = true;
  failQueries = false;
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  async writeBatch(records: TelemetryRecord[]): Promise<WriteResult> { this.records.push(...records); return { written: records.length, duplicates: 0 }; }
  async health(): Promise<{ ok: boolean; detail: Record<string, unknown> }> { return { ok: this.healthy, detail: { disk: this.healthy ? 'ok' : 'read-only' } }; }
  async drain(): Promise<boolean> { return true; }
  async query(q: HistoryQuery): Promise<HistoryPoint[]> {
    this.queries.push(q);
    if (this.failQueries) throw Errors.STORE_UNAVAILABLE('fake outage');
    const pick = (v: Record<string, Scalar>): Record<string, Scalar> =>
      q.fields.length ? Object.fromEntries(Object.entries(v).filter(([k]) => q.fields.includes(k))) : { ...v };
    const rows = this.records.filter((r) => r.deviceId === q.deviceId && r.ts >= q.from && r.ts < q.to)
      .sort((a, b) => a.ts - b.ts).map((r) => ({ ts: r.ts, values: pick(r.values) })).filter((r) => Object.keys(r.values).length);
    if (!q.everyMs) return q.limit ? rows.slice(0, q.limit) : rows;
    const windows = new Map<number, Record<string, number[]>>();
    for (const r of rows) {
      const w = Math.floor(r.ts / q.everyMs) * q.everyMs;
      const acc = windows.get(w) ?? {};
      for (const [k, v] of Object.entries(r.values)) if (typeof v === 'number') (acc[k] ??= []).push(v);
      windows.set(w, acc);
    }
    return [...windows.entries()].map(([ts, acc]) => ({
      ts, values: Object.fromEntries(Object.entries(acc).map(([k, xs]) => [k, aggregate(q.agg ?? 'mean', xs)])),
    }));
  }
}

function aggregate(agg: NonNullable<HistoryQuery['agg']>, xs: number[]): number {
  switch (agg) {
    case 'mean': return xs.reduce((a, b) => a + b, 0) / xs.length;
    case 'min': return Math.min(...xs);
    case 'max': return Math.max(...xs);
    case 'sum': return xs.reduce((a, b) => a + b, 0);
    case 'count': return xs.length;
    case 'last': return xs[xs.length - 1]!;
  }
}

export class FakeBroker implements BrokerPort {
  readonly name = 'broker';
  isReady = true;
  kicked: string[] = [];
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  async publish(): Promise<void> {}
  async deliverTo(): Promise<boolean> { return false; }
  isConnected(): boolean { return false; }
  credentialOf(): 'secret' | 'token' | null { return null; }
  connectedCount(): number { return 3; }
  kick(id: string, credential?: 'secret' | 'token'): void { this.kicked.push(credential ? `${id}:${credential}` : id); }
  forget(id: string): void { this.kicked.push(id); }
  address(): { mqtt: { host: string; port: number } } { return { mqtt: { host: '127.0.0.1', port: 1883 } }; }
  ready(): boolean { return this.isReady; }
}

/** Collects log lines (JSON) so tests can assert what was logged. */
export class LogSink extends Writable {
  lines: Array<Record<string, unknown>> = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    for (const l of chunk.toString().split('\n').filter(Boolean)) this.lines.push(JSON.parse(l) as Record<string, unknown>);
    cb();
  }
}

export interface Harness {
  api: ApiServer;
  registry: FakeRegistry;
  store: FakeStore;
  broker: FakeBroker;
  metrics: Metrics;
  logs: LogSink;
  clock: { now(): number; set(ms: number): void };
  inject(method: string, url: string, body?: unknown, token?: string | null, headers?: Record<string, string>): Promise<{ status: number; body: any; headers: Record<string, unknown>; text: string }>;
  close(): Promise<void>;
}

/** What the app wires for an API: the admin token first in the chain, the policy over the registry, an audit sink. */
export function access(registry: DeviceRegistryApi, adminAuth: Authenticator, more: Authenticator[] = [], audit: AuditRecorder = NOOP_AUDIT): { authenticator: AuthenticatorChain; policy: Policy; audit: AuditRecorder } {
  return { authenticator: new AuthenticatorChain([adminAuth, ...more]), policy: new Policy(registry), audit };
}

/** An ApiServer over the fakes, built (not listening). */
export async function harness(overrides: DeepPartial<Config> = {}, opts: { now?: number; authenticators?: Authenticator[]; extensions?: ApiExtension[] } = {}): Promise<Harness> {
  let now = opts.now ?? Date.parse('2025-11-30T12:00:00Z');
  const clock = { now: () => now, set: (ms: number) => { now = ms; } };
  const config = loadConfig({ env: {}, overrides: { dataDir: '/tmp/keng-api-test-unused', adminToken: ADMIN, logLevel: 'debug', ...overrides } });
  const logs = new LogSink();
  const logger = createLogger('debug', { destination: logs });
  const registry = new FakeRegistry(clock.now);
  const store = new FakeStore();
  const broker = new FakeBroker();
  const metrics = new Metrics({ defaultMetrics: false });
  const adminAuth = new AdminAuth({ dataDir: config.dataDir, adminToken: config.adminToken, logger });
  await adminAuth.start();
  const api = new ApiServer({
    config, registry, store, broker, ...access(registry, adminAuth, opts.authenticators), bus: new EventBus(), metrics, logger, clock,
  });
  for (const e of opts.extensions ?? []) api.extend(e);
  const app = await api.build();
  return {
    api, registry, store, broker, metrics, logs, clock,
    async inject(method, url, body, token = ADMIN, headers = {}) {
      const res = await app.inject({
        method: method as 'GET', url,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        payload: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      let parsed: unknown;
      try { parsed = res.body ? JSON.parse(res.body) : undefined; } catch { parsed = undefined; }
      return { status: res.statusCode, body: parsed, headers: res.headers as Record<string, unknown>, text: res.body };
    },
    async close() { await api.stop(); },
  };
}

import { readFileSync } from 'node:fs';
import { Value } from 'typebox/value';
import { ConfigSchema, deepFreeze, type Config } from './schema.js';
import { ENV_BINDINGS, type EnvBinding } from './env.js';
import { HostAllowList } from '../core/host-allow-list.js';
import { AddressSet } from '../core/net-ranges.js';
import { splitPgUrl } from '../core/pg-url.js';

/** A setting is missing or wrong: the message names it, in one line. */
export class ConfigError extends Error {
  readonly code = 'KENG_ERR_CONFIG';
  constructor(message: string) { super(message); this.name = 'ConfigError'; }
}

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

export interface LoadOptions {
  env?: Record<string, string | undefined>;
  /** Applied after file and environment (tests, CLI flags). */
  overrides?: DeepPartial<Config>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function merge(target: Record<string, unknown>, src: Record<string, unknown>): Record<string, unknown> {
  for (const [k, v] of Object.entries(src)) {
    if (v === undefined) continue;
    if (isObject(v) && isObject(target[k])) merge(target[k] as Record<string, unknown>, v);
    else target[k] = isObject(v) ? merge({}, v) : v;
  }
  return target;
}

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur = obj;
  for (const p of parts.slice(0, -1)) {
    if (!isObject(cur[p])) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]!] = value;
}

function parseEnv(b: EnvBinding, raw: string): unknown {
  switch (b.type) {
    case 'string': return raw;
    case 'list': return raw.split(',').map((s) => s.trim()).filter(Boolean);
    case 'int': {
      if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(`Invalid setting ${b.name}=${JSON.stringify(raw)}: expected an integer`);
      return Number(raw);
    }
    case 'proxy': {
      // http.trustProxy: true/false, or a comma-separated list of proxy addresses / CIDRs.
      const v = raw.trim();
      if (v === 'true' || v === 'false') return v === 'true';
      return v.split(',').map((s) => s.trim()).filter(Boolean);
    }
    case 'bool': {
      const v = raw.trim().toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(v)) return true;
      if (['false', '0', 'no', 'off'].includes(v)) return false;
      throw new ConfigError(`Invalid setting ${b.name}=${JSON.stringify(raw)}: expected true or false`);
    }
    case 'number': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) throw new ConfigError(`Invalid setting ${b.name}=${JSON.stringify(raw)}: expected a number`);
      return n;
    }
  }
}


function envNameFor(path: string): string {
  const b = ENV_BINDINGS.find((e) => e.path === path);
  return b ? `${b.name} (${path})` : path;
}

/** Defaults, then the KENG_CONFIG file, then KENG_* variables, then overrides; validated and frozen. */
export function loadConfig(opts: LoadOptions = {}): Readonly<Config> {
  const env = opts.env ?? process.env;
  const raw: Record<string, unknown> = {};
  const file = env.KENG_CONFIG;
  if (file) {
    let text: string;
    try { text = readFileSync(file, 'utf8'); } catch (e) {
      throw new ConfigError(`Invalid setting KENG_CONFIG=${file}: cannot read file (${(e as Error).message})`);
    }
    let parsed: unknown;
    try { parsed = JSON.parse(text); } catch (e) {
      throw new ConfigError(`Invalid setting KENG_CONFIG=${file}: not valid JSON (${(e as Error).message})`);
    }
    if (!isObject(parsed)) throw new ConfigError(`Invalid setting KENG_CONFIG=${file}: expected a JSON object`);
    merge(raw, parsed);
  }
  for (const b of ENV_BINDINGS) {
    const v = env[b.name];
    if (v !== undefined && v !== '') setPath(raw, b.path, parseEnv(b, v));
  }
  if (opts.overrides) merge(raw, opts.overrides as Record<string, unknown>);

  const withDefaults = Value.Default(ConfigSchema, raw) as Record<string, unknown>;
  // Unknown keys are mistakes (typos in a config file): name the first one.
  const unknown = findUnknown(ConfigSchema as unknown as SchemaNode, withDefaults, '');
  if (unknown) throw new ConfigError(`Invalid setting ${unknown}: unknown setting`);
  if (!Value.Check(ConfigSchema, withDefaults)) {
    const first = [...Value.Errors(ConfigSchema, withDefaults)][0] as { instancePath?: string; message?: string } | undefined;
    const path = (first?.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
    const node = schemaAt(ConfigSchema as unknown as SchemaNode, path);
    const allowed = node?.anyOf?.every((n) => n.const !== undefined) ? node.anyOf.map((n) => String(n.const)) : undefined;
    const got = JSON.stringify(valueAt(withDefaults, path));
    const why = allowed ? `must be one of ${allowed.join(', ')} (got ${got})` : `${first?.message ?? 'invalid value'} (got ${got})`;
    throw new ConfigError(`Invalid setting ${envNameFor(path) || '(root)'}: ${why}`);
  }
  const cfg = withDefaults as unknown as Config;
  crossCheck(cfg);
  return deepFreeze(cfg);
}

interface SchemaNode { type?: string; const?: unknown; anyOf?: SchemaNode[]; properties?: Record<string, SchemaNode> }

function schemaAt(schema: SchemaNode, path: string): SchemaNode | undefined {
  let cur: SchemaNode | undefined = schema;
  for (const p of path.split('.').filter(Boolean)) cur = cur?.properties?.[p];
  return cur;
}

function valueAt(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const p of path.split('.').filter(Boolean)) cur = isObject(cur) ? cur[p] : undefined;
  return cur;
}

function findUnknown(schema: SchemaNode, value: unknown, prefix: string): string | undefined {
  if (schema.type !== 'object' || !schema.properties || !isObject(value)) return undefined;
  for (const [k, v] of Object.entries(value)) {
    const sub = schema.properties[k];
    const path = prefix ? `${prefix}.${k}` : k;
    if (!sub) return path;
    const deeper = findUnknown(sub, v, path);
    if (deeper) return deeper;
  }
  return undefined;
}

function crossCheck(cfg: Config): void {
  if (cfg.telemetry.store === 'influxdb') {
    const i = cfg.influx;
    if (!i.url) throw new ConfigError('Missing setting KENG_INFLUX_URL: required when KENG_TELEMETRY_STORE=influxdb');
    try { new URL(i.url); } catch { throw new ConfigError(`Invalid setting KENG_INFLUX_URL=${i.url}: not a URL`); }
    if (i.api === 'v2') {
      if (!i.token) throw new ConfigError('Missing setting KENG_INFLUX_TOKEN: required with KENG_INFLUX_API=v2');
      if (!i.org) throw new ConfigError('Missing setting KENG_INFLUX_ORG: required with KENG_INFLUX_API=v2');
      if (!i.bucket) throw new ConfigError('Missing setting KENG_INFLUX_BUCKET: required with KENG_INFLUX_API=v2');
    }
  }
  const c = cfg.cluster;
  if (c.databaseUrl !== undefined || c.redisUrl !== undefined) {
    // Half a cluster would look like one while silently keeping state on this machine only.
    if (c.databaseUrl === undefined) throw new ConfigError('Missing setting KENG_DATABASE_URL: cluster mode needs it with KENG_REDIS_URL');
    if (c.redisUrl === undefined) throw new ConfigError('Missing setting KENG_REDIS_URL: cluster mode needs it with KENG_DATABASE_URL');
    checkUrl('KENG_DATABASE_URL', c.databaseUrl, ['postgres:', 'postgresql:']);
    checkUrl('KENG_REDIS_URL', c.redisUrl, ['redis:', 'rediss:']);
    // telemetry.store = influxdb is accepted: readings are committed to a PostgreSQL outbox that every
    // node forwards from (pg-influx-store.ts), not to a file under one node's dataDir.
  }
  try { new Intl.DateTimeFormat('en', { timeZone: cfg.tz }); } catch {
    throw new ConfigError(`Invalid setting KENG_TZ=${cfg.tz}: unknown time zone`);
  }
  if (cfg.audit.key !== undefined && cfg.audit.keyFile !== undefined) {
    throw new ConfigError('Invalid setting KENG_AUDIT_KEY (audit.key): set either the key or audit.keyFile (KENG_AUDIT_KEY_FILE), not both');
  }
  if (cfg.influx.retryMinMs > cfg.influx.retryMaxMs) throw new ConfigError('Invalid setting influx.retryMinMs: larger than influx.retryMaxMs');
  if (cfg.auth.lockSec > cfg.auth.lockMaxSec) throw new ConfigError('Invalid setting auth.lockSec: larger than auth.lockMaxSec');
  const proxies = new AddressSet();
  const badProxy = cfg.mqtt.trustedProxies.find((p) => !proxies.add(p));
  if (badProxy !== undefined) throw new ConfigError(`Invalid setting ${envNameFor('mqtt.trustedProxies')}: ${JSON.stringify(badProxy)} is not an IP address or CIDR range`);
  const hosts = HostAllowList.parse(cfg.broadcast.streamHosts);
  if (!hosts.ok) {
    throw new ConfigError(`Invalid setting ${envNameFor('broadcast.streamHosts')}: ${JSON.stringify(hosts.bad)} is not a host name, *.domain, IP address, CIDR range or *`);
  }
}

/** A URL setting with one of `protocols`; the message never repeats the URL (it may hold a password). */
function checkUrl(name: string, value: string, protocols: string[]): void {
  // PostgreSQL URLs may list several hosts (postgres://u@db1:5432,db2:5432/keng): each one must read as a URL.
  let urls: string[];
  try { urls = protocols.includes('postgres:') ? splitPgUrl(value) : [value]; } catch { throw new ConfigError(`Invalid setting ${name}: not a URL`); }
  for (const one of urls) {
    let u: URL;
    try { u = new URL(one); } catch { throw new ConfigError(`Invalid setting ${name}: not a URL`); }
    if (!protocols.includes(u.protocol)) throw new ConfigError(`Invalid setting ${name}: expected a ${protocols.map((p) => p + '//').join(' or ')} URL`);
  }
}

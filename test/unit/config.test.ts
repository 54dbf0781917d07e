import { describe, it, expect } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, ConfigError } from '../../src/config/index.js';

function err(env: Record<string, string>): string {
  try { loadConfig({ env }); } catch (e) { expect(e).toBeInstanceOf(ConfigError); return (e as Error).message; }
  throw new Error('expected a ConfigError');
}

describe('settings', () => {
  it('has the spec defaults', () => {
    const c = loadConfig({ env: {} });
    expect(c.dataDir).toBe('./data');
    expect(c.http).toMatchObject({ port: 8080, host: '0.0.0.0' });
    expect(c.mqtt).toMatchObject({ port: 1883, host: '0.0.0.0' });
    expect(c.tz).toBe('Asia/Ho_Chi_Minh');
    expect(c.telemetry.store).toBe('embedded');
    expect(c.influx.api).toBe('v2');
    expect(c.influx.database).toBe('keng');
    expect(c.logLevel).toBe('info');
    expect(c.adminToken).toBeUndefined();
  });

  it('layers defaults < file < environment < overrides, and freezes the result', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keng-cfg-'));
    const file = path.join(dir, 'keng.json');
    writeFileSync(file, JSON.stringify({ http: { port: 9000, host: '127.0.0.1' }, mqtt: { port: 1999 }, tz: 'Asia/Bangkok' }));
    const c = loadConfig({ env: { KENG_CONFIG: file, KENG_MQTT_PORT: '2883' }, overrides: { logLevel: 'warn' } });
    expect(c.http.port).toBe(9000);
    expect(c.http.host).toBe('127.0.0.1');
    expect(c.mqtt.port).toBe(2883);
    expect(c.tz).toBe('Asia/Bangkok');
    expect(c.logLevel).toBe('warn');
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.http)).toBe(true);
    expect(() => { (c.http as { port: number }).port = 1; }).toThrow();
  });

  it('stops with one line naming the bad or missing setting', () => {
    expect(err({ KENG_HTTP_PORT: 'abc' })).toMatch(/^Invalid setting KENG_HTTP_PORT/);
    expect(err({ KENG_HTTP_PORT: '70000' })).toMatch(/KENG_HTTP_PORT/);
    expect(err({ KENG_TELEMETRY_STORE: 'mongo' })).toMatch(/KENG_TELEMETRY_STORE.*embedded, influxdb/);
    expect(err({ KENG_TELEMETRY_STORE: 'influxdb' })).toMatch(/^Missing setting KENG_INFLUX_URL/);
    expect(err({ KENG_TELEMETRY_STORE: 'influxdb', KENG_INFLUX_URL: 'http://x:8086' })).toMatch(/KENG_INFLUX_TOKEN/);
    expect(err({ KENG_TELEMETRY_STORE: 'influxdb', KENG_INFLUX_URL: 'not a url', KENG_INFLUX_API: 'v1' })).toMatch(/KENG_INFLUX_URL/);
    const cluster = { KENG_DATABASE_URL: 'postgres://keng@db/keng', KENG_REDIS_URL: 'redis://r:6379' };
    // InfluxDB in cluster mode goes through the PostgreSQL outbox; its own settings are still checked.
    expect(loadConfig({ env: { ...cluster, KENG_TELEMETRY_STORE: 'influxdb', KENG_INFLUX_URL: 'http://x:8086', KENG_INFLUX_API: 'v1' } }).telemetry.store).toBe('influxdb');
    expect(err({ ...cluster, KENG_TELEMETRY_STORE: 'influxdb' })).toMatch(/^Missing setting KENG_INFLUX_URL/);
    expect(loadConfig({ env: cluster }).cluster.databaseUrl).toBe(cluster.KENG_DATABASE_URL);
    // Several hosts (failover: Keng uses whichever is the primary); each must read as a postgres URL.
    expect(loadConfig({ env: { ...cluster, KENG_DATABASE_URL: 'postgres://keng:pw@db1:5432,db2:5432/keng' } }).cluster.databaseUrl).toMatch(/db1:5432,db2/);
    expect(err({ ...cluster, KENG_DATABASE_URL: 'postgres://db1,,db2/keng' })).toMatch(/KENG_DATABASE_URL: not a URL/);
    expect(err({ ...cluster, KENG_DATABASE_URL: 'mysql://db1,db2/keng' })).toMatch(/KENG_DATABASE_URL: expected a postgres/);
    expect(err({ KENG_TZ: 'Mars/Olympus' })).toMatch(/KENG_TZ/);
    expect(err({ KENG_LOG_LEVEL: 'loud' })).toMatch(/KENG_LOG_LEVEL/);
    expect(err({ KENG_ADMIN_TOKEN: 'short' })).toMatch(/KENG_ADMIN_TOKEN/);
    expect(err({ KENG_CONFIG: '/nonexistent/keng.json' })).toMatch(/KENG_CONFIG/);
    for (const m of [err({ KENG_HTTP_PORT: 'abc' }), err({ KENG_TZ: 'X' })]) expect(m.split('\n')).toHaveLength(1);
  });

  it('safe defaults: /metrics behind a token, limits on, any public stream host; boolean, list and entry checks', () => {
    const c = loadConfig({ env: {} });
    expect(c.http).toMatchObject({ openMetrics: false, rateLimit: { max: 600, timeWindowSec: 60 }, maxConnectionsPerIp: 500, exemptLoopback: true });
    expect(c.mqtt).toMatchObject({ maxConnectionsPerIp: 1000, exemptLoopback: true });
    expect(c.broadcast.streamHosts).toEqual([]);
    const set = loadConfig({ env: {
      KENG_HTTP_OPEN_METRICS: 'true', KENG_HTTP_RATE_LIMIT_MAX: '0', KENG_HTTP_MAX_CONNECTIONS_PER_IP: '50', KENG_MQTT_MAX_CONNECTIONS_PER_IP: '20',
      KENG_BROADCAST_STREAM_HOSTS: '*, 192.168.1.20, 10.10.0.0/16, *.vov.vn, [fd00::5], radio.xã.vn',
    } });
    expect(set.http).toMatchObject({ openMetrics: true, rateLimit: { max: 0 }, maxConnectionsPerIp: 50 });
    expect(set.mqtt.maxConnectionsPerIp).toBe(20);
    expect(set.broadcast.streamHosts).toHaveLength(6);
    expect(loadConfig({ env: { KENG_HTTP_OPEN_METRICS: '0' } }).http.openMetrics).toBe(false);
    expect(err({ KENG_HTTP_OPEN_METRICS: 'sometimes' })).toMatch(/^Invalid setting KENG_HTTP_OPEN_METRICS="sometimes": expected true or false$/);
    for (const bad of ['radio .vn', 'http://radio.vn', '10.0.0.0/33', '-radio.vn', '*.']) {
      expect(err({ KENG_BROADCAST_STREAM_HOSTS: bad })).toMatch(/^Invalid setting KENG_BROADCAST_STREAM_HOSTS \(broadcast.streamHosts\): .* is not a host name/);
    }
  });

  it('PROXY protocol on the MQTT listener: off by default, loopback trusted; required with a list of proxies; bad entries named', () => {
    expect(loadConfig({ env: {} }).mqtt).toMatchObject({ proxyProtocol: 'off', trustedProxies: ['127.0.0.0/8', '::1'] });
    const c = loadConfig({ env: { KENG_MQTT_PROXY_PROTOCOL: 'required', KENG_MQTT_TRUSTED_PROXIES: '10.0.0.5, 10.1.0.0/16,fd00::/8' } });
    expect(c.mqtt).toMatchObject({ proxyProtocol: 'required', trustedProxies: ['10.0.0.5', '10.1.0.0/16', 'fd00::/8'] });
    expect(err({ KENG_MQTT_PROXY_PROTOCOL: 'v2' })).toMatch(/^Invalid setting KENG_MQTT_PROXY_PROTOCOL \(mqtt.proxyProtocol\): must be one of off, required/);
    expect(err({ KENG_MQTT_TRUSTED_PROXIES: '10.0.0.0/33' })).toMatch(/^Invalid setting KENG_MQTT_TRUSTED_PROXIES \(mqtt.trustedProxies\): "10.0.0.0\/33" is not an IP address or CIDR range$/);
    expect(err({ KENG_MQTT_TRUSTED_PROXIES: 'haproxy.local' })).toMatch(/mqtt.trustedProxies/);
  });

  it('map tiles for the web app: unset by default, a {z}/{x}/{y} http(s) template when set', () => {
    expect(loadConfig({ env: {} }).web).toEqual({});
    const tiles = 'https://tiles.example.vn/osm/{z}/{x}/{y}.png';
    expect(loadConfig({ env: { KENG_WEB_MAP_TILE_URL: tiles, KENG_WEB_MAP_TILE_ATTRIBUTION: '© OpenStreetMap' } }).web)
      .toEqual({ mapTileUrl: tiles, mapTileAttribution: '© OpenStreetMap' });
    // Some servers order the path {z}/{y}/{x}: any order is accepted.
    expect(loadConfig({ env: { KENG_WEB_MAP_TILE_URL: 'http://10.0.0.2:8081/{z}/{y}/{x}' } }).web.mapTileUrl).toBe('http://10.0.0.2:8081/{z}/{y}/{x}');
    for (const bad of ['tiles.example.vn/{z}/{x}/{y}.png', 'ftp://tiles.example.vn/{z}/{x}/{y}', 'https://tiles.example.vn/{z}/{x}.png']) {
      expect(err({ KENG_WEB_MAP_TILE_URL: bad })).toMatch(/^Invalid setting KENG_WEB_MAP_TILE_URL \(web\.mapTileUrl\)/);
    }
  });

  it('live feed settings: defaults, variables, bounds', () => {
    expect(loadConfig({ env: {} }).live).toEqual({ batchIntervalMs: 50, maxClients: 5000, maxEventRate: 200, throttleIntervalMs: 1000 });
    expect(loadConfig({ env: { KENG_LIVE_BATCH_MS: '200', KENG_LIVE_MAX_CLIENTS: '10', KENG_LIVE_MAX_EVENT_RATE: '50', KENG_LIVE_THROTTLE_MS: '500' } }).live)
      .toEqual({ batchIntervalMs: 200, maxClients: 10, maxEventRate: 50, throttleIntervalMs: 500 });
    expect(err({ KENG_LIVE_BATCH_MS: '5' })).toMatch(/KENG_LIVE_BATCH_MS|batchIntervalMs/);
    expect(err({ KENG_LIVE_THROTTLE_MS: '10' })).toMatch(/KENG_LIVE_THROTTLE_MS|throttleIntervalMs/);
  });

  it('login settings: trustProxy off by default, KENG_HTTP_TRUST_PROXY as true/false or addresses; lock bounds', () => {
    const c = loadConfig({ env: {} });
    expect(c.http.trustProxy).toBe(false);
    expect(c.auth).toEqual({ lockAfter: 10, lockSec: 900, lockMaxSec: 86_400, sourceFreeFailures: 5, sourceMaxDelaySec: 300, knownSourceDays: 30 });
    expect(loadConfig({ env: { KENG_HTTP_TRUST_PROXY: 'true' } }).http.trustProxy).toBe(true);
    expect(loadConfig({ env: { KENG_HTTP_TRUST_PROXY: ' 127.0.0.1, 10.0.0.0/24 ' } }).http.trustProxy).toEqual(['127.0.0.1', '10.0.0.0/24']);
    expect(() => loadConfig({ env: {}, overrides: { http: { trustProxy: [] } } })).toThrow(/http\.trustProxy/);
    expect(() => loadConfig({ env: {}, overrides: { auth: { lockSec: 7200, lockMaxSec: 3600 } } })).toThrow(/auth\.lockSec: larger than auth\.lockMaxSec/);
    expect(() => loadConfig({ env: {}, overrides: { auth: { lockAfter: 1 } } })).toThrow(/auth\.lockAfter/);
  });

  it('refuses unknown keys in a config file (typos)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keng-cfg-'));
    const file = path.join(dir, 'keng.json');
    writeFileSync(file, JSON.stringify({ mqtt: { prot: 1 } }));
    expect(err({ KENG_CONFIG: file })).toMatch(/mqtt\.prot: unknown setting/);
    writeFileSync(file, '{ not json');
    expect(err({ KENG_CONFIG: file })).toMatch(/KENG_CONFIG.*not valid JSON/);
  });

  it('accepts v1 InfluxDB settings without a token', () => {
    const c = loadConfig({ env: { KENG_TELEMETRY_STORE: 'influxdb', KENG_INFLUX_URL: 'http://127.0.0.1:8086', KENG_INFLUX_API: 'v1' } });
    expect(c.influx.database).toBe('keng');
  });
});

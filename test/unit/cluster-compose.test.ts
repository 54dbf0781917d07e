/**
 * deploy/cluster/compose.yaml (docs/cluster.md, "Three nodes with Docker
 * Compose"), checked without Docker: valid against the Compose specification;
 * every KENG_* variable it names is one Keng reads, and each node's settings
 * load through Keng's own configuration loader; three nodes with distinct
 * KENG_NODE_ID, addresses and data volumes; the haproxy.cfg it mounts is what
 * tools/haproxy.ts writes for those nodes, and `haproxy -c` accepts it; the
 * .env.example documents every variable and gives no secret a value; the
 * PostgreSQL scripts it mounts are valid bash.
 */
import { splitPgUrl } from '../../src/core/pg-url.js';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ENV_BINDINGS } from '../../src/config/env.js';
import { loadConfig } from '../../src/config/load.js';
import { ROOT, composeValidator, envExample, exampleHaproxyConfig, haproxyCheck, interpolations } from '../helpers/deploy.js';

const DIR = 'deploy/cluster';
const read = (f: string): string => readFileSync(path.join(ROOT, f), 'utf8');
const text = read(`${DIR}/compose.yaml`);
// Compose resolves YAML merge keys (`<<: *keng`); yaml 2 does with `merge`.
const compose = parse(text, { merge: true }) as any;
const services = compose.services as Record<string, any>;
const NODES = ['keng1', 'keng2', 'keng3'];

/** A node's environment as the container gets it, `${VAR:?...}` replaced by sample values. */
function nodeEnv(name: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries<string>(services[name].environment)) {
    env[k] = String(v).replace(/(?<!\$)\$\{([A-Z0-9_]+)[^}]*\}/g, (_m, n: string) => (n.includes('URL') ? 'http://192.168.1.10:8080' : `sample-${n.toLowerCase()}-0123456789`));
  }
  return env;
}

/** The file on this machine behind a `./file:/container/path[:ro]` mount of a service. */
function mounted(service: string, target: string): string | undefined {
  const m = (services[service].volumes as string[]).map((v) => v.split(':')).find(([, t]) => t === target);
  return m ? path.join(DIR, m[0]!) : undefined;
}

describe('deploy/cluster/compose.yaml', () => {
  it('is valid against the Compose specification schema', () => {
    const validate = composeValidator();
    const ok = validate(compose);
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(ok).toBe(true);
  });

  it('runs three Keng nodes from the project image, HAProxy 2.6, a PostgreSQL 15 primary and standby, Redis; no InfluxDB', () => {
    expect(Object.keys(services).sort()).toEqual(['haproxy', 'keng1', 'keng2', 'keng3', 'pg-primary', 'pg-standby', 'redis']);
    for (const n of NODES) {
      expect(services[n]).toMatchObject({ build: '../..', image: 'keng:local', init: true });
      expect(services[n].healthcheck.test.join(' ')).toContain('/healthz');
      expect(services[n].environment.KENG_TELEMETRY_STORE).toBeUndefined();
    }
    expect(existsSync(path.join(ROOT, DIR, services.keng1.build, 'Dockerfile'))).toBe(true);
    expect(services.haproxy.image).toBe('haproxy:2.6');
    expect(services['pg-primary'].image).toBe('postgres:15');
    expect(services['pg-standby'].image).toBe('postgres:15');
    // InfluxDB is optional in cluster mode: the service is only described, commented out.
    expect(text).toMatch(/^ {2}# influxdb:$/m);
  });

  it('names only KENG_* variables Keng reads (src/config/env.ts; KENG_CONFIG in src/config/load.ts)', () => {
    const known = new Set(ENV_BINDINGS.map((b) => b.name));
    expect(read('src/config/load.ts')).toContain('env.KENG_CONFIG');
    known.add('KENG_CONFIG');
    // In the environment of every service, in interpolations and in the comments alike.
    const named = new Set(text.match(/\bKENG_[A-Z0-9_]+/g));
    expect(named.size).toBeGreaterThan(8);
    for (const k of named) expect(known.has(k), k).toBe(true);
    for (const [name, s] of Object.entries(services)) {
      for (const k of Object.keys(s.environment ?? {})) if (k.startsWith('KENG')) expect(known.has(k), `${name}: ${k}`).toBe(true);
    }
  });

  it('gives every node its own KENG_NODE_ID, address and data volume, the same databases, and settings Keng accepts', () => {
    const ids = NODES.map((n) => services[n].environment.KENG_NODE_ID);
    expect(ids).toEqual(NODES);
    expect(new Set(ids).size).toBe(NODES.length);
    const addrs = NODES.map((n) => services[n].networks.keng.ipv4_address as string);
    expect(new Set(addrs).size).toBe(NODES.length);
    const data = NODES.map((n) => (services[n].volumes as string[]).find((v) => v.endsWith(':/app/data'))!.split(':')[0]);
    expect(new Set(data).size).toBe(NODES.length);
    for (const d of data) expect(Object.keys(compose.volumes)).toContain(d);

    const haproxyAddr = services.haproxy.networks.keng.ipv4_address as string;
    for (const n of NODES) {
      const env = nodeEnv(n);
      expect(mounted(n, env.KENG_CONFIG!)).toBe(`${DIR}/keng.json`);
      const cfg = loadConfig({ env: { ...env, KENG_CONFIG: path.join(ROOT, DIR, 'keng.json') } });
      // Both PostgreSQL servers: the node follows a promotion of the standby.
      expect(splitPgUrl(cfg.cluster.databaseUrl!).map((u) => new URL(u).host)).toEqual(['pg-primary:5432', 'pg-standby:5432']);
      expect(env.KENG_AUDIT_KEY).toBeDefined(); // one audit chain, one key on every node
      expect(new URL(cfg.cluster.redisUrl!).host).toBe('redis:6379');
      expect(cfg.cluster.nodeId).toBe(n);
      expect(cfg.telemetry.store).toBe('embedded');
      expect(cfg.telemetry.commitMaxInFlight).toBe(4);
      // Only HAProxy may send the PROXY header and X-Forwarded-For.
      expect(cfg.mqtt.proxyProtocol).toBe('required');
      expect(cfg.mqtt.trustedProxies).toEqual([haproxyAddr]);
      expect(cfg.http.trustProxy).toEqual([haproxyAddr]);
      expect(cfg.http.maxConnectionsPerIp).toBe(0);
      for (const dep of ['pg-primary', 'redis']) expect(services[n].depends_on[dep].condition).toBe('service_healthy');
    }
    const subnet = compose.networks.keng.ipam.config[0].subnet as string;
    for (const a of [...addrs, haproxyAddr]) expect(a.startsWith(subnet.replace(/0\/24$/, ''))).toBe(true);
  });

  it('mounts the haproxy.cfg tools/haproxy.ts writes for the three nodes (MQTT and HTTP ports of the image), and HAProxy accepts it', () => {
    const file = mounted('haproxy', '/usr/local/etc/haproxy/haproxy.cfg');
    expect(file).toBe(`${DIR}/haproxy.cfg`);
    // The ports the checks and servers use are the image's (the nodes do not change them).
    const docker = read('Dockerfile');
    expect(docker).toMatch(/KENG_HTTP_PORT=8080/);
    expect(docker).toMatch(/KENG_MQTT_PORT=1883/);
    for (const n of NODES) for (const k of ['KENG_HTTP_PORT', 'KENG_MQTT_PORT']) expect(services[n].environment[k]).toBeUndefined();
    expect(services.haproxy.ports).toEqual(['1883:1883', '8080:8080']);

    const hosts = NODES.map((n) => services[n].networks.keng.ipv4_address as string);
    // In the image HAProxy runs as the user haproxy, whose home /var/lib/haproxy is writable.
    expect(read(file!)).toBe(exampleHaproxyConfig(hosts, '/var/lib/haproxy/admin.sock'));
    expect(haproxyCheck(read(file!))).toMatch(/Configuration file is valid/);
  });

  it('reads every variable from .env.example; secrets have no default and must be set', () => {
    const example = envExample(`${DIR}/.env.example`);
    const used = interpolations(text);
    expect(used.length).toBeGreaterThan(5);
    for (const u of used) {
      expect(example.has(u.name), `${u.name} is in .env.example`).toBe(true);
      expect(u.op, `${u.name} is required (\${${u.name}:?...}), never defaulted`).toBe(':?');
    }
    for (const [k, v] of example) {
      expect(used.some((u) => u.name === k), `${k} is used by compose.yaml`).toBe(true);
      expect(v, `${k} is empty in .env.example`).toBe('');
    }
    expect(execFileSync('git', ['check-ignore', `${DIR}/.env`], { cwd: ROOT, encoding: 'utf8' }).trim()).toBe(`${DIR}/.env`);
  });

  it('mounts PostgreSQL scripts that exist and are valid bash; the standby name is the documented one', () => {
    const init = mounted('pg-primary', '/docker-entrypoint-initdb.d/10-keng.sh');
    const standby = mounted('pg-standby', '/usr/local/bin/pg-standby.sh');
    for (const f of [init!, standby!]) {
      expect(existsSync(path.join(ROOT, f)), f).toBe(true);
      execFileSync('bash', ['-n', path.join(ROOT, f)]);
    }
    expect(services['pg-standby'].user).toBe('postgres');
    const name = services['pg-standby'].environment.PG_STANDBY_NAME as string;
    expect(read('docs/cluster.md')).toContain(`synchronous_standby_names = '${name}'`);
    // The role Keng logs in with is the one the URL names.
    expect(read(init!)).toMatch(/CREATE ROLE keng LOGIN/);
    expect(services.keng1.environment.KENG_DATABASE_URL).toMatch(/^postgres:\/\/keng:/);
  });
});

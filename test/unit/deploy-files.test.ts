/**
 * The deployment files, checked without Docker (the development machine has
 * no engine): docker-compose.yml against the Compose specification's JSON
 * schema (vendored, see test/fixtures/compose-spec/README.md) and against
 * the settings Keng knows; .env.example documents every variable compose
 * reads and gives no secret a value; the Grafana provisioning files point at
 * what compose mounts; the Dockerfile runs the steps of scripts/image-steps.sh
 * as a non-root user with a health check.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ENV_BINDINGS } from '../../src/config/env.js';
import { ROOT, composeValidator, envExample, interpolations } from '../helpers/deploy.js';

const read = (f: string): string => readFileSync(path.join(ROOT, f), 'utf8');
const composeText = read('docker-compose.yml');
const compose = parse(composeText) as any;

describe('docker-compose.yml', () => {
  it('is valid against the Compose specification schema', () => {
    const validate = composeValidator();
    const ok = validate(compose);
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(ok).toBe(true);
  });

  it('the schema check catches mistakes (a typo in a key, a wrong type)', () => {
    const validate = composeValidator();
    expect(validate({ services: { keng: { image: 'x', helthcheck: {} } } })).toBe(false);
    expect(validate({ services: { keng: { image: 'x', ports: 8080 } } })).toBe(false);
  });

  it('runs Keng with InfluxDB 2 (v2 API) and Grafana, each with a health check', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['grafana', 'influxdb', 'keng']);
    for (const [name, s] of Object.entries<{ healthcheck?: { test?: unknown } }>(compose.services)) {
      expect(s.healthcheck?.test, `${name} has a health check`).toBeDefined();
    }
    expect(compose.services.influxdb.image).toMatch(/^influxdb:2\./);
    const env = compose.services.keng.environment as Record<string, string>;
    expect(env).toMatchObject({ KENG_TELEMETRY_STORE: 'influxdb', KENG_INFLUX_API: 'v2', KENG_INFLUX_URL: 'http://influxdb:8086' });
    for (const k of ['KENG_INFLUX_TOKEN', 'KENG_INFLUX_ORG', 'KENG_INFLUX_BUCKET', 'KENG_MEDIA_PUBLIC_BASE_URL']) expect(env[k], k).toMatch(/^\$\{[A-Z_]+:\?/);
    expect(compose.services.keng.healthcheck.test.join(' ')).toContain('/healthz');
  });

  it('sets only KENG_* variables that Keng knows (src/config/env.ts)', () => {
    const known = new Set(ENV_BINDINGS.map((b) => b.name));
    for (const k of Object.keys(compose.services.keng.environment as object)) expect(known.has(k), k).toBe(true);
  });

  it('reads every variable from .env.example; secrets have no default and must be set', () => {
    const example = envExample('.env.example');
    const used = interpolations(composeText);
    expect(used.length).toBeGreaterThan(5);
    for (const u of used) {
      expect(example.has(u.name), `${u.name} is in .env.example`).toBe(true);
      if (/PASSWORD|TOKEN|USER/.test(u.name) && u.name !== 'KENG_ADMIN_TOKEN') {
        expect(u.op, `${u.name} is required (\${${u.name}:?...}), never defaulted`).toBe(':?');
      }
      if (u.op === ':-') expect(u.rest, `${u.name} has no default value`).toBe('');
    }
    // Every variable of .env.example is used, and none has a value filled in.
    for (const [k, v] of example) {
      expect(used.some((u) => u.name === k), `${k} is used by docker-compose.yml`).toBe(true);
      expect(v, `${k} is empty in .env.example`).toBe('');
    }
    expect(read('.gitignore').split('\n')).toContain('.env');
  });

  it('provisions Grafana from files under dashboards/provisioning that compose mounts', () => {
    const mounts = (compose.services.grafana.volumes as string[]).map((v) => v.split(':'));
    for (const [src] of mounts) if (src!.startsWith('./')) expect(existsSync(path.join(ROOT, src!)), src).toBe(true);
    const target = (dir: string): string | undefined => mounts.find(([, t]) => t === dir)?.[0];
    expect(target('/etc/grafana/provisioning/datasources')).toBe('./dashboards/provisioning/datasources');
    expect(target('/etc/grafana/provisioning/dashboards')).toBe('./dashboards/provisioning/dashboards');

    const ds = parse(read('dashboards/provisioning/datasources/influxdb.yaml')) as any;
    expect(ds.datasources).toHaveLength(1);
    expect(ds.datasources[0]).toMatchObject({ type: 'influxdb', url: 'http://influxdb:8086', jsonData: { dbName: '${INFLUXDB_BUCKET}', httpHeaderName1: 'Authorization' } });
    expect(ds.datasources[0].secureJsonData.httpHeaderValue1).toBe('Token ${INFLUXDB_TOKEN}');
    const genv = compose.services.grafana.environment as Record<string, string>;
    for (const v of ['INFLUXDB_TOKEN', 'INFLUXDB_BUCKET']) expect(genv[v], `grafana gets ${v}`).toBeDefined();

    const prov = parse(read('dashboards/provisioning/dashboards/keng.yaml')) as any;
    const dashDir = prov.providers[0].options.path as string;
    // A folder mounted as the provider's path, or single files inside it.
    const dashMounts = mounts.filter(([, t]) => t === dashDir || t!.startsWith(`${dashDir}/`));
    expect(dashMounts.length).toBeGreaterThan(0);
    const files = dashMounts.flatMap(([src]) => (statSync(path.join(ROOT, src!)).isDirectory()
      ? readdirSync(path.join(ROOT, src!)).filter((f) => f.endsWith('.json')).map((f) => path.join(src!, f))
      : [src!]));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const dash = JSON.parse(read(f)) as { __inputs?: unknown; templating: { list: Array<{ name: string; type: string }> } };
      // Provisioned files get no __inputs substitution: a datasource variable of that name resolves ${DS_INFLUXDB}.
      expect(dash.__inputs, f).toBeUndefined();
      expect(dash.templating.list, f).toContainEqual(expect.objectContaining({ name: 'DS_INFLUXDB', type: 'datasource' }));
    }
  });
});

describe('Dockerfile', () => {
  const docker = read('Dockerfile');
  const lines = docker.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));

  it('runs every step of scripts/image-steps.sh, then drops root; health check on /healthz', () => {
    const runs = lines.filter((l) => l.startsWith('RUN ')).join('\n');
    for (const step of ['build-deps', 'app', 'runtime-deps', 'keng-bin verify']) expect(runs).toContain(`image-steps.sh ${step}`);
    const runtime = lines.slice(lines.findIndex((l) => / AS runtime$/.test(l)));
    const user = runtime.findIndex((l) => l.startsWith('USER '));
    expect(runtime[user]).toBe('USER node');
    expect(runtime.findIndex((l) => l.startsWith('CMD '))).toBeGreaterThan(user);
    expect(lines.find((l) => l.startsWith('HEALTHCHECK '))).toContain('/healthz');
  });

  it('copies only files that exist', () => {
    for (const l of lines.filter((x) => x.startsWith('COPY ') && !x.includes('--from='))) {
      const parts = l.split(/\s+/).slice(1).filter((p) => !p.startsWith('--'));
      for (const src of parts.slice(0, -1)) expect(existsSync(path.join(ROOT, src)), src).toBe(true);
    }
  });
});

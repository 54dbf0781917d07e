/**
 * config/keng.example.json claims to show every setting with its default, and
 * config/README.md to describe every setting: both are checked against the
 * schema here, so a new setting cannot be forgotten in either.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CONFIG_DEFAULTS, ConfigSchema, loadConfig } from '../../src/config/index.js';

const examplePath = fileURLToPath(new URL('../../config/keng.example.json', import.meta.url));
const readmePath = fileURLToPath(new URL('../../config/README.md', import.meta.url));

interface Node { type?: string; properties?: Record<string, Node> }

/** Every leaf setting of the schema as a dotted path (`mqtt.port`). */
function leafPaths(node: Node, prefix = ''): string[] {
  if (node.type !== 'object' || !node.properties) return [prefix];
  return Object.entries(node.properties).flatMap(([k, v]) => leafPaths(v, prefix ? `${prefix}.${k}` : k));
}

function valueAt(o: unknown, path: string): unknown {
  return path.split('.').reduce<unknown>((cur, p) => (cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[p] : undefined), o);
}

/** Left out of the example on purpose (config/README.md says why): secrets, and settings with no default. */
const LEFT_OUT = new Set([
  'adminToken', 'influx.password', 'influx.token', 'influx.org', 'influx.bucket',
  'tls.certFile', 'tls.keyFile', 'tls.caFile', 'media.publicBaseUrl', 'web.mapTileUrl', 'web.mapTileAttribution',
  'audit.key', 'audit.keyFile', 'audit.anchorFile',
  // Setting them switches cluster mode on; the URLs carry passwords.
  'cluster', 'cluster.databaseUrl', 'cluster.redisUrl', 'cluster.nodeId',
]);
/** Filled in as an InfluxDB 1.x example instead of the default (config/README.md says so). */
const NOT_DEFAULT = new Set(['influx.url', 'influx.api', 'influx.username']);

describe('config/keng.example.json', () => {
  const example = JSON.parse(readFileSync(examplePath, 'utf8')) as Record<string, unknown>;

  it('loads as a config file (KENG_CONFIG)', () => {
    const cfg = loadConfig({ env: { KENG_CONFIG: examplePath } });
    expect(cfg.mqtt.port).toBe(1883);
    expect(cfg.telemetry.store).toBe('embedded');
  });

  it('has every top-level section and setting of the schema', () => {
    const top = Object.keys((ConfigSchema as unknown as Node).properties!);
    expect(top.filter((k) => !(k in example) && !LEFT_OUT.has(k))).toEqual([]);
    const leaves = leafPaths(ConfigSchema as unknown as Node).filter((p) => !LEFT_OUT.has(p));
    expect(leaves.filter((p) => valueAt(example, p) === undefined)).toEqual([]);
  });

  it('shows the default value of every setting it has, but the documented InfluxDB example', () => {
    const leaves = leafPaths(ConfigSchema as unknown as Node).filter((p) => !LEFT_OUT.has(p) && !NOT_DEFAULT.has(p));
    const differ = leaves.filter((p) => JSON.stringify(valueAt(example, p)) !== JSON.stringify(valueAt(CONFIG_DEFAULTS, p)));
    expect(differ).toEqual([]);
  });
});

describe('config/README.md', () => {
  it('describes every setting of the schema', () => {
    const doc = readFileSync(readmePath, 'utf8');
    const leaves = leafPaths(ConfigSchema as unknown as Node);
    expect(leaves.filter((p) => !doc.includes(`\`${p}\``) && !doc.includes(`\`${p}\`,`))).toEqual([]);
  });
});

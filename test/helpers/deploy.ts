/**
 * Checks of the deployment files that need no Docker engine (the development
 * machine has none): Compose files against the vendored Compose specification
 * schema, their `${VAR}` interpolations, and HAProxy configurations against
 * the generator the cluster tests run (tools/haproxy.ts) and `haproxy -c`.
 * Shared by test/unit/deploy-files.test.ts, load-balancer-doc.test.ts and
 * cluster-compose.test.ts.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { HAPROXY, haproxyConfig, type HaproxyCheck } from '../../tools/haproxy.js';

export const ROOT = path.resolve(__dirname, '../..');

/** A validator of the Compose specification's JSON schema (test/fixtures/compose-spec). */
export function composeValidator(): ValidateFunction {
  const schema = JSON.parse(readFileSync(path.join(ROOT, 'test/fixtures/compose-spec/compose-spec.json'), 'utf8')) as Record<string, unknown>;
  delete schema.$schema; // draft-07, ajv's default; the URL spelling in the file is not one ajv knows
  return new Ajv({ strict: false, allErrors: true }).compile(schema);
}

/** `${NAME}`, `${NAME:-default}`, `${NAME:?message}` → { name, op, rest } (`$${...}` is an escaped dollar, skipped). */
export function interpolations(text: string): Array<{ name: string; op: string; rest: string }> {
  return [...text.matchAll(/(?<!\$)\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}/g)].map((m) => ({ name: m[1]!, op: m[2] ?? '', rest: m[3] ?? '' }));
}

/** `NAME=value` lines of an .env example file. */
export function envExample(file: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync(path.join(ROOT, file), 'utf8').split('\n')) {
    const r = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (r) m.set(r[1]!, r[2]!);
  }
  return m;
}

/** Production check timing of the documented examples: a node is out after 3 failed checks 2 s apart. */
export const PRODUCTION_CHECK: HaproxyCheck = { interMs: 2000, fall: 3, rise: 2, timeoutMs: 2000 };

/**
 * What tools/haproxy.ts writes for nodes keng1..N at `hosts` (MQTT 1883, HTTP 8080), HAProxy
 * listening on :1883 and :8080 with the PROXY protocol v2: the documented examples.
 */
export function exampleHaproxyConfig(hosts: readonly string[], statsSocket: string): string {
  return haproxyConfig({
    mqttBind: ':1883', httpBind: ':8080', sendProxy: 'v2', statsSocket, maxconn: 20000, check: PRODUCTION_CHECK,
    mqttBackends: hosts.map((host, i) => ({ name: `keng${i + 1}`, host, port: 1883, checkPort: 8080 })),
    httpBackends: hosts.map((host, i) => ({ name: `keng${i + 1}`, host, port: 8080 })),
  });
}

/** `haproxy -c` on a configuration (its stats socket moved to a temporary directory): HAProxy's own output. Throws when refused. */
export function haproxyCheck(config: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-haproxy-check-'));
  try {
    const file = path.join(dir, 'haproxy.cfg');
    // The socket's directory belongs to the package or the image (/run/haproxy, /var/lib/haproxy); here a temporary one.
    writeFileSync(file, config.replace(/^(\s*stats socket )\S+/m, `$1${path.join(dir, 'admin.sock')}`));
    return execFileSync(HAPROXY, ['-c', '-f', file], { encoding: 'utf8', stdio: 'pipe' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

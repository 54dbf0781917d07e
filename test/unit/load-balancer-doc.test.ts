/**
 * docs/load-balancer.md shows an HAProxy configuration: it must be exactly
 * what tools/haproxy.ts writes (the generator the cluster tests run against a
 * real HAProxy), and HAProxy itself must accept it (`haproxy -c`).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { HAPROXY, haproxyConfig } from '../../tools/haproxy.js';

const doc = readFileSync(new URL('../../docs/load-balancer.md', import.meta.url), 'utf8');
/** The first ```haproxy block. */
const documented = /```haproxy\n([\s\S]*?)```/.exec(doc)?.[1] ?? '';

const nodes = ['10.0.0.11', '10.0.0.12', '10.0.0.13'];
/** Three nodes, HAProxy on its own host; production check timing (a node is out within 3 failed checks 2 s apart). */
const EXAMPLE = haproxyConfig({
  mqttBind: ':1883', httpBind: ':8080', sendProxy: 'v2', statsSocket: '/run/haproxy/admin.sock', maxconn: 20000,
  check: { interMs: 2000, fall: 3, rise: 2, timeoutMs: 2000 },
  mqttBackends: nodes.map((host, i) => ({ name: `keng${i + 1}`, host, port: 1883, checkPort: 8080 })),
  httpBackends: nodes.map((host, i) => ({ name: `keng${i + 1}`, host, port: 8080 })),
});

describe('docs/load-balancer.md', () => {
  it('shows what tools/haproxy.ts writes', () => {
    expect(documented).toBe(EXAMPLE);
  });

  it('is a configuration HAProxy accepts (haproxy -c)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keng-lb-doc-'));
    try {
      const file = path.join(dir, 'haproxy.cfg');
      // The stats socket's directory is the package's (/run/haproxy); here a temporary one.
      writeFileSync(file, documented.replace('/run/haproxy/admin.sock', path.join(dir, 'admin.sock')));
      const out = execFileSync(HAPROXY, ['-c', '-f', file], { encoding: 'utf8', stdio: 'pipe' });
      expect(out).toMatch(/Configuration file is valid/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

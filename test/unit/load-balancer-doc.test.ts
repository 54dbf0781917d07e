/**
 * docs/load-balancer.md shows an HAProxy configuration: it must be exactly
 * what tools/haproxy.ts writes (the generator the cluster tests run against a
 * real HAProxy), and HAProxy itself must accept it (`haproxy -c`).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { exampleHaproxyConfig, haproxyCheck } from '../helpers/deploy.js';

const doc = readFileSync(new URL('../../docs/load-balancer.md', import.meta.url), 'utf8');
/** The first ```haproxy block. */
const documented = /```haproxy\n([\s\S]*?)```/.exec(doc)?.[1] ?? '';

/** Three nodes, HAProxy on its own host (the package's stats socket); production check timing. */
const EXAMPLE = exampleHaproxyConfig(['10.0.0.11', '10.0.0.12', '10.0.0.13'], '/run/haproxy/admin.sock');

describe('docs/load-balancer.md', () => {
  it('shows what tools/haproxy.ts writes', () => {
    expect(documented).toBe(EXAMPLE);
  });

  it('is a configuration HAProxy accepts (haproxy -c)', () => {
    expect(haproxyCheck(documented)).toMatch(/Configuration file is valid/);
  });
});

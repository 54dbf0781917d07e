import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/core/metrics.js';

/** Quoted `keng_…` names in src/ that are not metrics: table names (the cluster import lists them). */
const NOT_METRICS = ['keng_migrations'];

describe('docs/metrics.md', () => {
  it('explains every metric defined in src/core/metrics.ts', async () => {
    const doc = readFileSync(new URL('../../docs/metrics.md', import.meta.url), 'utf8');
    const names = (await new Metrics({ defaultMetrics: false }).registry.getMetricsAsJSON()).map((m) => m.name);
    expect(names.length).toBeGreaterThan(10);
    expect(names.filter((n) => !doc.includes(`\`${n}\``))).toEqual([]);
  });

  it('explains every metric any module registers (names found in src/)', () => {
    const doc = readFileSync(new URL('../../docs/metrics.md', import.meta.url), 'utf8');
    const src = fileURLToPath(new URL('../../src', import.meta.url));
    const found = new Set<string>();
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.ts')) for (const m of readFileSync(p, 'utf8').matchAll(/'(keng_[a-z0-9_]+)'/g)) found.add(m[1]!);
      }
    };
    walk(src);
    for (const n of NOT_METRICS) found.delete(n);
    expect(found.size).toBeGreaterThan(20);
    expect([...found].filter((n) => !doc.includes(`\`${n}\``))).toEqual([]);
  });
});

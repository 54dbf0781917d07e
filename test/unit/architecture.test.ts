/**
 * The dependency rule, executable: imports between the top-level parts of
 * src/ go one way only,
 *
 *   core ← config ← domain (devices, storage, broker, ingest, rpc, media,
 *   broadcast, auth, audit, …) ← edges (api, live, web) ← wiring (app, main, cli)
 *
 * the simulator is a client of Keng (used by the CLI and the benchmarks) that
 * nothing in the product imports, and no two parts import each other, directly
 * or through others. A new top-level folder must be given a layer here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(__dirname, '../../src');

/** Rank of each top-level part: an import may only go to a part of the same or a lower rank. */
const LAYERS: Record<string, { rank: number; layer: string }> = {};
const put = (layer: string, rank: number, parts: string[]): void => { for (const p of parts) LAYERS[p] = { rank, layer }; };
put('core', 0, ['core']);
put('config', 1, ['config']);
put('domain', 2, ['devices', 'storage', 'broker', 'ingest', 'rpc', 'media', 'broadcast', 'auth', 'audit', 'alerts', 'modbus', 'gateway', 'tls', 'attributes', 'firmware', 'cluster']);
put('edge', 3, ['api', 'live', 'web']);
put('simulator', 3, ['sim']);
put('wiring', 4, ['app', 'main', 'cli', 'migrations', 'net']);

/** Parts of one rank that must not import each other at all (edges are independent; the simulator is no edge). */
const SAME_RANK_FORBIDDEN = new Set(['edge→edge', 'edge→simulator', 'simulator→edge']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function partOf(file: string): string {
  const [first] = path.relative(SRC, file).split(path.sep);
  return first!.replace(/\.[jt]s$/, '');
}

/** part → parts it imports (type-only imports included: they couple the code just the same). */
function importGraph(): Map<string, Set<string>> {
  const g = new Map<string, Set<string>>();
  for (const file of sourceFiles(SRC)) {
    const from = partOf(file);
    const deps = g.get(from) ?? g.set(from, new Set()).get(from)!;
    for (const imp of ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles) {
      if (!imp.fileName.startsWith('.')) continue;
      const target = path.resolve(path.dirname(file), imp.fileName);
      if (!target.startsWith(SRC + path.sep)) { deps.add(`outside src: ${path.relative(SRC, target)}`); continue; }
      const to = partOf(target);
      if (to !== from) deps.add(to);
    }
  }
  return g;
}

function cycles(g: Map<string, Set<string>>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): void => {
    state.set(n, 'open');
    stack.push(n);
    for (const m of g.get(n) ?? []) {
      if (state.get(m) === 'open') found.push([...stack.slice(stack.indexOf(m)), m]);
      else if (!state.has(m)) visit(m);
    }
    stack.pop();
    state.set(n, 'done');
  };
  for (const n of [...g.keys()].sort()) if (!state.has(n)) visit(n);
  return found;
}

describe('architecture: one direction for every import', () => {
  const graph = importGraph();

  it('every top-level part of src/ has a layer', () => {
    expect([...graph.keys()].filter((p) => !LAYERS[p])).toEqual([]);
  });

  it('imports go from higher layers to lower ones only, never out of src/', () => {
    const wrong: string[] = [];
    for (const [from, deps] of graph) {
      for (const to of deps) {
        const a = LAYERS[from], b = LAYERS[to];
        if (!a || !b) { wrong.push(`${from} → ${to}`); continue; }
        if (b.rank > a.rank || (from !== to && SAME_RANK_FORBIDDEN.has(`${a.layer}→${b.layer}`))) {
          wrong.push(`${from} (${a.layer}) → ${to} (${b.layer})`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it('no import cycle between parts', () => {
    expect(cycles(graph).map((c) => c.join(' → '))).toEqual([]);
  });

  it('Redis is reached through one adapter only (src/cluster/redis-bus.ts; the rest of Keng sees the ClusterBus port)', () => {
    const importers = sourceFiles(SRC).filter((f) => ts.preProcessFile(readFileSync(f, 'utf8'), true, true).importedFiles.some((i) => i.fileName === 'ioredis'));
    expect(importers.map((f) => path.relative(SRC, f))).toEqual([path.join('cluster', 'redis-bus.ts')]);
  });

  it('the check itself sees the imports it judges (a known edge of the graph is there)', () => {
    expect(graph.get('app')?.has('api')).toBe(true);
    expect(graph.get('api')?.has('core')).toBe(true);
    expect(cycles(new Map([['a', new Set(['b'])], ['b', new Set(['c'])], ['c', new Set(['a'])]]))).toEqual([['a', 'b', 'c', 'a']]);
  });
});

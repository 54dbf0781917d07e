/**
 * `keng cluster import` copies the tables its plan lists (src/cli/cluster-tables.ts). A module that adds
 * a table to state.db or to a PostgreSQL scope must list it there (imported, set after the copy, kept by
 * the cluster alone, or internal): otherwise an import would silently leave it behind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/index.js';
import { ALL_MIGRATIONS, PG_STATE_SCOPES } from '../../src/migrations.js';
import { StateDb } from '../../src/storage/state/index.js';
import { CLUSTER_RUNTIME_TABLES, IMPORTED_TABLES, INTERNAL_TABLES, SINGLETON_TABLES } from '../../src/cli/cluster-tables.js';
import { toPg } from '../../src/cli/cluster-copy.js';

const imported = IMPORTED_TABLES.map((t) => t.table);
const known = new Set<string>([...imported, ...SINGLETON_TABLES, ...INTERNAL_TABLES, ...CLUSTER_RUNTIME_TABLES]);

function pgTables(): string[] {
  return PG_STATE_SCOPES.flatMap((s) => s.migrations.flatMap((m) => m.postgres.flatMap((stmt) => [...stmt.matchAll(/CREATE TABLE (?:IF NOT EXISTS )?(\w+)/g)].map((x) => x[1]!))));
}

async function sqliteTables(): Promise<string[]> {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-import-plan-'));
  const db = new StateDb({ dataDir: dir, logger: createLogger('silent'), migrations: ALL_MIGRATIONS });
  try {
    await db.start();
    return (db.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as Array<{ name: string }>).map((r) => r.name);
  } finally {
    await db.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('cluster import plan', () => {
  it('names every table of the PostgreSQL state scopes: imported or set after the copy', () => {
    const tables = pgTables();
    expect(tables.length).toBeGreaterThan(20);
    expect(tables.filter((t) => !known.has(t))).toEqual([]);
  });

  it('names every table of state.db', async () => {
    expect((await sqliteTables()).filter((t) => !known.has(t))).toEqual([]);
  });

  it('imports only tables both stores have, each once', async () => {
    const lite = new Set(await sqliteTables());
    const pg = new Set(pgTables());
    expect(imported.filter((t) => !lite.has(t) || !pg.has(t))).toEqual([]);
    expect(new Set(imported).size).toBe(imported.length);
  });

  it('maps embedded values to the PostgreSQL column type', () => {
    expect(toPg(1, 'boolean')).toBe(true);
    expect(toPg(0, 'boolean')).toBe(false);
    expect(toPg(null, 'boolean')).toBeNull();
    expect(toPg(Buffer.from([1, 2]), 'bytea')).toEqual(Buffer.from([1, 2]));
    expect(toPg(2n ** 60n, 'bigint')).toBe('1152921504606846976');
    expect(toPg(1_700_000_000_000, 'bigint')).toBe(1_700_000_000_000);
    expect(toPg('{"a":1}', 'text')).toBe('{"a":1}');
  });
});

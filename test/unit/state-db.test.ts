import { describe, it, expect, afterEach } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { StateDb, MIGRATIONS, latestVersion, type Migration } from '../../src/storage/state/index.js';
import { createLogger } from '../../src/core/index.js';

const logger = createLogger('silent');
const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'keng-statedb-'));
  dirs.push(d);
  return d;
}
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

describe('StateDb', () => {
  it('constructor only assigns; db throws before start', () => {
    const dataDir = path.join(tempDir(), 'not-yet');
    const s = new StateDb({ dataDir, logger });
    expect(() => s.db).toThrow(/not started/);
    expect(() => statSync(dataDir)).toThrow();
  });

  it('creates the data dir and migrates a fresh database', async () => {
    const dataDir = path.join(tempDir(), 'nested', 'data');
    const s = new StateDb({ dataDir, logger });
    await s.start();
    expect(statSync(path.join(dataDir, 'state.db')).isFile()).toBe(true);
    expect(s.version()).toBe(latestVersion());
    expect(s.migrations().map((m) => m.version)).toEqual(MIGRATIONS.map((m) => m.version));
    const tables = s.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
    expect(tables).toEqual(expect.arrayContaining(['areas', 'devices', 'device_state', 'schema_migrations']));
    expect(s.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(s.db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(s.db.pragma('synchronous', { simple: true })).toBe(2); // FULL
    expect(Number(s.db.pragma('busy_timeout', { simple: true }))).toBeGreaterThan(0);
    await s.stop();
    expect(() => s.db).toThrow();
  });

  it('create: false (the CLI) refuses a directory without state and creates nothing', async () => {
    const parent = tempDir();
    for (const dataDir of [parent, path.join(parent, 'missing')]) {
      const s = new StateDb({ dataDir, logger, create: false });
      const err = await s.start().then(() => undefined, (e: unknown) => e as { code: string; message: string });
      expect(err?.code).toBe('KENG_ERR_NO_STATE');
      expect(err?.message).toContain(dataDir);
      expect(err?.message).toMatch(/KENG_DATA_DIR/);
      expect(s.started).toBe(false);
    }
    expect(readdirSync(parent)).toEqual([]);
    expect(existsSync(path.join(parent, 'missing'))).toBe(false);
  });

  it('create: false opens an existing state', async () => {
    const dataDir = tempDir();
    const server = new StateDb({ dataDir, logger });
    await server.start();
    server.db.prepare("INSERT INTO areas (code, name, level, parent, created_at) VALUES ('01', 'Ha Noi', 'province', NULL, 1)").run();
    const cli = new StateDb({ dataDir, logger, create: false });
    await cli.start();
    expect(cli.db.prepare('SELECT name FROM areas').pluck().get()).toBe('Ha Noi');
    await cli.stop();
    await server.stop();
  });

  it('re-opening is idempotent (no migration applied twice)', async () => {
    const dataDir = tempDir();
    const a = new StateDb({ dataDir, logger });
    await a.start();
    a.db.prepare("INSERT INTO areas (code, name, level, parent, created_at) VALUES ('01', 'Ha Noi', 'province', NULL, 1)").run();
    const first = a.migrations();
    await a.stop();
    const b = new StateDb({ dataDir, logger });
    await b.start();
    expect(b.migrations()).toEqual(first);
    expect(b.db.prepare('SELECT COUNT(*) FROM areas').pluck().get()).toBe(1);
    await b.stop();
  });

  it('applies appended migrations in order, each recorded', async () => {
    const dataDir = tempDir();
    const a = new StateDb({ dataDir, logger });
    await a.start();
    await a.stop();
    const extra: Migration[] = [...MIGRATIONS, { version: MIGRATIONS.length + 1, name: 'test table', up: 'CREATE TABLE t_extra (x INTEGER)' }];
    const b = new StateDb({ dataDir, logger, migrations: extra });
    await b.start();
    expect(b.version()).toBe(MIGRATIONS.length + 1);
    expect(b.migrations().at(-1)?.name).toBe('test table');
    await b.stop();
  });

  it('a failing migration is rolled back and start fails', async () => {
    const dataDir = tempDir();
    const bad: Migration[] = [...MIGRATIONS, { version: MIGRATIONS.length + 1, name: 'broken', up: 'CREATE TABLE ok_part (x INTEGER); THIS IS NOT SQL' }];
    const s = new StateDb({ dataDir, logger, migrations: bad });
    await expect(s.start()).rejects.toThrow();
    expect(() => s.db).toThrow();
    const raw = new Database(path.join(dataDir, 'state.db'));
    expect(raw.prepare('SELECT MAX(version) FROM schema_migrations').pluck().get()).toBe(MIGRATIONS.length);
    expect(raw.prepare("SELECT COUNT(*) FROM sqlite_master WHERE name = 'ok_part'").pluck().get()).toBe(0);
    raw.close();
  });

  it('refuses to start on a database from a newer Keng', async () => {
    const dataDir = tempDir();
    const a = new StateDb({ dataDir, logger });
    await a.start();
    a.db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'from the future', 1)").run();
    await a.stop();
    const b = new StateDb({ dataDir, logger });
    const err = await b.start().then(() => undefined, (e: unknown) => e as { code: string; message: string });
    expect(err?.code).toBe('KENG_ERR_CONFIG');
    expect(err?.message).toMatch(/schema version 999.*knows versions up to/);
    expect(() => b.db).toThrow();
  });

  it('rejects a migration list with gaps', async () => {
    const s = new StateDb({ dataDir: tempDir(), logger, migrations: [{ version: 2, name: 'x', up: 'SELECT 1' }] });
    await expect(s.start()).rejects.toThrow(/numbered/);
  });

  it('schema enforces the area level/parent rule and foreign keys', async () => {
    const s = new StateDb({ dataDir: tempDir(), logger });
    await s.start();
    const ins = s.db.prepare('INSERT INTO areas (code, name, level, parent, created_at) VALUES (?, ?, ?, ?, 1)');
    expect(() => ins.run('x', 'X', 'district', null)).toThrow(/CHECK/);
    expect(() => ins.run('c', 'C', 'commune', 'nope')).toThrow(/FOREIGN KEY/);
    await s.stop();
  });
});

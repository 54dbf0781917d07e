/**
 * End to end: spawns `node bin/keng.js` against a temporary KENG_DATA_DIR.
 * The CLI runs compiled code, so dist/ is (re)built once when missing or older than the sources.
 */
import { ALL_MIGRATIONS } from '../../src/migrations.js';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { StateDb } from '../../src/storage/state/index.js';
import { DeviceRegistry } from '../../src/devices/index.js';
import { EventBus, Metrics, createLogger, systemClock } from '../../src/core/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'bin/keng.js');
const SOURCES = ['src/cli', 'src/devices', 'src/storage/state', 'src/config', 'src/core'];

function stale(): boolean {
  for (const dir of SOURCES) {
    for (const f of readdirSync(path.join(ROOT, dir))) {
      if (!f.endsWith('.ts')) continue;
      const js = path.join(ROOT, 'dist', dir, f.replace(/\.ts$/, '.js'));
      if (!existsSync(js) || statSync(js).mtimeMs < statSync(path.join(ROOT, dir, f)).mtimeMs) return true;
    }
  }
  return false;
}

let dataDir: string;
/** What the server's first start does: only the server creates state, the CLI refuses a directory without it. */
async function createState(dir: string): Promise<void> {
  const db = new StateDb({ dataDir: dir, logger: createLogger('silent'), migrations: ALL_MIGRATIONS });
  await db.start();
  await db.stop();
}
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KENG_')) e[k] = v;
  return { ...e, KENG_DATA_DIR: dataDir, ...extra };
}
function keng(args: string[], extra: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, env: env(extra), encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(async () => {
  if (stale()) {
    // Other modules may still have type errors while they are written; tsc emits anyway.
    try { execSync('npx tsc -p .', { cwd: ROOT, stdio: 'pipe' }); } catch { /* checked below */ }
  }
  if (!existsSync(path.join(ROOT, 'dist/src/cli/index.js'))) throw new Error('dist/src/cli/index.js missing: the build failed');
  dataDir = mkdtempSync(path.join(tmpdir(), 'keng-cli-'));
  await createState(dataDir);
}, 120_000);
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

// Each spawn starts Node and loads the compiled app (slow on a busy 2-core machine).
describe('keng CLI', { timeout: 120_000 }, () => {
  it('bin/keng.js is executable with a node shebang', () => {
    expect(statSync(BIN).mode & 0o111).not.toBe(0);
  });

  it('adds and lists areas', () => {
    expect(keng(['areas', 'add', '--code', '01', '--name', 'Ha Noi', '--level', 'province'])).toMatchObject({ status: 0 });
    expect(keng(['areas', 'add', '--code', '00004', '--name', 'Ba Dinh', '--level', 'commune', '--parent', '01']).status).toBe(0);
    const v = keng(['areas', 'add', '--code', 'thon-1', '--name', 'Thon 1', '--level', 'village', '--parent', '00004', '--json']);
    expect(v.status).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ code: 'thon-1', level: 'village', parent: '00004' });
    const list = keng(['areas', 'list']);
    expect(list.status).toBe(0);
    expect(list.stdout).toMatch(/00004\s+commune\s+01\s+Ba Dinh/);
    expect(JSON.parse(keng(['areas', 'list', '--json']).stdout)).toHaveLength(3);
  });

  it('refuses a bad hierarchy with one KENG_ERR line and exit 1', () => {
    const r = keng(['areas', 'add', '--code', 'thon-2', '--name', 'T', '--level', 'village', '--parent', '01']);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^keng: KENG_ERR_AREA_HIERARCHY: /);
  });

  it('adds a device, prints the credentials once, stores only hashes', () => {
    const r = keng(['devices', 'add', '--id', 'loa-01', '--kind', 'speaker', '--name', 'Loa 1', '--area', 'thon-1', '--lat', '21.03', '--lon', '105.85']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/id\s+loa-01/);
    expect(r.stdout).toMatch(/shown only now/);
    const secret = /secret:\s+(\S+)/.exec(r.stdout)?.[1];
    const token = /access token:\s+(\S+)/.exec(r.stdout)?.[1];
    expect(secret && token).toBeTruthy();

    const j = keng(['devices', 'add', '--id', 'soil-01', '--kind', 'sensor', '--name', 'Soil', '--area', '00004', '--model', 'SM-1', '--json']);
    expect(j.status).toBe(0);
    const parsed = JSON.parse(j.stdout) as Record<string, unknown>;
    expect(parsed).toMatchObject({ id: 'soil-01', kind: 'sensor', area: '00004', model: 'SM-1', location: null });
    expect(typeof parsed.secret).toBe('string');
    expect(typeof parsed.accessToken).toBe('string');
    expect(j.stderr).toMatch(/shown only now/);
    // Times as the API shows them: in the configured zone (Vietnam by default), not UTC.
    expect(parsed.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+07:00$/);
    expect(r.stdout).toMatch(/created\s+\d{4}-\d\d-\d\dT[\d:.]+\+07:00/);
    const utc = JSON.parse(keng(['areas', 'list', '--json'], { KENG_TZ: 'UTC' }).stdout) as { createdAt: string }[];
    expect(utc[0]!.createdAt).toMatch(/\+00:00$/);

    const raw = spawnSync(process.execPath, ['-e', `
      const D = require('better-sqlite3'); const db = new D(process.argv[1], { readonly: true });
      process.stdout.write(JSON.stringify(db.prepare('SELECT * FROM devices').all()));`, path.join(dataDir, 'state.db')],
    { cwd: ROOT, encoding: 'utf8' }).stdout;
    for (const s of [secret!, token!, parsed.secret as string, parsed.accessToken as string]) expect(raw).not.toContain(s);
  });

  it('lists devices by area subtree, and validates', () => {
    const all = keng(['devices', 'list']);
    expect(all.status).toBe(0);
    expect(all.stdout).toMatch(/loa-01\s+speaker\s+thon-1\s+no/);
    const sub = JSON.parse(keng(['devices', 'list', '--area', 'thon-1', '--json']).stdout) as { id: string }[];
    expect(sub.map((d) => d.id)).toEqual(['loa-01']);
    const both = JSON.parse(keng(['devices', 'list', '--area', '01', '--json']).stdout) as { id: string }[];
    expect(both.map((d) => d.id)).toEqual(['loa-01', 'soil-01']);
    expect(keng(['devices', 'list', '--area', 'nope']).stderr).toMatch(/KENG_ERR_NOT_FOUND/);
    const bad = keng(['devices', 'add', '--id', 'x-2', '--kind', 'sensor', '--name', 'X', '--area', 'thon-1', '--lat', '200', '--lon', '0']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^keng: KENG_ERR_VALIDATION: .*location\.lat/);
    expect(keng(['devices', 'add', '--id', 'loa-01', '--kind', 'speaker', '--name', 'X', '--area', 'thon-1']).stderr)
      .toMatch(/KENG_ERR_DEVICE_EXISTS/);
  });

  it('deletes a device', () => {
    expect(keng(['devices', 'delete', 'soil-01'])).toMatchObject({ status: 0 });
    const again = keng(['devices', 'delete', 'soil-01']);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/KENG_ERR_NOT_FOUND/);
  });

  it('takes settings from KENG_CONFIG and reports a bad setting (exit 78)', async () => {
    const other = mkdtempSync(path.join(tmpdir(), 'keng-cli-cfg-'));
    try {
      const cfg = path.join(other, 'keng.json');
      writeFileSync(cfg, JSON.stringify({ dataDir: path.join(other, 'data') }));
      await createState(path.join(other, 'data'));
      const r = spawnSync(process.execPath, [BIN, 'areas', 'add', '--code', '79', '--name', 'HCM', '--level', 'province'],
        { cwd: ROOT, env: { ...env(), KENG_DATA_DIR: '', KENG_CONFIG: cfg }, encoding: 'utf8' });
      expect(r.status).toBe(0);
      expect(keng(['areas', 'list'], { KENG_DATA_DIR: path.join(other, 'data') }).stdout).toMatch(/79\s+province\s+-\s+HCM/);
      const bad = keng(['areas', 'list'], { KENG_TZ: 'Mars/Olympus' });
      expect(bad.status).toBe(78);
      expect(bad.stderr).toMatch(/^keng: KENG_ERR_CONFIG: .*KENG_TZ/);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('refuses a data directory without state (exit 66, one line naming it) and creates none', () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'keng-cli-empty-'));
    try {
      const typo = path.join(empty, 'typo');
      const cases = [[typo, ['areas', 'list']], [empty, ['areas', 'list']], [empty, ['users', 'list']], [empty, ['audit', 'verify']],
        [empty, ['devices', 'add', '--id', 'x-1', '--kind', 'sensor', '--name', 'X', '--area', '01']]] as const;
      for (const [dir, args] of cases) {
        const r = keng([...args], { KENG_DATA_DIR: dir });
        expect({ args, status: r.status }).toEqual({ args, status: 66 });
        expect(r.stderr.trim().split('\n')).toEqual([
          `keng: KENG_ERR_NO_STATE: No Keng state in ${dir} (no state.db there); set KENG_DATA_DIR to the server's data directory `
          + '(only the server creates state, on its first start)',
        ]);
        expect(r.stdout).toBe('');
      }
      // users add too, with a password piped in.
      const u = spawnSync(process.execPath, [BIN, 'users', 'add', '--username', 'lan', '--role', 'viewer'],
        { cwd: ROOT, env: env({ KENG_DATA_DIR: empty }), input: 'a long enough password\n', encoding: 'utf8', timeout: 20_000 });
      expect(u.status).toBe(66);
      expect(u.stderr).toMatch(/^keng: KENG_ERR_NO_STATE: /);
      expect(readdirSync(empty)).toEqual([]);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('works while a server holds the database; the server sees the new device at once', async () => {
    const logger = createLogger('silent');
    const db = new StateDb({ dataDir, logger, migrations: ALL_MIGRATIONS });
    const reg = new DeviceRegistry({ db, bus: new EventBus(), logger, metrics: new Metrics({ defaultMetrics: false }), clock: systemClock });
    await db.start();
    await reg.start();
    try {
      reg.setOnline('loa-01', true, Date.now());
      await reg.flush();
      const r = keng(['devices', 'add', '--id', 'new-01', '--kind', 'gateway', '--name', 'GW', '--area', '00004', '--json']);
      expect(r.status).toBe(0);
      const { secret, accessToken } = JSON.parse(r.stdout) as { secret: string; accessToken: string };
      expect(reg.getDevice('new-01')).toMatchObject({ kind: 'gateway' });
      expect(await reg.authenticate('new-01', Buffer.from(secret))).toMatchObject({ ok: true });
      expect(await reg.authenticate(accessToken, undefined)).toMatchObject({ ok: true, identity: { viaToken: true } });
      expect(keng(['devices', 'list']).stdout).toMatch(/loa-01\s+speaker\s+thon-1\s+yes/);
      expect(reg.isOnline('loa-01')).toBe(true);
    } finally {
      await reg.stop();
      await db.stop();
    }
  });
});

/**
 * Safe defaults on disk: after a start, every file in the data directory
 * (databases with their -wal and -shm, the generated admin token, the media
 * signing key, the command keys, the InfluxDB queue, the lock) is mode 0600,
 * whatever the umask; files an older version left readable are tightened at
 * the next start; `keng backup` (the real CLI) writes 0600 copies. Uploaded
 * audio (media/) is not a secret and is left out.
 *
 * The attack: another local account (the web server's, a backup agent's)
 * reading state.db-wal, which holds the newest credential hashes and
 * sessions, or telemetry.db, while the main file is protected.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type KengApp } from '../../src/app.js';
import { loadConfig, type Config, type DeepPartial } from '../../src/config/index.js';
import { createLogger } from '../../src/core/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tmp: string[] = [];
const dir = (prefix: string): string => { const d = mkdtempSync(path.join(tmpdir(), prefix)); tmp.push(d); return d; };
let umask: number;

beforeAll(() => { umask = process.umask(0o022); }); // the usual default: files 0644 unless Keng says otherwise
afterAll(() => {
  process.umask(umask);
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

/** Every file under `root` but media/, with its permission bits in octal. */
function modes(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const rel = path.relative(root, p);
      if (e.isDirectory()) { if (rel !== 'media') walk(p); continue; }
      out[rel] = (statSync(p).mode & 0o777).toString(8);
    }
  };
  walk(root);
  return out;
}

async function start(dataDir: string, overrides: DeepPartial<Config> = {}): Promise<KengApp> {
  // No adminToken: the app generates <dataDir>/admin-token, as on a first install.
  const config = loadConfig({ env: {}, overrides: { dataDir, logLevel: 'silent', http: { port: 0, host: '127.0.0.1' }, mqtt: { port: 0, host: '127.0.0.1' }, ...overrides } });
  const app = buildApp(config, { logger: createLogger('silent') });
  await app.start();
  return app;
}

describe('file modes in the data directory', { timeout: 60_000 }, () => {
  it('embedded store: state.db, telemetry.db (with -wal, -shm), admin-token, media-signing.key, command-keys.json are 0600', async () => {
    const data = dir('keng-modes-');
    const app = await start(data);
    try {
      await app.registry.createArea({ code: 'p', name: 'Tỉnh', level: 'province', parent: null }); // a write: state.db-wal in use
      const m = modes(data);
      for (const f of ['state.db', 'state.db-wal', 'state.db-shm', 'telemetry.db', 'telemetry.db-wal', 'telemetry.db-shm',
        'admin-token', 'media-signing.key', 'command-keys.json']) {
        expect(m[f], f).toBe('600');
      }
      expect(Object.entries(m).filter(([, mode]) => mode !== '600')).toEqual([]);
    } finally {
      await app.stop();
    }
  });

  it('InfluxDB store: the on-disk queue (influx-queue.db, -wal, -shm) is 0600', async () => {
    const data = dir('keng-modes-influx-');
    // Nothing listens on port 9: readings would wait in the queue, which is what is looked at.
    const app = await start(data, { telemetry: { store: 'influxdb' }, influx: { url: 'http://127.0.0.1:9', api: 'v1' } });
    try {
      const m = modes(data);
      for (const f of ['influx-queue.db', 'influx-queue.db-wal', 'influx-queue.db-shm']) expect(m[f], f).toBe('600');
      expect(Object.entries(m).filter(([, mode]) => mode !== '600')).toEqual([]);
    } finally {
      await app.stop();
    }
  });

  it('files an older version left 0644 are 0600 after the next start; `keng backup` copies are 0600', async () => {
    const data = dir('keng-modes-upgrade-');
    await (await start(data)).stop();
    // media-signing.key is left out: src/media creates it 0600 and no version made it otherwise.
    const older = Object.keys(modes(data)).filter((f) => f !== 'media-signing.key');
    for (const f of older) chmodSync(path.join(data, f), 0o644);
    const app = await start(data);
    try {
      expect(Object.entries(modes(data)).filter(([, mode]) => mode !== '600')).toEqual([]);
      const target = path.join(dir('keng-modes-bak-'), 'b1');
      const env: NodeJS.ProcessEnv = {};
      for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KENG_')) env[k] = v;
      env.KENG_DATA_DIR = data;
      await new Promise<void>((resolve, reject) => execFile(process.execPath, [path.join(ROOT, 'bin/keng.js'), 'backup', target], { cwd: ROOT, env, timeout: 60_000 },
        (err, _out, stderr) => (err ? reject(new Error(`keng backup: ${err.message}\n${stderr}`)) : resolve())));
      const b = modes(target);
      for (const f of ['state.db', 'telemetry.db', 'admin-token', 'media-signing.key', 'command-keys.json', 'keng-backup.json']) expect(b[f], f).toBe('600');
      expect(Object.entries(b).filter(([, mode]) => mode !== '600')).toEqual([]);
      expect((statSync(target).mode & 0o777).toString(8)).toBe('700');
    } finally {
      await app.stop();
    }
  });
});

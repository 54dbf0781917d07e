/**
 * `keng backup` (the real CLI, a separate process, as an operator runs it)
 * against a running Keng under write load over MQTT, then a restore: the
 * copy goes into a new data directory and a new Keng starts on it. Every
 * reading acknowledged (PUBACK) before the backup started is there, the
 * media and the admin token came along, and the audit chain verifies.
 */
import { execFile, execSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, publish } from '../helpers/mqtt.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';
import { requireTools } from './media-fixtures.js';

requireTools();
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'bin/keng.js');

function keng(args: string[], dataDir: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KENG_')) env[k] = v;
  env.KENG_DATA_DIR = dataDir;
  // Asynchronous on purpose: the server under test runs in this process and must keep serving meanwhile.
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

const tmp: string[] = [];
const dir = (prefix: string): string => { const d = mkdtempSync(path.join(tmpdir(), prefix)); tmp.push(d); return d; };
let t: TestApp | undefined;
let restored: TestApp | undefined;

beforeAll(() => {
  // The CLI runs the compiled code (bin/keng.js → dist/).
  execSync('npx tsc -p tsconfig.json', { cwd: ROOT, stdio: 'pipe' });
}, 180_000);
afterAll(async () => {
  await restored?.stop();
  await t?.stop();
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

describe('keng backup', { timeout: 180_000 }, () => {
  it('copies a running Keng under write load; a Keng started on the copy has every acknowledged reading', async () => {
    // The test app's admin token comes from its config; a token file like a first start writes is put beside it to be copied.
    const data = dir('keng-data-');
    writeFileSync(path.join(data, 'admin-token'), 'generated-admin-token-for-the-backup-test\n', { mode: 0o600 });
    t = await startTestApp({}, { dataDir: data });
    await seedAreas(t, [{ code: 'p01', name: 'Hà Nội', level: 'province' }, { code: 'c001', name: 'Xã Ba Vì', level: 'commune', parent: 'p01' }]);
    const creds = await seedDevices(t, [{ id: 'soil-1', kind: 'sensor', name: 'Ruộng ông Ba', area: 'c001' }]);
    const tts = await t.api('POST', '/api/v1/media/tts', { text: 'Thông báo: chiều nay họp dân.', name: 'Họp dân' });
    expect(tts.status).toBe(201);
    const mediaId = tts.body.id as string;
    const fw = await t.app.firmware.addPackage({ title: 'keng-soil', version: '1.2.0' }, Buffer.from('firmware image'), 'test');

    const client = await connectDevice(t.mqttUrl, 'soil-1', creds['soil-1']!.secret);
    const acked: number[] = [];
    let stop = false;
    const base = Date.now() - 3_600_000;
    let n = 0;
    const writer = (async () => {
      while (!stop) {
        // 20 readings per message, each with its own ts (ms after `base`): value = its sequence number.
        const batch = Array.from({ length: 20 }, () => { const i = n++; return { ts: base + i, values: { seq: i } }; });
        await publish(client, 'v1/devices/soil-1/telemetry', JSON.stringify(batch));
        for (const r of batch) acked.push(r.values.seq);
      }
    })();
    while (acked.length < 2_000) await new Promise((r) => setTimeout(r, 20));

    const target = path.join(dir('keng-bak-'), 'backup-1');
    const ackedBefore = acked.length;
    const r = await keng(['backup', target, '--json'], t.dataDir);
    const ackedDuring = acked.length - ackedBefore;
    stop = true;
    await writer;
    await end(client);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // The server kept acknowledging readings while the copy was taken.
    expect(ackedDuring).toBeGreaterThan(0);

    const manifest = JSON.parse(r.stdout) as { kind: string; keng: string; files: Array<{ path: string; bytes: number; sha256: string }>; missingMedia: string[]; stateSchemaVersion: number };
    expect(manifest).toMatchObject({ kind: 'keng-backup', keng: '0.1.0', missingMedia: [], missingFirmware: [] });
    expect(manifest.stateSchemaVersion).toBeGreaterThan(0);
    const names = manifest.files.map((f) => f.path).sort();
    expect(names).toEqual(expect.arrayContaining(['state.db', 'telemetry.db', 'admin-token', 'media-signing.key', 'command-keys.json', expect.stringMatching(new RegExp(`^media/${mediaId}\\.mp3$`)),
      'firmware-signing.key', `firmware/${fw.id}.bin`]));
    expect(readFileSync(path.join(target, 'firmware', `${fw.id}.bin`), 'utf8')).toBe('firmware image');
    expect(statSync(path.join(target, 'firmware', `${fw.id}.bin`)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(path.join(target, 'keng-backup.json'), 'utf8'))).toEqual(manifest);
    expect(statSync(target).mode & 0o777).toBe(0o700);
    expect(statSync(path.join(target, 'admin-token')).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(target, 'command-keys.json')).mode & 0o777).toBe(0o600);

    // A second backup into the same (now non-empty) directory is refused.
    const again = await keng(['backup', target], t.dataDir);
    expect(again.code).toBe(73);
    expect(again.stderr).toMatch(/^keng: KENG_ERR_BACKUP_TARGET_NOT_EMPTY: Backup directory .* is not empty/);
    expect(again.stderr.trim().split('\n')).toHaveLength(1);

    // Restore: stop Keng, copy the backup into an empty data directory, start.
    await t.stop();
    t = undefined;
    const newData = dir('keng-restored-');
    for (const f of readdirSync(target)) if (f !== 'keng-backup.json') cpSync(path.join(target, f), path.join(newData, f), { recursive: true });
    restored = await startTestApp({}, { dataDir: newData });

    const seen = new Set<number>();
    let from = new Date(base).toISOString();
    for (;;) {
      const h = await restored.api('GET', `/api/v1/devices/soil-1/telemetry?fields=seq&from=${encodeURIComponent(from)}&to=${encodeURIComponent(new Date(base + n + 1).toISOString())}&limit=10000`);
      expect(h.status).toBe(200);
      for (const p of h.body.points as Array<{ values: { seq: number } }>) seen.add(p.values.seq);
      if (!h.body.nextFrom) break;
      from = h.body.nextFrom;
    }
    const lost = acked.slice(0, ackedBefore).filter((s) => !seen.has(s));
    expect(lost).toEqual([]);
    expect(seen.size).toBeGreaterThanOrEqual(ackedBefore);

    const dev = await restored.api('GET', '/api/v1/devices/soil-1');
    expect(dev.status).toBe(200);
    const media = await restored.api('GET', `/api/v1/media/${mediaId}`);
    expect(media.status).toBe(200);
    expect(existsSync(path.join(newData, 'media', `${mediaId}.mp3`))).toBe(true);
    expect(readFileSync(path.join(newData, 'admin-token'), 'utf8')).toBe(readFileSync(path.join(target, 'admin-token'), 'utf8'));
    // The audit key came along (the keyed audit log verifies below) and the anchors, copied before the state snapshot.
    expect(readFileSync(path.join(newData, 'audit-key'), 'utf8')).toBe(readFileSync(path.join(data, 'audit-key'), 'utf8'));
    expect(existsSync(path.join(target, 'audit-anchors.jsonl'))).toBe(true);
    // The restored controller signs with the same command key: its speakers keep obeying it.
    expect(restored.app.commandKeys.activeKid).toBe((JSON.parse(readFileSync(path.join(target, 'command-keys.json'), 'utf8')) as { active: string }).active);
    await restored.stop({ keepData: true });
    restored = undefined;

    const verify = await keng(['audit', 'verify'], newData);
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/^OK: \d+ audit entries, chain intact/);
    expect(Number(/OK: (\d+)/.exec(verify.stdout)![1])).toBeGreaterThanOrEqual(3); // two areas and a device
    expect(verify.stdout).toMatch(/keyed since seq 1, \d+ anchors checked/);
  });

  it('refuses a target that is a non-empty directory or a file, and a data directory without state', async () => {
    const data = dir('keng-nostate-');
    const none = await keng(['backup', path.join(dir('keng-bak-'), 'x')], data);
    expect(none.code).toBe(66);
    expect(none.stderr).toMatch(/KENG_ERR_NO_STATE/);

    writeFileSync(path.join(data, 'state.db'), '');
    const full = dir('keng-bak-');
    writeFileSync(path.join(full, 'something'), 'x');
    const r = await keng(['backup', full], data);
    expect([r.code, /KENG_ERR_BACKUP_TARGET_NOT_EMPTY/.test(r.stderr)]).toEqual([73, true]);
    const file = path.join(full, 'something');
    expect((await keng(['backup', file], data)).code).toBe(73);
  });
});

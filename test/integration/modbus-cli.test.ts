/**
 * `keng devices add` registers a Modbus sensor with the same rules as the
 * API, `keng devices list --json` shows its settings, and `keng modbus maps`
 * lists the shipped maps. Spawns the compiled CLI (dist/ is rebuilt when older than the sources).
 */
import { execSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALL_MIGRATIONS } from '../../src/migrations.js';
import { StateDb } from '../../src/storage/state/index.js';
import { createLogger } from '../../src/core/index.js';
import { ROOT } from '../helpers/process.js';

let dataDir: string;
function keng(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KENG_')) env[k] = v;
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/keng.js'), ...args], { cwd: ROOT, env: { ...env, KENG_DATA_DIR: dataDir }, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** dist/ older than the sources this test runs (the CLI runs compiled code). */
function stale(): boolean {
  for (const dir of ['src/cli', 'src/modbus', 'src/devices']) {
    for (const f of readdirSync(path.join(ROOT, dir)).filter((x) => x.endsWith('.ts'))) {
      const js = path.join(ROOT, 'dist', dir, f.replace(/\.ts$/, '.js'));
      if (!existsSync(js) || statSync(js).mtimeMs < statSync(path.join(ROOT, dir, f)).mtimeMs) return true;
    }
  }
  return false;
}

beforeAll(async () => {
  if (stale()) {
    try { execSync('npx tsc -p .', { cwd: ROOT, stdio: 'pipe' }); } catch { /* checked below */ }
  }
  if (!existsSync(path.join(ROOT, 'dist/src/cli/modbus.js'))) throw new Error('dist/src/cli/modbus.js missing: the build failed');
  dataDir = mkdtempSync(path.join(tmpdir(), 'keng-modbus-cli-'));
  const db = new StateDb({ dataDir, logger: createLogger('silent'), migrations: ALL_MIGRATIONS });
  await db.start();
  await db.stop();
  expect(keng(['areas', 'add', '--code', 'p1', '--name', 'Tinh', '--level', 'province']).status).toBe(0);
  expect(keng(['areas', 'add', '--code', 'ca', '--name', 'Xa A', '--level', 'commune', '--parent', 'p1']).status).toBe(0);
}, 120_000);
afterAll(() => { if (dataDir) rmSync(dataDir, { recursive: true, force: true }); });

describe('keng CLI and Modbus devices', { timeout: 120_000 }, () => {
  it('lists the shipped maps', () => {
    const r = keng(['modbus', 'maps', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Array<{ name: string }>).map((m) => m.name)).toContain('soil-3in1');
    expect(keng(['modbus', 'maps']).stdout).toMatch(/soil-3in1\n {2}Soil moisture.*\n {2}fields: soil_moisture \(%\), temperature \(°C\), soil_ec \(µS\/cm\)/);
  });

  it('registers a sensor behind a TCP gateway and one on a serial line with an inline map', () => {
    const tcp = keng(['devices', 'add', '--id', 'soil-1', '--kind', 'sensor', '--name', 'Ruong 1', '--area', 'ca',
      '--modbus-tcp', '10.0.0.5:5020', '--unit-id', '2', '--map', 'soil-3in1', '--poll', '30', '--json']);
    expect(tcp.status, tcp.stderr).toBe(0);
    expect(JSON.parse(tcp.stdout)).toMatchObject({ id: 'soil-1', transport: { type: 'modbus-tcp', host: '10.0.0.5', port: 5020, unitId: 2 }, registerMap: 'soil-3in1', pollIntervalSec: 30 });
    const file = path.join(dataDir, 'map.json');
    writeFileSync(file, JSON.stringify({ registers: [{ field: 'level', function: 'input', address: 0, type: 'uint16', unit: 'cm' }] }));
    const rtu = keng(['devices', 'add', '--id', 'level-1', '--kind', 'sensor', '--name', 'Muc nuoc', '--area', 'ca',
      '--modbus-rtu', '/dev/ttyUSB0', '--baud', '4800', '--unit-id', '5', '--map-file', file]);
    expect(rtu.status, rtu.stderr).toBe(0);
    expect(rtu.stdout).toMatch(/Modbus: \/dev\/ttyUSB0 4800 baud, parity none, unit 5, map inline \(1 registers\), every 60 s/);
    const list = JSON.parse(keng(['devices', 'list', '--json']).stdout) as Array<{ id: string; transport?: { type: string } }>;
    expect(list.map((d) => [d.id, d.transport?.type])).toEqual([['level-1', 'modbus-rtu'], ['soil-1', 'modbus-tcp']]);
  });

  it('refuses what the API refuses, in one KENG_ERR line, and keeps no half-registered device', () => {
    const clash = keng(['devices', 'add', '--id', 'level-2', '--kind', 'sensor', '--name', 'x', '--area', 'ca',
      '--modbus-rtu', '/dev/ttyUSB0', '--baud', '9600', '--unit-id', '6', '--map', 'soil-3in1']);
    expect(clash.status).toBe(1);
    expect(clash.stderr).toMatch(/^keng: KENG_ERR_CONFLICT: .*runs at 4800 baud/);
    const unknown = keng(['devices', 'add', '--id', 'level-3', '--kind', 'sensor', '--name', 'x', '--area', 'ca',
      '--modbus-tcp', '10.0.0.5', '--unit-id', '3', '--map', 'nope']);
    expect(unknown.stderr).toMatch(/^keng: KENG_ERR_UNPROCESSABLE: .*register map "nope" is not one Keng ships/);
    expect(keng(['devices', 'add', '--id', 'x1', '--kind', 'sensor', '--name', 'x', '--area', 'ca', '--modbus-tcp', 'gw', '--map', 'soil-3in1']).stderr)
      .toMatch(/KENG_ERR_VALIDATION: .*a Modbus device needs --unit-id/);
    const ids = (JSON.parse(keng(['devices', 'list', '--json']).stdout) as Array<{ id: string }>).map((d) => d.id);
    expect(ids).toEqual(['level-1', 'soil-1']);
  });
});

/**
 * Two servers on one data directory, as real child processes: the second
 * refuses with one line naming the directory and the holder, the first keeps
 * serving, the CLI keeps working alongside it, and after the first is killed
 * with SIGKILL a new server starts on the directory at once (no stale lock).
 */
import { describe, it, expect, afterEach } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT, freePort, spawnKeng, type KengProcess } from '../helpers/process.js';

const TOKEN = 'lock-test-admin-token-0123456789';
let procs: KengProcess[] = [];
let dirs: string[] = [];

afterEach(() => {
  for (const p of procs) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
  procs = [];
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

/** Runs a server that is expected to refuse; resolves with how it ended and what it printed. */
async function runRefused(env: Record<string, string>, httpPort: number, mqttPort: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, [path.join(ROOT, 'dist/src/main.js')], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', KENG_LOG_LEVEL: 'info', KENG_HTTP_HOST: '127.0.0.1', KENG_MQTT_HOST: '127.0.0.1',
      KENG_HTTP_PORT: String(httpPort), KENG_MQTT_PORT: String(mqttPort), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d) => { stdout += d; });
  proc.stderr.on('data', (d) => { stderr += d; });
  const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
  const code = await new Promise<number | null>((resolve) => proc.once('close', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

async function api(base: string, method: string, route: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await fetch(base + route, { method, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : undefined };
}

describe('two servers on one data directory', () => {
  it('the second refuses in one line naming the directory, the first keeps serving; after SIGKILL a new one starts', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-lock-')); dirs.push(dataDir);
    const env = { KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: TOKEN };
    const first = await spawnKeng(env); procs.push(first);
    expect((await api(first.httpUrl, 'POST', '/api/v1/areas', { code: 'p1', name: 'Tỉnh', level: 'province' })).status).toBe(201);

    // Same directory through another spelling of the path; its own free ports, so only the directory clashes.
    const [httpPort, mqttPort] = [await freePort(), await freePort()];
    const second = await runRefused({ ...env, KENG_DATA_DIR: path.join(dataDir, '.') + path.sep }, httpPort, mqttPort);
    expect(second.code).toBe(75);
    expect(second.stderr.trim().split('\n')).toHaveLength(1);
    const esc = (t: string): string => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    expect(second.stderr).toMatch(new RegExp(`^keng: Data directory ${esc(dataDir)} is in use by another Keng process `
      + `\\(pid ${first.proc.pid}, since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\\); stop it, or set KENG_DATA_DIR to another directory\n$`));
    expect(second.stdout).toBe(''); // refused before anything started or logged
    await expect(fetch(`http://127.0.0.1:${httpPort}/readyz`)).rejects.toThrow();

    // The first is untouched: still ready, still writing.
    expect((await fetch(`${first.httpUrl}/readyz`)).status).toBe(200);
    expect((await api(first.httpUrl, 'POST', '/api/v1/areas', { code: 'c1', name: 'Xã', level: 'commune', parent: 'p1' })).status).toBe(201);

    // The CLI works alongside the running server (the lock is for servers only).
    const cli = spawnSync(process.execPath, [path.join(ROOT, 'bin/keng.js'), 'areas', 'list', '--json'],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', KENG_DATA_DIR: dataDir }, encoding: 'utf8', timeout: 20_000 });
    expect(cli.status).toBe(0);
    expect((JSON.parse(cli.stdout) as { code: string }[]).map((a) => a.code).sort()).toEqual(['c1', 'p1']);

    // kill -9 leaves keng.pid behind but no lock: a new server starts at once and has the state.
    first.proc.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    expect(existsSync(path.join(dataDir, 'keng.pid'))).toBe(true);
    const third = await spawnKeng(env); procs.push(third);
    expect((await api(third.httpUrl, 'GET', '/api/v1/areas')).body.map((a: { code: string }) => a.code).sort()).toEqual(['c1', 'p1']);

    // A clean stop releases the directory and removes the holder record.
    third.proc.kill('SIGTERM');
    expect((await third.exited).code).toBe(0);
    expect(existsSync(path.join(dataDir, 'keng.pid'))).toBe(false);
  }, 90_000);
});

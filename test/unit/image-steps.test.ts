/**
 * scripts/image-steps.sh, the container image's build steps, run where they
 * can be without Docker: every Debian package they name must have an install
 * candidate here (this machine runs Debian 12, as node:20-bookworm-slim
 * does), and the last steps (the `keng` CLI on PATH, the tool checks) run
 * for real against this checkout's dist/.
 */
import { execFileSync, execSync, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const SCRIPT = path.join(ROOT, 'scripts/image-steps.sh');
let binDir: string;

function steps(args: string[], env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', [SCRIPT, ...args], { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  // keng --help runs the compiled CLI.
  if (!existsSync(path.join(ROOT, 'dist/src/cli/index.js'))) execSync('npx tsc -p tsconfig.json', { cwd: ROOT, stdio: 'pipe' });
  binDir = mkdtempSync(path.join(tmpdir(), 'keng-bin-'));
}, 180_000);
afterAll(() => rmSync(binDir, { recursive: true, force: true }));

describe('scripts/image-steps.sh', { timeout: 60_000 }, () => {
  it('is a valid bash script', () => {
    execFileSync('bash', ['-n', SCRIPT]);
  });

  it('--dry-run: every Debian package of the build and runtime stages can be installed', () => {
    const r = steps(['--dry-run', 'build-deps', 'runtime-deps']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    for (const p of ['python3', 'make', 'g++', 'ffmpeg', 'espeak-ng', 'espeak-ng-data', 'ca-certificates']) {
      expect(r.stdout).toMatch(new RegExp(`would install ${p.replace(/[+]/g, '\\+')} \\(`));
    }
  });

  it('--dry-run app: prints the npm steps without running them', () => {
    const r = steps(['--dry-run', 'app'], { KENG_APP_DIR: '/nonexistent' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('would run: npm ci');
    expect(r.stdout).toContain('would run: npm prune --omit=dev');
  });

  it('keng-bin verify: `keng` on PATH runs from the built dist, and ffmpeg, ffprobe, espeak-ng (vi) work', () => {
    const r = steps(['keng-bin', 'verify'], { KENG_APP_DIR: ROOT, KENG_BIN_DIR: binDir });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(lstatSync(path.join(binDir, 'keng')).isSymbolicLink()).toBe(true);
    expect(r.stdout).toContain('verified: keng CLI on PATH, ffmpeg, ffprobe, espeak-ng with voice vi');
    const help = execFileSync(path.join(binDir, 'keng'), ['--help'], { encoding: 'utf8' });
    expect(help).toMatch(/backup/);
  });

  it('verify fails when a tool is missing (PATH without ffmpeg)', () => {
    const r = spawnSync('/bin/bash', [SCRIPT, 'verify'], { env: { PATH: binDir, KENG_BIN_DIR: binDir }, encoding: 'utf8' });
    expect(r.status).not.toBe(0);
  });

  it('refuses an unknown step', () => {
    expect(steps(['nosuch']).status).toBe(2);
  });
});

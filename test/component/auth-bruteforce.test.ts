/**
 * Login brute force over real HTTP (what must hold: "the delay and lockout
 * hold; audit chain verification catches an edited row"): the delay grows
 * (429 + Retry-After), the temporary lock holds even with the right password
 * and across a restart, an admin unlocks earlier, the audit log has every
 * event and its chain verifies, and a row tampered with SQL is reported.
 * More attacks (per address, the last admin, lock expiry): auth-lockout.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { runCli } from '../../src/cli/index.js';
import { startAccountsApp, type AccountsApp } from './auth-fixture.js';

const PW = 'ruộng lúa xanh 2025';
/** The login delays are read off Retry-After: the app's clock moves only when the test says so. */
const T0 = Date.now();
const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-brute-'));
let t: AccountsApp | undefined;
afterAll(async () => { await t?.stop(); rmSync(dataDir, { recursive: true, force: true }); });

/** Runs `keng ...` in-process against the test's data directory. */
async function keng(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const saved = { dir: process.env.KENG_DATA_DIR, code: process.exitCode };
  process.env.KENG_DATA_DIR = dataDir;
  process.exitCode = undefined;
  let stdout = '';
  let stderr = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((c) => { stdout += String(c); return true; });
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((c) => { stderr += String(c); return true; });
  try {
    await runCli(['node', 'keng', ...args]);
    return { code: Number(process.exitCode ?? 0), stdout, stderr };
  } finally {
    o.mockRestore();
    e.mockRestore();
    process.exitCode = saved.code;
    if (saved.dir === undefined) delete process.env.KENG_DATA_DIR; else process.env.KENG_DATA_DIR = saved.dir;
  }
}

describe('login brute force over HTTP', () => {
  it('growing delay, a 15-minute lock that survives the right password and a restart, admin unlock, audited and chained', async () => {
    t = await startAccountsApp({ dataDir, stoppedAt: T0 });
    expect((await t.http('POST', '/api/v1/areas', { code: 'P', name: 'Tỉnh', level: 'province' })).status).toBe(201);
    expect((await t.http('POST', '/api/v1/users', { username: 'lan', password: PW, role: 'viewer', areas: ['P'] })).status).toBe(201);
    const login = (password: string): ReturnType<AccountsApp['http']> => t!.http('POST', '/api/v1/auth/login', { username: 'lan', password }, null);

    const retryAfter: number[] = [];
    for (let i = 1; i <= 10; i++) {
      const r = await login('wrong password ' + i);
      expect([r.status, r.body.error.code]).toEqual([401, 'KENG_ERR_LOGIN_FAILED']);
      if (i === 10) break;
      // Straight away: refused early, even with the right password, with the wait in Retry-After.
      const early = await login(PW);
      expect([early.status, early.body.error.code]).toEqual([429, 'KENG_ERR_RATE_LIMITED']);
      const s = Number(early.headers['retry-after']);
      retryAfter.push(s);
      t.advance(s * 1000);
    }
    expect(retryAfter).toEqual([1, 2, 4, 8, 16, 32, 60, 60, 60]);

    // Locked for 15 minutes: the right password is refused (and not even checked); Retry-After counts down.
    for (const [wait, left] of [[0, 900], [14 * 60_000, 60]]) {
      t.advance(wait!);
      const r = await login(PW);
      expect([r.status, r.body.error.code, Number(r.headers['retry-after'])]).toEqual([423, 'KENG_ERR_ACCOUNT_LOCKED', left]);
    }
    const listed = await t.http('GET', '/api/v1/users');
    const lan = listed.body.find((u: { username: string }) => u.username === 'lan');
    expect(lan).toMatchObject({ locked: true });
    expect(Date.parse(lan.lockedUntil) - Date.parse(lan.lockedAt)).toBe(900_000);

    // A restart does not reset the lock.
    const offset = t.offset();
    await t.stop();
    t = await startAccountsApp({ dataDir, startOffsetMs: offset, stoppedAt: T0 });
    expect((await login(PW)).status).toBe(423);

    // Only an admin unlocks (an operator may not; the CLI can, see below).
    expect((await t.http('PATCH', '/api/v1/users/lan', { unlock: true })).body).toMatchObject({ username: 'lan', locked: false });
    const ok = await login(PW);
    expect(ok.status).toBe(200);
    expect(ok.body.token).toMatch(/^kengs_[A-Za-z0-9_-]{43}$/);
    expect((await t.http('GET', '/api/v1/auth/me', undefined, ok.body.token)).body).toMatchObject({ kind: 'user', id: 'lan', role: 'viewer' });

    // Audit: ten failures, the lockout, the unlock and the login, by whom and from where.
    const audit = await t.http('GET', '/api/v1/audit?limit=1000');
    const actions = audit.body.entries.map((e: { action: string }) => e.action).reverse();
    expect(actions.filter((a: string) => a === 'auth.login_failed')).toHaveLength(10);
    expect(actions).toEqual(expect.arrayContaining(['area.create', 'user.create', 'auth.lockout', 'user.update', 'user.unlock', 'auth.login']));
    expect(actions.indexOf('auth.lockout')).toBeLessThan(actions.indexOf('user.unlock'));
    const failed = audit.body.entries.find((e: { action: string }) => e.action === 'auth.login_failed');
    expect(failed).toMatchObject({ actor: 'anonymous', target: 'user:lan' });
    expect(failed.ip).toMatch(/127\.0\.0\.1/);
    expect(audit.body.entries.find((e: { action: string }) => e.action === 'user.unlock')).toMatchObject({ actor: 'admin:admin' });
    expect(JSON.stringify(audit.body)).not.toContain(PW);
    expect(JSON.stringify(audit.body)).not.toContain(ok.body.token);

    // The chain verifies, in-process and with `keng audit verify`.
    expect(await t.app.auditChain.verify()).toMatchObject({ ok: true });
    const good = await keng('audit', 'verify');
    expect(good.code).toBe(0);
    expect(good.stdout).toMatch(/^OK: \d+ audit entries, chain intact/);

    // Tamper: hide one failed login.
    const seq = (t.app.stateDb.db.prepare("SELECT seq FROM audit_log WHERE action = 'auth.login_failed' ORDER BY seq LIMIT 1 OFFSET 4").pluck().get()) as number;
    t.app.stateDb.db.prepare("UPDATE audit_log SET action = 'auth.login' WHERE seq = ?").run(seq);
    expect(await t.app.auditChain.verify()).toMatchObject({ ok: false, seq });
    const bad = await keng('audit', 'verify');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`KENG_ERR_AUDIT_CHAIN_BROKEN: Audit log chain broken at seq ${seq}`);
  }, 60_000);

  it('keng users unlock and users list (CLI) with the server running', async () => {
    const tt = t!;
    const login = (password: string) => tt.http('POST', '/api/v1/auth/login', { username: 'lan', password }, null);
    // Lock again (the IP limit is generous but grows too: jump past each wait).
    for (let i = 0; i < 10; i++) { tt.advance(600_000); expect((await login('nope nope ' + i)).status).toBe(401); }
    expect((await login(PW)).status).toBe(423);
    const list = await keng('users', 'list');
    expect(list.stdout).toMatch(/lan\s+viewer\s+locked/);
    const r = await keng('users', 'unlock', 'lan');
    expect([r.code, r.stdout.trim()]).toEqual([0, 'User lan unlocked']);
    tt.advance(600_000);
    expect((await login(PW)).status).toBe(200);
    expect((await keng('users', 'unlock', 'nobody')).code).toBe(1);
  }, 60_000);
});

describe('login replies do not reveal which usernames exist', () => {
  it('unknown user and wrong password: same status, body and comparable time', async () => {
    const a = await startAccountsApp();
    try {
      await a.inject('POST', '/api/v1/areas', { code: 'P', name: 'Tỉnh', level: 'province' });
      await a.inject('POST', '/api/v1/users', { username: 'hoa', password: PW, role: 'viewer', areas: ['P'] });
      const attempt = async (username: string, ip: string) => {
        const t0 = performance.now();
        const r = await a.app.api.fastify.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { username, password: 'not the password' }, remoteAddress: ip });
        return { status: r.statusCode, body: r.body, ms: performance.now() - t0 };
      };
      const known: number[] = [];
      const unknown: number[] = [];
      for (let i = 0; i < 4; i++) {
        const k = await attempt('hoa', `10.9.0.${i}`);
        const u = await attempt(`ghost${i}`, `10.9.1.${i}`);
        expect(u.status).toBe(k.status);
        expect(u.body).toBe(k.body);
        known.push(k.ms); unknown.push(u.ms);
        a.advance(120_000);
      }
      const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
      // Both run one scrypt at the same cost (tens of ms): no shortcut for unknown names.
      expect(median(unknown)).toBeGreaterThan(median(known) / 3);
      expect(median(unknown)).toBeLessThan(median(known) * 3);
      // Unknown names lock out exactly like real ones.
      for (let i = 0; i < 10; i++) { a.advance(120_000); await attempt('ghost-x', `10.9.2.${i}`); }
      const locked = await attempt('ghost-x', '10.9.3.1');
      expect(locked.status).toBe(423);
    } finally { await a.stop(); }
  }, 60_000);
});

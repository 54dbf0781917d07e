/**
 * Account rules that must hold through the real interfaces (HTTP, and the
 * `keng` CLI as a separate process on the server's data directory):
 *
 *  - trivial passwords are refused with a sentence and a reason, on
 *    creation, admin reset, self-service change and `keng users add/passwd`;
 *    Vietnamese passphrases pass;
 *  - an operator probing usernames of another commune learns nothing more
 *    than from a reserved name (no KENG_ERR_USER_EXISTS outside its scope);
 *  - an admin locked out recovers from the server's shell (`keng users
 *    unlock`, `keng users passwd`), and the admin token is never throttled.
 *
 * The CLI runs from dist/ (`npm run build` first).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAccountsApp, type AccountsApp, type Reply } from './auth-fixture.js';
import { seedAreas } from '../helpers/seed.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'bin/keng.js');
const PW = 'lua-nep-cai-hoa-vang';
const WEAK = ['password123', 'keng2026', '12345678901', 'qwertyuiop12', 'matkhau12345'];

let t: AccountsApp;
beforeAll(async () => {
  if (!existsSync(path.join(ROOT, 'dist/src/cli/users.js'))) throw new Error('dist/ is missing or stale: run `npm run build` first');
  t = await startAccountsApp({ stoppedAt: Date.now(), config: { http: { trustProxy: ['loopback'] } } });
  await seedAreas(t, [
    { code: 'P', name: 'Tỉnh', level: 'province' },
    { code: 'A', name: 'Xã A', level: 'commune', parent: 'P' },
    { code: 'B', name: 'Xã B', level: 'commune', parent: 'P' },
  ]);
}, 60_000);
afterAll(async () => { await t?.stop(); });

const code = (r: Reply): [number, string | undefined] => [r.status, r.body?.error?.code];

/** `keng <args>` as its own process on the test server's data directory, `input` on stdin. */
function keng(args: string[], input = ''): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KENG_')) env[k] = v;
    const p = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...env, KENG_DATA_DIR: t.dataDir } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c) => { stdout += String(c); });
    p.stderr.on('data', (c) => { stderr += String(c); });
    p.on('error', reject);
    p.on('close', (status) => resolve({ status, stdout, stderr }));
    p.stdin.end(input);
  });
}

describe('trivial passwords are refused', () => {
  it('on creation: 400 KENG_ERR_WEAK_PASSWORD with what to change; passphrases pass', async () => {
    const add = (username: string, password: string) => t.http('POST', '/api/v1/users', { username, password, role: 'viewer', areas: ['A'] });
    for (const password of WEAK) {
      const r = await add('binh', password);
      expect({ password, code: code(r) }).toEqual({ password, code: [400, 'KENG_ERR_WEAK_PASSWORD'] });
      expect(r.body.error.details).toMatchObject({ minLength: 10, minScore: 3 });
    }
    const guessable = await add('binh', 'password123');
    expect(guessable.body.error.message).toMatch(/^Password refused: password is too easy to guess \(strength 0 of 4, at least 3 needed\): This is a commonly used password\./);
    expect(guessable.body.error.details).toMatchObject({ reason: 'guessable', score: 0 });
    expect((await add('binh', 'keng2026')).body.error).toMatchObject({ message: 'Password refused: password must have at least 10 characters', details: { reason: 'too-short' } });
    expect((await add('nguyen.van.binh', 'nguyen.van.binh')).body.error.details.reason).toBe('username');
    expect((await add('nguyen.van.binh', 'nguyenvanbinh2026')).body.error.details.reason).toBe('guessable');
    expect((await add('binh', '              ')).body.error.details.reason).toBe('spaces');
    expect((await add('binh', ' lua-nep-cai-hoa-vang ')).body.error).toMatchObject({ message: 'Password refused: password must not begin or end with a space' });
    expect((await add('binh', PW)).status).toBe(201);
    expect((await add('cuc', 'đồng ruộng quê hương')).status).toBe(201);
    // Nothing refused was created, and no refused password is in the audit log.
    expect(JSON.stringify((await t.http('GET', '/api/v1/audit?limit=1000')).body)).not.toContain('password123');
  }, 60_000);

  it('on admin reset and self-service change', async () => {
    expect(code(await t.http('PATCH', '/api/v1/users/binh', { password: 'password1234' }))).toEqual([400, 'KENG_ERR_WEAK_PASSWORD']);
    const s = (await t.http('POST', '/api/v1/auth/login', { username: 'binh', password: PW }, null)).body.token as string;
    expect(code(await t.http('PATCH', '/api/v1/users/binh', { password: 'binh12345678', currentPassword: PW }, s))).toEqual([400, 'KENG_ERR_WEAK_PASSWORD']);
    expect((await t.http('GET', '/api/v1/auth/me', undefined, s)).status).toBe(200); // a refused change ends nothing
    expect((await t.http('PATCH', '/api/v1/users/binh', { password: 'cay-lua-tren-dong-xanh', currentPassword: PW }, s)).status).toBe(200);
  }, 60_000);

  it('by `keng users add` and `keng users passwd`', async () => {
    const weak = await keng(['users', 'add', '--username', 'dao', '--role', 'viewer', '--areas', 'A'], 'password123\n');
    expect(weak.status).toBe(1);
    expect(weak.stderr).toMatch(/^keng: KENG_ERR_WEAK_PASSWORD: Password refused: password is too easy to guess/);
    expect((await keng(['users', 'add', '--username', 'dao', '--role', 'viewer', '--areas', 'A'], `${PW}\n`)).status).toBe(0);
    const passwd = await keng(['users', 'passwd', 'dao'], '12345678901\n');
    expect([passwd.status, passwd.stderr]).toEqual([1, expect.stringMatching(/KENG_ERR_WEAK_PASSWORD/)]);
  }, 60_000);
});

describe('usernames of another commune do not leak', () => {
  it('an operator gets the same reply for a name taken elsewhere as for a reserved one; 409 USER_EXISTS only within its scope', async () => {
    const op = { username: 'can-bo-a', password: 'can-bo-xa-a-lam-viec', role: 'operator', areas: ['A'] };
    expect((await t.http('POST', '/api/v1/users', op)).status).toBe(201);
    expect((await t.http('POST', '/api/v1/users', { username: 'nong-dan-b', password: PW, role: 'viewer', areas: ['B'] })).status).toBe(201);
    expect((await t.http('POST', '/api/v1/users', { username: 'nong-dan-a', password: PW, role: 'viewer', areas: ['A'] })).status).toBe(201);
    const s = (await t.http('POST', '/api/v1/auth/login', { username: op.username, password: op.password }, null)).body.token as string;
    const create = (username: string, password = 'mot-mat-khau-rat-dai') =>
      t.http('POST', '/api/v1/users', { username, password, role: 'viewer', areas: ['A'] }, s);
    const generic = (r: Reply, name: string) => ({ status: r.status, body: JSON.stringify(r.body).replaceAll(name, '<name>') });

    const elsewhere = await create('nong-dan-b');
    const reserved = await create('admin');
    expect(code(elsewhere)).toEqual([409, 'KENG_ERR_USERNAME_UNAVAILABLE']);
    expect(generic(elsewhere, 'nong-dan-b')).toEqual(generic(reserved, 'admin'));
    expect(elsewhere.body.error.message).toBe('Username "nong-dan-b" cannot be used; choose another');
    // Within its scope the operator sees the user anyway: the precise answer.
    expect(code(await create('nong-dan-a'))).toEqual([409, 'KENG_ERR_USER_EXISTS']);
    // A request that fails for another reason fails the same way whether the name is taken elsewhere or free.
    expect(generic(await create('nong-dan-b', 'password123'), 'nong-dan-b')).toEqual(generic(await create('ten-moi-tinh', 'password123'), 'ten-moi-tinh'));
    // Other routes answer as for a name nobody has.
    for (const [method, body] of [['PATCH', { disabled: true }], ['DELETE', undefined]] as const) {
      const taken = await t.http(method, '/api/v1/users/nong-dan-b', body, s);
      const free = await t.http(method, '/api/v1/users/khong-ai-ca', body, s);
      expect(generic(taken, 'nong-dan-b')).toEqual(generic(free, 'khong-ai-ca'));
      expect(taken.status).toBe(404);
    }
    // The admin sees everything: the precise answer; reserved names are refused for everyone.
    expect(code(await t.http('POST', '/api/v1/users', { username: 'nong-dan-b', password: PW, role: 'viewer', areas: ['B'] }))).toEqual([409, 'KENG_ERR_USER_EXISTS']);
    expect(code(await t.http('POST', '/api/v1/users', { username: 'root', password: PW, role: 'admin' }))).toEqual([409, 'KENG_ERR_USERNAME_UNAVAILABLE']);
    // The probing is visible to admins.
    const refused = (await t.http('GET', '/api/v1/audit?action=user.create_refused')).body.entries as Array<Record<string, unknown>>;
    expect(refused.filter((e) => e.actor === 'user:can-bo-a').map((e) => e.target).sort()).toEqual(['user:admin', 'user:nong-dan-b']);
  }, 60_000);
});

describe('an admin locked out recovers from the server', () => {
  it('keng users unlock and keng users passwd; the admin token is never throttled', async () => {
    const PW2 = 'quan-tri-vien-cua-xa';
    expect((await t.http('POST', '/api/v1/users', { username: 'quan-tri', password: PW2, role: 'admin' })).status).toBe(201);
    expect((await t.http('POST', '/api/v1/users', { username: 'pho-quan-tri', password: PW2, role: 'admin' })).status).toBe(201);
    const login = (password: string, ip: string) => t.http('POST', '/api/v1/auth/login', { username: 'quan-tri', password }, null, { 'x-forwarded-for': ip });
    // Lock quan-tri for everyone (another admin can still log in, so it is not the last one).
    for (let i = 0; i < 10; i++) { expect((await login(`sai mat khau ${i}`, `203.0.113.${i}`)).status).toBe(401); t.advance(61_000); }
    expect(code(await login(PW2, '192.0.2.1'))).toEqual([423, 'KENG_ERR_ACCOUNT_LOCKED']);
    // The admin token works all along.
    expect((await t.http('GET', '/api/v1/users')).status).toBe(200);

    const list = await keng(['users', 'list']);
    expect(list.stdout).toMatch(/quan-tri\s+admin\s+locked until \d{4}-/);
    const unlock = await keng(['users', 'unlock', 'quan-tri']);
    expect([unlock.status, unlock.stdout.trim()]).toEqual([0, 'User quan-tri unlocked']);
    const ok = await login(PW2, '192.0.2.1');
    expect(ok.status).toBe(200);

    // Forgotten password: reset from the shell; the old sessions end, the new password works.
    const passwd = await keng(['users', 'passwd', 'quan-tri'], 'mat-khau-moi-cua-quan-tri\n');
    expect([passwd.status, passwd.stdout.trim()]).toEqual([0, 'Password of quan-tri changed; its sessions ended']);
    expect((await t.http('GET', '/api/v1/auth/me', undefined, ok.body.token)).status).toBe(401);
    expect((await login('mat-khau-moi-cua-quan-tri', '192.0.2.1')).status).toBe(200);
    const audit = (await t.http('GET', '/api/v1/audit?action=user&limit=1000')).body.entries as Array<Record<string, any>>;
    expect(audit.find((e) => e.action === 'user.unlock')).toMatchObject({ actor: expect.stringMatching(/^cli:/), target: 'user:quan-tri' });
    expect(audit.find((e) => e.action === 'user.update' && e.target === 'user:quan-tri')).toMatchObject({ actor: expect.stringMatching(/^cli:/), after: { passwordChanged: true } });
  }, 120_000);
});

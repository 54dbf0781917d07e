/**
 * Login protection that cannot be turned against users, attacked over real
 * HTTP. Keng runs behind a "proxy" (http.trustProxy = loopback), so each
 * request names its client address in X-Forwarded-For: attacker and staff
 * come from different addresses. The app's clock stands still and moves only
 * when a test says so (Retry-After is honoured by jumping ahead), so minutes
 * of lock take no time.
 *
 *  - one address cycling through 50 usernames is refused (429) after a
 *    handful, while a user elsewhere logs in;
 *  - an attacker cannot lock the last admin out: only its own addresses are
 *    locked; the admin logs in from elsewhere; an address it logged in from
 *    before is not held up at all;
 *  - with a second admin, the attacked one is locked for everyone, for 15
 *    min, and then opens by itself; the other one is then the last admin;
 *  - the lock of a real user and of an unknown name are the same reply;
 *    repeated locks grow; an admin unlock ends one at once;
 *  - without trustProxy, a forged X-Forwarded-For does not dodge the throttle.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startAccountsApp, type AccountsApp, type Reply } from './auth-fixture.js';

const ADMIN_PW = 'may-chu-xa-van-hoat-dong';
const PW = 'lua-nep-cai-hoa-vang';
const apps: AccountsApp[] = [];
afterEach(async () => { while (apps.length) await apps.pop()!.stop(); });

async function start(trustProxy: boolean | string[] = ['loopback']): Promise<AccountsApp> {
  const t = await startAccountsApp({ stoppedAt: Date.now(), config: { http: { trustProxy } } });
  apps.push(t);
  expect((await t.http('POST', '/api/v1/areas', { code: 'P', name: 'Tỉnh', level: 'province' })).status).toBe(201);
  return t;
}

async function addUser(t: AccountsApp, username: string, role: string, password = PW): Promise<void> {
  const r = await t.http('POST', '/api/v1/users', { username, password, role, areas: ['P'] });
  expect([username, r.status]).toEqual([username, 201]);
}

const login = (t: AccountsApp, username: string, password: string, ip: string): Promise<Reply> =>
  t.http('POST', '/api/v1/auth/login', { username, password }, null, { 'x-forwarded-for': ip });

const retryAfter = (r: Reply): number => Number(r.headers['retry-after']);

/**
 * What a patient attacker does: wrong passwords from `ip`, waiting out every 429, until the
 * reply is 423. Returns the failures (401) it got in, or throws after `max` of them.
 */
async function guessUntilLocked(t: AccountsApp, username: string, ip: string, max = 30): Promise<number> {
  let failures = 0;
  for (;;) {
    const r = await login(t, username, `guess number ${failures} xyz`, ip);
    if (r.status === 423) return failures;
    if (r.status === 429) { t.advance(retryAfter(r) * 1000); continue; }
    expect(r.status).toBe(401);
    if (++failures > max) throw new Error(`${username} from ${ip}: not locked after ${max} failures`);
  }
}

async function lockedFlag(t: AccountsApp, username: string): Promise<boolean> {
  return (await t.http('GET', '/api/v1/users')).body.find((u: { username: string }) => u.username === username).locked;
}

async function auditOf(t: AccountsApp, action: string): Promise<Array<Record<string, any>>> {
  return (await t.http('GET', `/api/v1/audit?action=${action}&limit=1000`)).body.entries;
}

describe('per address: one source cannot lock everyone', () => {
  it('a script cycling 50 usernames gets 429 after 6 tries; a user elsewhere logs in; nobody is locked', async () => {
    const t = await start();
    await addUser(t, 'lan', 'viewer');
    const statuses: number[] = [];
    for (let i = 0; i < 50; i++) {
      const r = await login(t, i === 20 ? 'lan' : `nguoi-dung-${i}`, 'spray spray 2025', '203.0.113.99');
      statuses.push(r.status);
      if (r.status === 429) expect(retryAfter(r)).toBeGreaterThanOrEqual(1);
    }
    // 5 failures are free, the 6th costs: from then on every attempt is refused before any password check.
    expect(statuses.slice(0, 6)).toEqual(Array(6).fill(401));
    expect(statuses.slice(6)).toEqual(Array(44).fill(429));
    expect(await lockedFlag(t, 'lan')).toBe(false);
    expect((await login(t, 'lan', PW, '192.0.2.5')).status).toBe(200);
    // Honouring Retry-After, the script gets ten more guesses in about 13 minutes, then one per 5 minutes.
    const waits: number[] = [];
    for (let i = 0; i < 10; i++) {
      const early = await login(t, `nguoi-dung-${i}`, 'spray spray 2025', '203.0.113.99');
      expect(early.status).toBe(429);
      waits.push(retryAfter(early));
      t.advance(retryAfter(early) * 1000);
      expect((await login(t, `nguoi-dung-${i}`, 'spray spray 2025', '203.0.113.99')).status).toBe(401);
    }
    expect(waits).toEqual([1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
  }, 120_000);

  it('without http.trustProxy a forged X-Forwarded-For is ignored: the socket address is throttled', async () => {
    const t = await start(false);
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await login(t, `ai-do-${i}`, 'spray spray 2025', `198.18.0.${i}`)).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401, 401, 429, 429]);
    const failed = await auditOf(t, 'auth.login_failed');
    expect(new Set(failed.map((e) => e.ip))).toEqual(new Set(['127.0.0.1']));
  }, 60_000);
});

describe('the last admin is never locked out', () => {
  it('an attacker locks only its own addresses; the admin logs in from elsewhere, and from a known address at once', async () => {
    const t = await start();
    await addUser(t, 'quan-tri', 'admin', ADMIN_PW);
    // The admin has logged in from the office before: a known address.
    expect((await login(t, 'quan-tri', ADMIN_PW, '192.0.2.10')).status).toBe(200);

    expect(await guessUntilLocked(t, 'quan-tri', '203.0.113.66')).toBe(10);
    const lockout = (await auditOf(t, 'auth.lockout'))[0]!;
    expect(lockout).toMatchObject({ actor: 'anonymous', ip: '203.0.113.66', target: 'user:quan-tri', after: { scope: 'address' } });
    expect(await lockedFlag(t, 'quan-tri')).toBe(false);

    // Right after the attacker's last failure: the office computer is not held up at all.
    expect((await login(t, 'quan-tri', ADMIN_PW, '192.0.2.10')).status).toBe(200);
    // A new address (the admin on a phone) waits out the account's delay, at most 60 s, then gets in.
    await guessUntilLocked(t, 'quan-tri', '203.0.113.67'); // a second attacking address, locked in turn
    const phone = await login(t, 'quan-tri', ADMIN_PW, '198.51.100.7');
    expect(phone.status === 200 || (phone.status === 429 && retryAfter(phone) <= 60)).toBe(true);
    if (phone.status === 429) t.advance(retryAfter(phone) * 1000);
    expect((await login(t, 'quan-tri', ADMIN_PW, '198.51.100.7')).status).toBe(200);
    // The attacking addresses stay locked (for that account), whatever the password.
    expect((await login(t, 'quan-tri', ADMIN_PW, '203.0.113.66')).status).toBe(423);
    expect((await auditOf(t, 'auth.lockout')).map((e) => e.after.scope)).toEqual(['address', 'address']);
  }, 180_000);

  it('with two admins the attacked one is locked for everyone for 15 min, then opens; the other is then the last', async () => {
    const t = await start();
    await addUser(t, 'quan-tri', 'admin', ADMIN_PW);
    await addUser(t, 'chi', 'admin', ADMIN_PW);
    await guessUntilLocked(t, 'chi', '203.0.113.66');
    expect(await lockedFlag(t, 'chi')).toBe(true);
    const locked = await login(t, 'chi', ADMIN_PW, '198.51.100.8');
    expect([locked.status, locked.body.error.code, retryAfter(locked)]).toEqual([423, 'KENG_ERR_ACCOUNT_LOCKED', 900]);

    // chi is locked: quan-tri is now the last usable admin, so attacking it locks only the attacker's address.
    await guessUntilLocked(t, 'quan-tri', '203.0.113.77');
    expect(await lockedFlag(t, 'quan-tri')).toBe(false);
    t.advance(60_000);
    expect((await login(t, 'quan-tri', ADMIN_PW, '198.51.100.9')).status).toBe(200);

    // By time: chi's lock ends 15 min after it was set (the clock moved during the second attack).
    const left = retryAfter(await login(t, 'chi', ADMIN_PW, '198.51.100.8'));
    expect(left).toBeGreaterThan(0);
    t.advance(left * 1000);
    expect((await login(t, 'chi', ADMIN_PW, '198.51.100.8')).status).toBe(200);
    expect(await lockedFlag(t, 'chi')).toBe(false);
  }, 180_000);
});

describe('temporary locks', () => {
  it('a real user and an unknown name lock alike; locks grow; time and an admin unlock end them', async () => {
    const t = await start();
    await addUser(t, 'hoa', 'viewer');
    // Same attacker, same pace, a real name and a made-up one: replies identical in status, body and Retry-After.
    for (let i = 0; i < 10; i++) {
      for (const name of ['hoa', 'khong-co-ai']) {
        const r = await login(t, name, `guess ${i} guess`, `203.0.113.${name === 'hoa' ? 1 : 2}`);
        expect([name, i, r.status]).toEqual([name, i, 401]);
      }
      t.advance(61_000);
    }
    const real = await login(t, 'hoa', PW, '198.51.100.20');
    const ghost = await login(t, 'khong-co-ai', PW, '198.51.100.21');
    expect([real.status, retryAfter(real)]).toEqual([423, 900 - 61]);
    expect([ghost.status, ghost.body, retryAfter(ghost)]).toEqual([real.status, real.body, retryAfter(real)]);

    // The lock ends by itself; the next one, earned the same way, lasts twice as long.
    t.advance(900_000);
    for (let i = 0; i < 10; i++) { expect((await login(t, 'hoa', `again ${i} again`, '203.0.113.3')).status).toBe(401); t.advance(61_000); }
    expect(retryAfter(await login(t, 'hoa', PW, '198.51.100.22'))).toBe(1800 - 61);

    // An admin ends it at once (API); audited with who and what was locked.
    const unlocked = await t.http('PATCH', '/api/v1/users/hoa', { unlock: true });
    expect(unlocked.body).toMatchObject({ locked: false, lockedUntil: null });
    expect((await login(t, 'hoa', PW, '198.51.100.22')).status).toBe(200);
    const entry = (await auditOf(t, 'user.unlock'))[0]!;
    expect(entry).toMatchObject({ actor: 'admin:admin', target: 'user:hoa', before: { locked: true }, after: { locked: false } });
  }, 180_000);
});

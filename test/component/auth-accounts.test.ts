/**
 * Users, sessions and API tokens through the API (OpenAPI at /docs, tag
 * accounts): validation, secrets never returned, sessions that
 * stop at once on disable/password change/logout/expiry, API tokens shown
 * once, expiring and revocable, and the audit trail of each change.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { io as ioc, type Socket } from 'socket.io-client';
import { startAccountsApp, type AccountsApp } from './auth-fixture.js';
import { seedAreas } from '../helpers/seed.js';
import { attachLiveFeedForTest } from '../helpers/live.js';

const PW = 'đồng ruộng quê hương';
let t: AccountsApp;
beforeAll(async () => {
  t = await startAccountsApp();
  await seedAreas(t, [{ code: 'P', name: 'Tỉnh', level: 'province' }, { code: 'A', name: 'Xã A', level: 'commune', parent: 'P' }]);
}, 60_000);
afterAll(async () => { await t?.stop(); });

const code = (r: { status: number; body: any }): [number, string | undefined] => [r.status, r.body?.error?.code];

describe('users', () => {
  it('validates input and never returns or stores the password', async () => {
    const add = (b: Record<string, unknown>) => t.inject('POST', '/api/v1/users', b);
    expect(code(await add({ username: 'an', password: PW, role: 'viewer', areas: ['A'] }))).toEqual([400, 'KENG_ERR_VALIDATION']);
    expect(code(await add({ username: 'Upper', password: PW, role: 'viewer', areas: ['A'] }))).toEqual([400, 'KENG_ERR_VALIDATION']);
    expect(code(await add({ username: 'binh', password: 'short', role: 'viewer', areas: ['A'] }))).toEqual([400, 'KENG_ERR_WEAK_PASSWORD']);
    expect(code(await add({ username: 'binh.nguyen', password: 'binh.nguyen', role: 'viewer', areas: ['A'] }))).toEqual([400, 'KENG_ERR_WEAK_PASSWORD']);
    expect(code(await add({ username: 'binh', password: PW, role: 'viewer', areas: ['nowhere'] }))).toEqual([422, 'KENG_ERR_UNPROCESSABLE']);
    expect(code(await add({ username: 'binh', password: PW, role: 'viewer', areas: [] }))).toEqual([400, 'KENG_ERR_VALIDATION']);
    expect(code(await add({ username: 'binh', password: PW, role: 'root', areas: ['A'] }))).toEqual([400, 'KENG_ERR_VALIDATION']);
    const ok = await add({ username: 'binh', password: PW, role: 'viewer', areas: ['A'] });
    expect(ok.status).toBe(201);
    expect(Object.keys(ok.body).sort()).toEqual(['areas', 'createdAt', 'createdBy', 'disabled', 'locked', 'lockedAt', 'lockedUntil', 'role', 'updatedAt', 'username']);
    expect(code(await add({ username: 'binh', password: PW, role: 'viewer', areas: ['A'] }))).toEqual([409, 'KENG_ERR_USER_EXISTS']);
    const admin = await add({ username: 'chi', password: PW, role: 'admin', areas: ['A'] });
    expect(admin.body.areas).toEqual(['*']);
    const hash = t.app.stateDb.db.prepare("SELECT password_hash FROM users WHERE username = 'binh'").pluck().get() as string;
    expect(hash).toMatch(/^scrypt\$1[5-9]\$/);
    const everything = JSON.stringify([(await t.inject('GET', '/api/v1/users')).body, (await t.inject('GET', '/api/v1/audit?limit=1000')).body]);
    expect(everything).not.toContain(PW);
    expect(everything).not.toContain(hash.split('$')[5]!);
  });

  it('disabling a user ends its sessions at once; re-enabling does not revive them', async () => {
    await t.inject('POST', '/api/v1/users', { username: 'dung', password: PW, role: 'operator', areas: ['A'] });
    const s = await t.login('dung', PW);
    expect((await t.inject('GET', '/api/v1/devices', undefined, s)).status).toBe(200);
    expect((await t.inject('PATCH', '/api/v1/users/dung', { disabled: true })).body.disabled).toBe(true);
    expect(code(await t.inject('GET', '/api/v1/devices', undefined, s))).toEqual([401, 'KENG_ERR_UNAUTHENTICATED']);
    expect(code(await t.inject('POST', '/api/v1/auth/login', { username: 'dung', password: PW }, null))).toEqual([401, 'KENG_ERR_LOGIN_FAILED']);
    await t.inject('PATCH', '/api/v1/users/dung', { disabled: false });
    expect((await t.inject('GET', '/api/v1/devices', undefined, s)).status).toBe(401);
    t.advance(2_000);
    expect((await t.inject('GET', '/api/v1/devices', undefined, await t.login('dung', PW))).status).toBe(200);
  });

  it('role and area changes apply to live sessions at the next request; deleting a user ends them', async () => {
    await t.inject('POST', '/api/v1/users', { username: 'emi', password: PW, role: 'viewer', areas: ['A'] });
    const s = await t.login('emi', PW);
    expect((await t.inject('POST', '/api/v1/devices', { id: 'em-1', kind: 'sensor', name: 'x', area: 'A' }, s)).status).toBe(403);
    await t.inject('PATCH', '/api/v1/users/emi', { role: 'operator' });
    expect((await t.inject('POST', '/api/v1/devices', { id: 'em-1', kind: 'sensor', name: 'x', area: 'A' }, s)).status).toBe(201);
    expect((await t.inject('DELETE', '/api/v1/users/emi')).status).toBe(204);
    expect((await t.inject('GET', '/api/v1/auth/me', undefined, s)).status).toBe(401);
    expect((await t.inject('DELETE', '/api/v1/users/emi')).status).toBe(404);
  });

  it('a new password (admin reset or self-service) ends the old sessions', async () => {
    await t.inject('POST', '/api/v1/users', { username: 'giang', password: PW, role: 'viewer', areas: ['A'] });
    const s1 = await t.login('giang', PW);
    // Self-service needs the current password.
    expect(code(await t.inject('PATCH', '/api/v1/users/giang', { password: 'a brand new one' }, s1))).toEqual([400, 'KENG_ERR_VALIDATION']);
    expect(code(await t.inject('PATCH', '/api/v1/users/giang', { password: 'a brand new one', currentPassword: 'wrong one!!' }, s1))).toEqual([403, 'KENG_ERR_FORBIDDEN']);
    t.advance(2_000);
    expect((await t.inject('PATCH', '/api/v1/users/giang', { password: 'a brand new one', currentPassword: PW }, s1)).status).toBe(200);
    expect((await t.inject('GET', '/api/v1/auth/me', undefined, s1)).status).toBe(401);
    // A viewer may not change anything else about itself.
    const s2 = await t.login('giang', 'a brand new one');
    expect((await t.inject('PATCH', '/api/v1/users/giang', { role: 'admin' }, s2)).status).toBe(403);
    // Admin reset.
    expect((await t.inject('PATCH', '/api/v1/users/giang', { password: 'reset by admin 1' })).status).toBe(200);
    expect((await t.inject('GET', '/api/v1/auth/me', undefined, s2)).status).toBe(401);
    expect(typeof await t.login('giang', 'reset by admin 1')).toBe('string');
  });
});

describe('sessions', () => {
  it('logout revokes the token; the admin token and API tokens are not sessions', async () => {
    await t.inject('POST', '/api/v1/users', { username: 'hanh', password: PW, role: 'viewer', areas: ['A'] });
    const s = await t.login('hanh', PW);
    expect((await t.inject('POST', '/api/v1/auth/logout', undefined, s)).status).toBe(204);
    expect((await t.inject('GET', '/api/v1/auth/me', undefined, s)).status).toBe(401);
    expect((await t.inject('POST', '/api/v1/auth/logout', undefined, s)).status).toBe(401);
    expect(code(await t.inject('POST', '/api/v1/auth/logout'))).toEqual([400, 'KENG_ERR_NOT_A_SESSION']);
  });

  it('expire 12 h after login (fixed, not extended by use)', async () => {
    await t.inject('POST', '/api/v1/users', { username: 'khoa', password: PW, role: 'viewer', areas: ['A'] });
    const r = await t.inject('POST', '/api/v1/auth/login', { username: 'khoa', password: PW }, null);
    const issued = Date.parse(r.body.expiresAt) - 12 * 3_600_000;
    expect(Math.abs(issued - (Date.now() + t.offset()))).toBeLessThan(10_000);
    t.advance(6 * 3_600_000);
    expect((await t.inject('GET', '/api/v1/auth/me', undefined, r.body.token)).status).toBe(200);
    t.advance(6 * 3_600_000 + 1_000);
    expect(code(await t.inject('GET', '/api/v1/auth/me', undefined, r.body.token))).toEqual([401, 'KENG_ERR_UNAUTHENTICATED']);
  });
});

describe('API tokens', () => {
  it('shown once, listed without the secret, expiring, revocable, last use tracked', async () => {
    const c = await t.inject('POST', '/api/v1/tokens', { name: 'IOC tỉnh', role: 'service', areas: ['P'], expiresAt: Date.now() + t.offset() + 3_600_000 });
    expect(c.status).toBe(201);
    expect(c.body.token).toMatch(/^kengt_[A-Za-z0-9_-]{43}$/);
    expect(c.body).toMatchObject({ name: 'IOC tỉnh', role: 'service', areas: ['P'], createdBy: 'admin:admin', revoked: false, lastUsedAt: null });
    const stored = JSON.stringify(t.app.stateDb.db.prepare('SELECT * FROM api_tokens').all());
    expect(stored).not.toContain(c.body.token);
    expect((await t.inject('GET', '/api/v1/auth/me', undefined, c.body.token)).body).toEqual({ kind: 'token', id: c.body.id, role: 'service', areas: ['P'] });
    const list = await t.inject('GET', '/api/v1/tokens');
    const meta = list.body.find((x: { id: string }) => x.id === c.body.id);
    expect(meta.token).toBeUndefined();
    expect(JSON.stringify(list.body)).not.toContain(c.body.token);
    expect(meta.lastUsedAt).not.toBeNull();

    t.advance(3_600_001);
    expect((await t.inject('GET', '/api/v1/devices', undefined, c.body.token)).status).toBe(401);

    const c2 = await t.inject('POST', '/api/v1/tokens', { name: 'script', role: 'viewer', areas: ['A'] });
    expect((await t.inject('GET', '/api/v1/devices', undefined, c2.body.token)).status).toBe(200);
    expect((await t.inject('DELETE', `/api/v1/tokens/${c2.body.id}`)).status).toBe(204);
    expect((await t.inject('GET', '/api/v1/devices', undefined, c2.body.token)).status).toBe(401);
    expect((await t.inject('GET', '/api/v1/tokens')).body.find((x: { id: string }) => x.id === c2.body.id).revoked).toBe(true);
    expect((await t.inject('DELETE', '/api/v1/tokens/tok_nope')).status).toBe(404);
    expect(code(await t.inject('POST', '/api/v1/tokens', { name: 'old', role: 'viewer', areas: ['A'], expiresAt: '2020-01-01T00:00:00Z' }))).toEqual([400, 'KENG_ERR_VALIDATION']);
    expect(code(await t.inject('POST', '/api/v1/tokens', { name: 'nowhere', role: 'viewer', areas: ['ZZ'] }))).toEqual([422, 'KENG_ERR_UNPROCESSABLE']);
  });
});

describe('audit log through the API', () => {
  it('records user, token, area and device changes with before/after, filterable, secrets stripped', async () => {
    const dev = await t.inject('POST', '/api/v1/devices', { id: 'loa-audit', kind: 'speaker', name: 'Loa', area: 'A' });
    expect((await t.inject('DELETE', '/api/v1/devices/loa-audit')).status).toBe(204);
    const q = async (qs: string) => (await t.inject('GET', `/api/v1/audit?${qs}`)).body.entries as Array<Record<string, any>>;
    const devEntries = await q('action=device');
    expect(devEntries.map((e) => e.action)).toEqual(['device.delete', 'device.create', 'device.create']);
    expect(devEntries[0]).toMatchObject({ actor: 'admin:admin', target: 'device:loa-audit', after: { readings: 'keep' } }); // after: what became of its readings (telemetry.onDeviceDelete)
    expect(devEntries[0]!.before).toMatchObject({ id: 'loa-audit', area: 'A', kind: 'speaker' });
    const all = JSON.stringify(await q('limit=1000'));
    expect(all).not.toContain(dev.body.secret);
    expect(all).not.toContain(dev.body.accessToken);
    const upd = (await q('action=user.update&actor=admin:admin')).filter((e) => e.target === 'user:dung').at(-1); // oldest: the disable
    expect(upd!.before).toMatchObject({ disabled: false });
    expect(upd!.after).toMatchObject({ disabled: true });
    expect((await q('action=token.revoke'))).toHaveLength(1);
    expect((await q('action=area.create')).map((e) => e.target).sort()).toEqual(['area:A', 'area:P']);
    const page1 = await t.inject('GET', '/api/v1/audit?limit=3');
    expect(page1.body.entries).toHaveLength(3);
    const page2 = await t.inject('GET', `/api/v1/audit?limit=3&before=${page1.body.nextBefore}`);
    expect(page2.body.entries[0].seq).toBe(page1.body.entries[2].seq - 1);
    expect((await t.inject('GET', '/api/v1/audit?from=2099-01-01T00:00:00Z')).body.entries).toEqual([]);
  });
});

describe('live feed connections', () => {
  it('a session logged out or an API token revoked after the handshake is disconnected at the next re-check; new handshakes are refused', async () => {
    const live = await attachLiveFeedForTest(t.app, { path: '/live-reauth', reauthIntervalMs: 200 });
    const sockets: Socket[] = [];
    const open = async (token: string): Promise<Socket> => {
      const s = ioc(t.httpUrl, { path: '/live-reauth', transports: ['websocket'], reconnection: false, forceNew: true, auth: { token } });
      sockets.push(s);
      await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('connect_error', reject); });
      return s;
    };
    const closed = (s: Socket): Promise<void> => new Promise((resolve) => { if (s.disconnected) resolve(); else s.once('disconnect', () => resolve()); });
    try {
      expect((await t.inject('POST', '/api/v1/users', { username: 'hoa', password: PW, role: 'viewer', areas: ['A'] })).body).toMatchObject({ username: 'hoa' });
      const session = await t.login('hoa', PW);
      const token = (await t.inject('POST', '/api/v1/tokens', { name: 'live-ioc', role: 'service', areas: ['A'] })).body;
      const bySession = await open(session);
      const byToken = await open(token.token);
      const kept = await open(await t.login('hoa', PW));
      expect((await t.inject('POST', '/api/v1/auth/logout', undefined, session)).status).toBe(204);
      expect((await t.inject('DELETE', `/api/v1/tokens/${token.id}`)).status).toBe(204);
      await Promise.all([closed(bySession), closed(byToken)]); // the test's timeout bounds the wait
      expect(kept.connected).toBe(true);
      await expect(open(session)).rejects.toMatchObject({ data: { code: 'KENG_ERR_UNAUTHENTICATED' } });
      await expect(open(token.token)).rejects.toMatchObject({ data: { code: 'KENG_ERR_UNAUTHENTICATED' } });
    } finally {
      for (const s of sockets) s.close();
      await live.stop();
    }
  }, 30_000);
});

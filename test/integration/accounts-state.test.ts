/**
 * The accounts on the state Db port, on both dialects (the embedded state.db and PostgreSQL):
 * users, sessions, API tokens and the login guard, with their audit entries in the same
 * transaction. On PostgreSQL, two "nodes" (two pools on one database, each with its own
 * account services, as two Keng processes have): failures counted on one hold on the other,
 * concurrent attempts on both cannot pass on one old count, and a revoke on one is refused on
 * the other within the lookup cache's bound (AUTH_CACHE_CLUSTER_MS, docs/cluster.md).
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AUTH_CACHE_CLUSTER_MS, createAccounts, type Accounts, type AccountsOptions } from '../../src/auth/index.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { openState, STATE_DIALECTS, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';

const PW = 'cánh đồng lúa xanh 2025';
const AREAS = new Set(['xa-a', 'xa-b']);
const areas = { getArea: (c: string) => (AREAS.has(c) ? { code: c } : undefined) };

function fakeClock(start = Date.UTC(2025, 10, 30)): { now(): number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => { t += ms; } };
}

function accountsOn(db: Db<unknown>, h: StateHarness, clock: { now(): number }, o: Partial<AccountsOptions> = {}): Accounts {
  return createAccounts({ db, clock, areas, passwords: { log2N: 10 }, ...o });
}

async function auditActions(db: Db<unknown>): Promise<string[]> {
  return (await sql<{ action: string }>`SELECT action FROM audit_log ORDER BY seq`.execute(db.kysely)).rows.map((r) => r.action);
}

afterAll(stopStatePostgres);

describe.each(STATE_DIALECTS)('accounts on %s', (dialect) => {
  let h: StateHarness;
  let clock: ReturnType<typeof fakeClock>;
  let acc: Accounts;
  beforeEach(async () => {
    h = await openState(dialect);
    clock = fakeClock();
    acc = accountsOn(h.db, h, clock);
  }, 120_000);
  afterEach(() => h.close());

  it('users: create, read, change, delete, each with its audit entry; a taken name is refused', async () => {
    const u = await acc.users.create({ username: 'lan', password: PW, role: 'operator', areas: ['xa-a'] }, { actor: 'test' });
    expect(u).toMatchObject({ username: 'lan', role: 'operator', areas: ['xa-a'], disabled: false, lockedAt: null, createdBy: 'test' });
    await expect(acc.users.create({ username: 'lan', password: PW, role: 'viewer', areas: ['xa-a'] }, { actor: 'test' }))
      .rejects.toMatchObject({ code: 'KENG_ERR_USER_EXISTS' });
    await acc.users.create({ username: 'anh', password: PW, role: 'admin', areas: [] }, { actor: 'test' });
    expect((await acc.users.list()).map((x) => [x.username, x.areas])).toEqual([['anh', ['*']], ['lan', ['xa-a']]]);

    const changed = await acc.users.update('lan', { role: 'viewer', areas: ['xa-a', 'xa-b'], disabled: true }, { actor: 'test' });
    expect(changed).toMatchObject({ role: 'viewer', areas: ['xa-a', 'xa-b'], disabled: true });
    expect(await acc.users.passwordHash('lan')).toMatchObject({ disabled: true });
    expect(await acc.users.principalData('lan')).toBeNull();
    await acc.users.delete('lan', { actor: 'test' });
    expect(await acc.users.get('lan')).toBeNull();
    await expect(acc.users.delete('lan', { actor: 'test' })).rejects.toMatchObject({ code: 'KENG_ERR_NOT_FOUND' });
    expect(await auditActions(h.db)).toEqual(['user.create', 'user.create', 'user.update', 'user.delete']);
  });

  it('a write that fails leaves neither the change nor its audit entry', async () => {
    await acc.users.create({ username: 'lan', password: PW, role: 'viewer', areas: ['xa-a'] }, { actor: 'test' });
    // The audit entry is appended inside the change's transaction: make the append fail, the change must roll back.
    await sql`DROP TABLE audit_head`.execute(h.db.kysely);
    await expect(acc.users.update('lan', { disabled: true }, { actor: 'test' })).rejects.toThrow();
    expect(await acc.users.get('lan')).toMatchObject({ disabled: false });
    expect(await auditActions(h.db)).toEqual(['user.create']);
  });

  it('sessions: login, lookup with the user\'s current role, logout, expiry, at most 20 per user', async () => {
    await acc.users.create({ username: 'lan', password: PW, role: 'operator', areas: ['xa-a'] }, { actor: 'test' });
    const r = await acc.login.login('lan', PW, '10.0.0.1');
    expect(await acc.sessions.authenticate(r.token)).toEqual({ kind: 'user', id: 'lan', role: 'operator', areas: ['xa-a'] });
    await acc.users.update('lan', { role: 'viewer', areas: ['xa-b'] }, { actor: 'test' });
    expect(await acc.sessions.authenticate(r.token)).toMatchObject({ role: 'viewer', areas: ['xa-b'] });
    expect(await acc.login.logout(r.token, '10.0.0.1')).toMatchObject({ username: 'lan' });
    expect(await acc.sessions.authenticate(r.token)).toBeNull();
    expect(await acc.login.logout(r.token, '10.0.0.1')).toBeNull();

    const late = await acc.login.login('lan', PW, '10.0.0.1');
    clock.advance(acc.sessions.ttlMs);
    expect(await acc.sessions.authenticate(late.token)).toBeNull();

    const made = [];
    for (let i = 0; i < 22; i++) { made.push(await acc.sessions.create('lan', null)); clock.advance(1); }
    const live = await Promise.all(made.map((s) => acc.sessions.authenticate(s.token)));
    expect(live.map((p) => p !== null)).toEqual([false, false, ...Array<boolean>(20).fill(true)]);
    expect((await auditActions(h.db)).filter((a) => a.startsWith('auth.'))).toEqual(['auth.login', 'auth.logout', 'auth.login']);
  });

  it('a new password or a disabled account ends every session; a deleted user\'s sessions go with it', async () => {
    await acc.users.create({ username: 'lan', password: PW, role: 'viewer', areas: ['xa-a'] }, { actor: 'test' });
    const a = await acc.login.login('lan', PW, '10.0.0.1');
    await acc.users.update('lan', { password: `${PW} mới` }, { actor: 'test' });
    expect(await acc.sessions.authenticate(a.token)).toBeNull();
    const b = await acc.login.login('lan', `${PW} mới`, '10.0.0.1');
    await acc.users.update('lan', { disabled: true }, { actor: 'test' });
    expect(await acc.sessions.authenticate(b.token)).toBeNull();
    await acc.users.update('lan', { disabled: false }, { actor: 'test' });
    expect(await acc.sessions.authenticate(b.token)).toBeNull();
    const c = await acc.login.login('lan', `${PW} mới`, '10.0.0.1');
    await acc.users.delete('lan', { actor: 'test' });
    expect(await acc.sessions.authenticate(c.token)).toBeNull();
    const left = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM sessions`.execute(h.db.kysely);
    expect(Number(left.rows[0]!.n)).toBe(0);
  });

  it('API tokens: create, authenticate (last use recorded), list, expire, revoke', async () => {
    const { token, meta } = await acc.tokens.create({ name: 'ioc', role: 'service', areas: ['xa-a'], expiresAt: null }, { actor: 'test' });
    expect(await acc.tokens.authenticate(token)).toEqual({ kind: 'token', id: meta.id, role: 'service', areas: ['xa-a'] });
    expect((await acc.tokens.get(meta.id))?.lastUsedAt).toBe(clock.now());
    clock.advance(1); // listed by creation time
    const short = await acc.tokens.create({ name: 'tạm', role: 'viewer', areas: ['xa-b'], expiresAt: clock.now() + 1000 }, { actor: 'test' });
    expect((await acc.tokens.list()).map((t) => t.name)).toEqual(['ioc', 'tạm']);
    clock.advance(1000);
    expect(await acc.tokens.authenticate(short.token)).toBeNull();
    expect(await acc.tokens.revoke(meta.id, { actor: 'test' })).toMatchObject({ revokedAt: clock.now() });
    expect(await acc.tokens.authenticate(token)).toBeNull();
    expect(await acc.tokens.revoke(meta.id, { actor: 'test' })).toMatchObject({ revokedAt: clock.now() }); // idempotent, not audited again
    await expect(acc.tokens.revoke('tok_nope', { actor: 'test' })).rejects.toMatchObject({ code: 'KENG_ERR_NOT_FOUND' });
    expect(await auditActions(h.db)).toEqual(['token.create', 'token.create', 'token.revoke']);
  });

  it('login guard: ten failures lock the account, visible in the user list; unlock is audited; pruning runs', async () => {
    await acc.users.create({ username: 'lan', password: PW, role: 'viewer', areas: ['xa-a'] }, { actor: 'test' });
    await acc.users.create({ username: 'anh', password: PW, role: 'admin', areas: [] }, { actor: 'test' });
    for (let i = 1; i <= 10; i++) {
      await expect(acc.login.login('lan', 'sai mật khẩu', `10.1.${i}.1`)).rejects.toMatchObject({ code: 'KENG_ERR_LOGIN_FAILED' });
      clock.advance(61_000);
    }
    await expect(acc.login.login('lan', PW, '10.1.99.1')).rejects.toMatchObject({ code: 'KENG_ERR_ACCOUNT_LOCKED' });
    const listed = (await acc.users.list()).find((u) => u.username === 'lan')!;
    expect(listed.lockedUntil).toBeGreaterThan(clock.now());
    expect(await acc.users.unlock('lan', { actor: 'test' })).toBe(true);
    expect((await acc.login.login('lan', PW, '10.1.99.1')).principal.id).toBe('lan');
    expect((await auditActions(h.db)).filter((a) => a === 'auth.lockout' || a === 'user.unlock')).toEqual(['auth.lockout', 'user.unlock']);

    // The last usable admin is never locked for everyone (the exemption reads users inside the guard's transaction).
    for (let i = 1; i <= 10; i++) { await acc.guard.begin('anh', '203.0.113.9'); await acc.guard.fail('anh', '203.0.113.9'); clock.advance(61_000); }
    expect(await acc.guard.lockedUntil('anh')).toBeNull();
    expect(await acc.guard.check('anh', '203.0.113.9')).toMatchObject({ locked: true });
    clock.advance(2 * 24 * 3_600_000);
    await acc.guard.prune();
    const left = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM login_guard`.execute(h.db.kysely);
    expect(Number(left.rows[0]!.n)).toBe(0);
  });
});

describe('accounts on postgres: two nodes', () => {
  let h: StateHarness;
  let clock: ReturnType<typeof fakeClock>;
  let other: Db<unknown>;
  let a: Accounts;
  let b: Accounts;
  beforeEach(async () => {
    h = await openState('postgres');
    other = openPgDb(h.url!);
    clock = fakeClock();
    a = accountsOn(h.db, h, clock);
    b = accountsOn(other, h, clock);
    await a.users.create({ username: 'lan', password: PW, role: 'operator', areas: ['xa-a'] }, { actor: 'test' });
  }, 120_000);
  afterEach(async () => { await other.close(); await h.close(); });

  it('failures counted on either node add up to one lockout, seen by both', async () => {
    for (let i = 1; i <= 10; i++) {
      const [node, peer] = i % 2 ? [a, b] : [b, a];
      await expect(node.login.login('lan', 'sai mật khẩu', `10.4.${i}.1`)).rejects.toMatchObject({ code: 'KENG_ERR_LOGIN_FAILED' });
      // The account's delay set by one node holds on the other.
      if (i < 10) expect(await peer.guard.check('lan', `10.4.${i}.2`)).toMatchObject({ allowed: false, by: 'user' });
      clock.advance(61_000);
    }
    await expect(a.login.login('lan', PW, '10.4.99.1')).rejects.toMatchObject({ code: 'KENG_ERR_ACCOUNT_LOCKED' });
    await expect(b.login.login('lan', PW, '10.4.99.2')).rejects.toMatchObject({ code: 'KENG_ERR_ACCOUNT_LOCKED' });
    expect((await b.users.get('lan'))?.lockedUntil).toBe((await a.users.get('lan'))?.lockedUntil);
    expect((await auditActions(h.db)).filter((x) => x === 'auth.lockout')).toHaveLength(1);
    expect(await b.users.unlock('lan', { actor: 'test' })).toBe(true);
    expect((await a.login.login('lan', PW, '10.4.99.1')).principal.id).toBe('lan');
  });

  it('concurrent attempts on both nodes at the threshold: only one passes on the old count, and one lock results', async () => {
    for (let i = 1; i <= 9; i++) { await a.guard.begin('lan', `10.5.${i}.1`); await b.guard.fail('lan', `10.5.${i}.1`); clock.advance(61_000); }
    for (let round = 0; round < 3; round++) {
      const verdicts = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).guard.begin('lan', `10.6.${round}.${i}`)));
      expect(verdicts.filter((v) => v.allowed)).toHaveLength(round === 0 ? 1 : 0);
      if (round === 0) {
        const failed = await Promise.all([a.guard.fail('lan', `10.6.0.1`), b.guard.fail('lan', `10.6.0.2`), a.guard.fail('lan', '10.6.0.3'), b.guard.fail('lan', '10.6.0.4')]);
        expect(failed.filter((f) => f.locked?.scope === 'account')).toHaveLength(1);
      }
    }
    expect(await b.guard.check('lan', '10.9.9.9')).toMatchObject({ allowed: false, locked: true });
    const row = await sql<{ failures: number; locks: number }>`SELECT failures, locks FROM login_guard WHERE kind = 'user' AND username = 'lan'`.execute(h.db.kysely);
    expect(row.rows[0]).toEqual({ failures: 10, locks: 1 });
  });

  it(`a token or session revoked on one node is refused on the other within ${AUTH_CACHE_CLUSTER_MS} ms; new ones work at once`, async () => {
    // Created on A, accepted on B at once (failed lookups are never cached).
    const missing = 'kengt_' + 'x'.repeat(43);
    expect(await b.tokens.authenticate(missing)).toBeNull();
    const { token, meta } = await a.tokens.create({ name: 'ioc', role: 'service', areas: ['xa-a'], expiresAt: null }, { actor: 'test' });
    expect(await b.tokens.authenticate(token)).toMatchObject({ id: meta.id });
    const s = await a.login.login('lan', PW, '10.7.0.1');
    const s2 = await b.login.login('lan', PW, '10.7.0.2');
    expect(await b.sessions.authenticate(s.token)).toMatchObject({ id: 'lan', role: 'operator' });
    expect(await b.sessions.authenticate(s2.token)).toMatchObject({ id: 'lan' });

    await a.tokens.revoke(meta.id, { actor: 'test' });
    await a.login.logout(s.token, '10.7.0.1');
    expect(await a.tokens.authenticate(token)).toBeNull(); // the revoking node: at once
    expect(await a.sessions.authenticate(s.token)).toBeNull();
    clock.advance(AUTH_CACHE_CLUSTER_MS);
    expect(await b.tokens.authenticate(token)).toBeNull();
    expect(await b.sessions.authenticate(s.token)).toBeNull();

    // A user disabled on A: its sessions on B end within the same bound.
    expect(await b.sessions.authenticate(s2.token)).toMatchObject({ id: 'lan' });
    await a.users.update('lan', { disabled: true }, { actor: 'test' });
    clock.advance(AUTH_CACHE_CLUSTER_MS);
    expect(await b.sessions.authenticate(s2.token)).toBeNull();
  });

  it('a username taken on two nodes at once: one creates it, the other is told it exists', async () => {
    const results = await Promise.allSettled([
      a.users.create({ username: 'chi', password: PW, role: 'viewer', areas: ['xa-a'] }, { actor: 'test' }),
      b.users.create({ username: 'chi', password: PW, role: 'viewer', areas: ['xa-b'] }, { actor: 'test' }),
    ]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(results.find((r) => r.status === 'rejected')).toMatchObject({ reason: { code: 'KENG_ERR_USER_EXISTS' } });
    expect((await auditActions(h.db)).filter((x) => x === 'user.create')).toHaveLength(2); // lan and chi
  });
});

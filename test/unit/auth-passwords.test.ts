import { describe, expect, it } from 'vitest';
import { PasswordHasher, passwordProblem, DEFAULT_LOG2_N } from '../../src/auth/passwords.js';
import { checkPassword } from '../../src/auth/password-rules.js';

describe('password hashing (scrypt)', () => {
  const hasher = new PasswordHasher();

  it('hashes at N = 2^15 or more, salted, and verifies', async () => {
    expect(DEFAULT_LOG2_N).toBeGreaterThanOrEqual(15);
    const h1 = await hasher.hash('correct horse battery');
    const h2 = await hasher.hash('correct horse battery');
    expect(h1).toMatch(/^scrypt\$15\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(h1).not.toBe(h2);
    expect(h1).not.toContain('correct');
    expect(await hasher.verify('correct horse battery', h1)).toBe(true);
    expect(await hasher.verify('correct horse batterY', h1)).toBe(false);
    expect(await hasher.verify('', h1)).toBe(false);
  });

  it('refuses malformed or absurd stored hashes without throwing', async () => {
    for (const bad of ['', 'plain', 'scrypt$15$8$1$abc', 'bcrypt$1$2$3$4$5', 'scrypt$40$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5', 'scrypt$15$8$1$$']) {
      expect(await hasher.verify('whatever-123', bad)).toBe(false);
    }
  });

  it('does the same work for unknown users (dummy verify)', async () => {
    expect(await hasher.dummyVerify('anything at all')).toBe(false);
    const h = await hasher.hash('correct horse battery');
    const t0 = performance.now();
    await hasher.verify('wrong password 1', h);
    const real = performance.now() - t0;
    const t1 = performance.now();
    await hasher.dummyVerify('wrong password 1');
    const dummy = performance.now() - t1;
    // Same scrypt cost: within a generous factor (CI noise), and clearly not a shortcut.
    expect(dummy).toBeGreaterThan(real / 4);
    expect(dummy).toBeLessThan(real * 4 + 50);
  });

  it('flags hashes of a lower cost for re-hashing', async () => {
    const weak = new PasswordHasher({ log2N: 10 });
    const h = await weak.hash('correct horse battery');
    expect(hasher.needsRehash(h)).toBe(true);
    expect(await hasher.verify('correct horse battery', h)).toBe(true);
    expect(hasher.needsRehash(await hasher.hash('x'.repeat(12)))).toBe(false);
  });

  it('bounds concurrent hashing: beyond the queue → KENG_ERR_RATE_LIMITED', async () => {
    const h = new PasswordHasher({ log2N: 12, maxConcurrent: 1, maxQueued: 1 });
    const results = await Promise.allSettled([h.hash('aaaaaaaaaaaa'), h.hash('bbbbbbbbbbbb'), h.hash('cccccccccccc')]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected']);
    expect((results[2] as PromiseRejectedResult).reason.code).toBe('KENG_ERR_RATE_LIMITED');
    expect(await h.hash('dddddddddddd')).toMatch(/^scrypt\$12\$/); // slots released
  });

  it('password rules: at least 10 characters, not the username', () => {
    expect(passwordProblem('lan', 'short')).toMatch(/at least 10/);
    expect(passwordProblem('nguyen.van.a', 'Nguyen.Van.A')).toMatch(/username/);
    expect(passwordProblem('lan', 'x'.repeat(257))).toMatch(/at most/);
    expect(passwordProblem('lan', 'mật khẩu dài đủ')).toBeNull();
  });

  it('password rules: no space at either end, and not easy to guess (zxcvbn score ≥ 3, username and Keng words known)', () => {
    const reason = (u: string, p: string): string | undefined => checkPassword(u, p)?.reason;
    expect(reason('lan', '          ')).toBe('spaces');
    expect(reason('lan', ' lua-nep-cai-hoa-vang')).toBe('spaces');
    expect(reason('lan', 'lua-nep-cai-hoa-vang\t')).toBe('spaces');
    for (const weak of ['password123', '12345678901', 'qwertyuiop12', 'aaaaaaaaaaaa', 'matkhau12345', 'Admin@123456', 'quantrivien2026']) {
      expect({ weak, reason: reason('lan', weak) }).toEqual({ weak, reason: 'guessable' });
    }
    expect(reason('lan', 'keng2026')).toBe('too-short');
    expect(reason('nguyen.van.an', 'nguyenvanan123')).toBe('guessable'); // the username, joined up
    const p = checkPassword('lan', 'password123')!;
    expect(p.message).toMatch(/too easy to guess \(strength 0 of 4, at least 3 needed\): This is a commonly used password/);
    for (const good of ['lua-nep-cai-hoa-vang', 'đồng ruộng quê hương', 'trung-tam-dieu-hanh', 'ruộng lúa xanh 2025']) {
      expect({ good, problem: checkPassword('lan', good) }).toEqual({ good, problem: null });
    }
  });

  it('password rules: scoring a crafted long password stays cheap (only the first 64 characters are scored)', () => {
    checkPassword('lan', 'warm up the dictionaries');
    const t0 = performance.now();
    expect(checkPassword('lan', 'p@$$w0rd'.repeat(32))?.reason).toBe('guessable');
    expect(checkPassword('lan', '1'.repeat(256))?.reason).toBe('guessable');
    expect(performance.now() - t0).toBeLessThan(1500); // unbounded, these took seconds
  });
});

import { describe, it, expect } from 'vitest';
import {
  generateSecret, generateAccessToken, hashSecret, verifySecret, parseHash, tokenLookup,
  CredentialVerifier, SCRYPT,
} from '../../src/devices/secrets.js';

describe('device secrets', () => {
  it('generates long random base62 secrets and tokens', () => {
    const s = generateSecret();
    const t = generateAccessToken();
    expect(s).toMatch(/^[0-9A-Za-z]{43}$/);
    expect(t).toMatch(/^[0-9A-Za-z]{32}$/);
    expect(generateSecret()).not.toBe(s);
    expect(generateAccessToken()).not.toBe(t);
  });

  it('hashes with scrypt N=1024 r=8 p=1, random salt, keylen 32', async () => {
    const h1 = await hashSecret('hello');
    const h2 = await hashSecret('hello');
    expect(h1).toMatch(/^scrypt\$1024\$8\$1\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/);
    expect(h1).not.toBe(h2); // salted
    const p = parseHash(h1)!;
    expect(p.salt.length).toBe(SCRYPT.saltBytes);
    expect(p.hash.length).toBe(32);
    expect(h1).not.toContain('hello');
  });

  it('verifies the right secret only', async () => {
    const h = await hashSecret('s3cret');
    expect(await verifySecret('s3cret', h)).toBe(true);
    expect(await verifySecret('s3cret!', h)).toBe(false);
    expect(await verifySecret('s3cret', 'garbage')).toBe(false);
    expect(await verifySecret('s3cret', 'scrypt$3$8$1$AAAA$AAAA')).toBe(false); // N not a power of two
  });

  it('token lookup is sha256 hex', () => {
    expect(tokenLookup('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});

describe('CredentialVerifier', () => {
  it('caches successes and failures, keyed to the stored hash', async () => {
    const v = new CredentialVerifier();
    const h = await hashSecret('pw');
    expect(await v.verify('dev-1', 'pw', h)).toBe(true);
    expect(v.stats.misses).toBe(1);
    expect(await v.verify('dev-1', 'pw', h)).toBe(true);
    expect(v.stats.hits).toBe(1);
    expect(await v.verify('dev-1', 'wrong', h)).toBe(false);
    expect(await v.verify('dev-1', 'wrong', h)).toBe(false);
    expect(v.stats).toEqual({ hits: 2, misses: 2 });
    // another device with the same secret is not a hit
    expect(await v.verify('dev-2', 'pw', h)).toBe(true);
    expect(v.stats.misses).toBe(3);
    // a changed stored hash is not served from cache
    const h2 = await hashSecret('other');
    expect(await v.verify('dev-1', 'pw', h2)).toBe(false);
    expect(v.stats.misses).toBe(4);
  });

  it('invalidate() forgets a device', async () => {
    const v = new CredentialVerifier();
    const h = await hashSecret('pw');
    await v.verify('dev-1', 'pw', h);
    v.invalidate('dev-1');
    expect(v.size).toBe(0);
    await v.verify('dev-1', 'pw', h);
    expect(v.stats.misses).toBe(2);
  });

  it('is an LRU bounded by maxEntries', async () => {
    const v = new CredentialVerifier({ maxEntries: 2 });
    const h = await hashSecret('pw');
    await Promise.all(['a1', 'a2', 'a3'].map((id) => v.verify(id, 'pw', h)));
    expect(v.size).toBe(2);
  });

  it('shares one scrypt between concurrent checks of the same credentials, limits concurrency', async () => {
    const v = new CredentialVerifier({ maxConcurrent: 1 });
    const h = await hashSecret('pw');
    const results = await Promise.all([
      v.verify('d1', 'pw', h), v.verify('d1', 'pw', h), v.verify('d2', 'pw', h), v.verify('d3', 'x', h),
    ]);
    expect(results).toEqual([true, true, true, false]);
    expect(v.stats.misses).toBe(3);
  });

  it('does not block the event loop while verifying', async () => {
    const v = new CredentialVerifier();
    const h = await hashSecret('pw');
    // A synchronous scrypt would finish inside verify() calls, before the event loop turns again;
    // the thread-pool scrypt lets a callback queued after the calls run while hashing is under way.
    let done = false;
    let loopTurnedMeanwhile = false;
    const all = Promise.all(['x1', 'x2', 'x3', 'x4'].map((id) => v.verify(id, 'pw', h))).then((r) => { done = true; return r; });
    setImmediate(() => { loopTurnedMeanwhile = !done; });
    expect(await all).toEqual([true, true, true, true]);
    expect(loopTurnedMeanwhile).toBe(true);
  });

  it('refuses empty and oversized secrets without hashing', async () => {
    const v = new CredentialVerifier();
    const h = await hashSecret('pw');
    expect(await v.verify('d', '', h)).toBe(false);
    expect(await v.verify('d', 'x'.repeat(300), h)).toBe(false);
    expect(v.stats.misses).toBe(0);
  });
});

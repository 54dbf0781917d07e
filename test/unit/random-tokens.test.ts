/**
 * Tokens people paste into command-line tools never start with '-' (finding:
 * a base64url token starts with '-' once in 64, and `mosquitto_pub -u -Xyz…`
 * reads it as an option). Every generator of such credentials (device
 * secrets, device access tokens, the generated admin token) uses base62 from
 * core/random.ts, with rejection sampling (uniform characters).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AdminAuth } from '../../src/auth/index.js';
import { createLogger } from '../../src/core/index.js';
import { BASE62, base62Bits, randomBase62 } from '../../src/core/random.js';
import { generateAccessToken, generateSecret } from '../../src/devices/secrets.js';

const ONLY_BASE62 = /^[0-9A-Za-z]+$/;

describe('randomBase62', () => {
  it('draws 100,000 tokens: none starts with "-", only base62 characters, the length asked for', () => {
    const firsts = new Map<string, number>();
    const bad: string[] = [];
    for (let i = 0; i < 100_000; i++) {
      const t = randomBase62(8);
      if (t.length !== 8 || !ONLY_BASE62.test(t)) bad.push(t);
      firsts.set(t[0]!, (firsts.get(t[0]!) ?? 0) + 1);
    }
    expect(bad).toEqual([]);
    expect([...firsts.keys()].every((c) => BASE62.includes(c))).toBe(true);
    // Uniform (rejection sampling): each of the 62 first characters ≈ 1,613 times; a bias of `byte % 62` would put the first 8 at ~1,950.
    expect(firsts.size).toBe(62);
    for (const n of firsts.values()) expect(Math.abs(n - 100_000 / 62)).toBeLessThan(250);
  });

  it('refuses a length that is not a positive integer', () => {
    expect(() => randomBase62(0)).toThrow(RangeError);
    expect(() => randomBase62(1.5)).toThrow(RangeError);
  });
});

describe('credential generators', () => {
  it('device secrets: 43 base62 characters (≥ 256 bits), never a leading "-", all different', () => {
    const all = Array.from({ length: 20_000 }, generateSecret);
    expect(all.filter((s) => s.length !== 43 || !ONLY_BASE62.test(s))).toEqual([]);
    expect(new Set(all).size).toBe(all.length);
    expect(base62Bits(43)).toBeGreaterThanOrEqual(256);
  });

  it('device access tokens: 32 base62 characters (≥ 190 bits), never a leading "-"', () => {
    const all = Array.from({ length: 20_000 }, generateAccessToken);
    expect(all.filter((t) => t.length !== 32 || !ONLY_BASE62.test(t))).toEqual([]);
    expect(base62Bits(32)).toBeGreaterThan(190);
  });

  it('the generated admin token: 43 base62 characters in <dataDir>/admin-token', async () => {
    for (let i = 0; i < 50; i++) {
      const dir = mkdtempSync(path.join(tmpdir(), 'keng-token-'));
      try {
        await new AdminAuth({ dataDir: dir, logger: createLogger('silent') }).start();
        expect(readFileSync(path.join(dir, 'admin-token'), 'utf8').trim()).toMatch(/^[0-9A-Za-z]{43}$/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });
});

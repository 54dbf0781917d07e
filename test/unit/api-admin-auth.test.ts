import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AdminAuth, AuthenticatorChain, parseBearer, type Authenticator } from '../../src/auth/index.js';
import { createLogger } from '../../src/core/index.js';
import { LogSink } from '../component/api-fakes.js';

let dir: string;
let logs: LogSink;
const make = (adminToken?: string, dataDir = dir): AdminAuth => new AdminAuth({ dataDir, adminToken, logger: createLogger('info', { destination: logs }) });

beforeEach(() => { dir = mkdtempSync(path.join(tmpdir(), 'keng-auth-')); logs = new LogSink(); });
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('AdminAuth', () => {
  it('uses the configured token and writes no file', async () => {
    const a = make('configured-token-0123456789');
    await a.start();
    expect(a.tokenSource).toBe('config');
    expect(a.verify('configured-token-0123456789')).toBe(true);
    expect(a.verify('configured-token-012345678')).toBe(false);
    expect(() => statSync(path.join(dir, 'admin-token'))).toThrow();
  });

  it('generates a token on first start: 43 random base62 characters, mode 0600, logged once (path, not the token)', async () => {
    const a = make();
    await a.start();
    const file = path.join(dir, 'admin-token');
    const token = readFileSync(file, 'utf8').trim();
    expect(token).toMatch(/^[0-9A-Za-z]{43}$/); // base62: never a leading '-' (core/random.ts)
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(a.tokenSource).toBe('generated');
    expect(a.verify(token)).toBe(true);
    const warnings = logs.lines.filter((l) => l.level === 40);
    expect(warnings).toHaveLength(1);
    expect(String(warnings[0]!.msg)).toContain(file);
    expect(JSON.stringify(logs.lines)).not.toContain(token);

    // the next start reuses it and logs nothing
    const b = make();
    await b.start();
    expect(b.tokenSource).toBe('file');
    expect(b.verify(token)).toBe(true);
    expect(logs.lines.filter((l) => l.level === 40)).toHaveLength(1);
  });

  it('creates the data directory if needed', async () => {
    const a = make(undefined, path.join(dir, 'nested', 'data'));
    await a.start();
    expect(statSync(path.join(dir, 'nested', 'data', 'admin-token')).isFile()).toBe(true);
  });

  it('tightens a token file readable by others', async () => {
    const file = path.join(dir, 'admin-token');
    writeFileSync(file, 'existing-token-abcdefghijklmnop\n');
    chmodSync(file, 0o644);
    const a = make();
    await a.start();
    expect(a.verify('existing-token-abcdefghijklmnop')).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('refuses a token file holding something that is not a token', async () => {
    writeFileSync(path.join(dir, 'admin-token'), 'short\n');
    await expect(make().start()).rejects.toThrow(/admin token file/);
  });

  it('keeps only a hash in memory and verifies nothing before start or after stop', async () => {
    const a = make('configured-token-0123456789');
    expect(a.verify('configured-token-0123456789')).toBe(false);
    await a.start();
    expect(JSON.stringify(Object.values(a))).not.toContain('configured-token-0123456789');
    expect(a.authenticate('configured-token-0123456789')).toEqual({ kind: 'admin', id: 'admin', role: 'admin', areas: ['*'] });
    expect(a.authenticate('nope')).toBeNull();
    expect(a.verify('')).toBe(false);
    await a.stop();
    expect(a.verify('configured-token-0123456789')).toBe(false);
  });
});

describe('parseBearer', () => {
  it.each([
    ['Bearer abc', 'abc'], ['bearer abc', 'abc'], ['BEARER  abc ', 'abc'],
    [undefined, null], ['', null], ['Basic abc', null], ['Bearer', null], ['Bearer a b', null], ['Bearerabc', null],
  ])('%j → %j', (h, want) => expect(parseBearer(h)).toBe(want));
});

describe('AuthenticatorChain', () => {
  it('asks each authenticator in turn; the first that knows the token wins (answers at once or awaited)', async () => {
    const user: Authenticator = { authenticate: (t) => (t === 'u1' ? { kind: 'user', id: 'lan', role: 'viewer', areas: ['C1'] } : null) };
    const token: Authenticator = { authenticate: async (t) => (t === 't1' ? { kind: 'token', id: 'ioc', role: 'service', areas: ['P1'] } : null) };
    const chain = new AuthenticatorChain([user]);
    chain.add(token);
    expect((await chain.authenticate('u1'))?.id).toBe('lan');
    expect((await chain.authenticate('t1'))?.role).toBe('service');
    expect(await chain.authenticate('x')).toBeNull();
    expect(await chain.authenticate('')).toBeNull();
    expect(await chain.authenticate('x'.repeat(5000))).toBeNull();
  });
});

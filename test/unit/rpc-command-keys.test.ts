/**
 * Command keys (firmware-protocols/device-protocol.md §11.6): the documented test vector (read
 * from the protocol page itself, so the page cannot drift from the code), the key ring on disk
 * (generated once, mode 0600, rotation keeps old keys listed, retirement), and the verifier of the
 * reference speaker against what the controller signs.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/index.js';
import { CommandKeys, COMMAND_KEYS_FILE } from '../../src/rpc/index.js';
import { keyFromSeed, signCommand, signCommandAsync, signedString, verifySigned } from '../../src/rpc/command-keys/index.js';
import { CommandVerifier } from '../../src/sim/speaker/verify.js';

const logger = createLogger('silent');
const doc = readFileSync(new URL('../../firmware-protocols/device-protocol.md', import.meta.url), 'utf8');

/** `label  value` lines of the fenced block that follows the "Test vector" heading of §11.6. */
function vector(): Record<string, string> {
  const at = doc.indexOf('#### Test vector');
  if (at < 0) throw new Error('device-protocol.md has no "#### Test vector" section');
  const block = /```text\n([\s\S]*?)```/.exec(doc.slice(at));
  if (!block) throw new Error('no ```text block after "#### Test vector"');
  const out: Record<string, string> = {};
  for (const line of block[1]!.split('\n')) {
    const m = /^(\S+(?: \(hex\))?)\s{2,}(\S.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });
const tmp = (): string => { const d = mkdtempSync(path.join(tmpdir(), 'keng-keys-')); dirs.push(d); return d; };

describe('the test vector of device-protocol.md §11.6', () => {
  const v = vector();

  it('is complete', () => {
    expect(Object.keys(v).sort()).toEqual(['deviceId', 'expiresAt', 'kid', 'publicKey', 'publicKey (hex)', 'requestId', 'seed (hex)', 'sig', 'signed', 'topic']);
  });

  it('seed → public key (RFC 8032 §7.1 TEST 1) → kid; the command → the exact `signed` string → sig', async () => {
    const key = keyFromSeed(Buffer.from(v['seed (hex)']!, 'hex').toString('base64url'));
    expect(Buffer.from(key.publicKey, 'base64url').toString('hex')).toBe('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    expect(v['publicKey (hex)']).toBe('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    expect(key.publicKey).toBe(v.publicKey);
    expect(key.kid).toBe(v.kid);
    const cmd = JSON.parse(v.signed!) as { deviceId: string; requestId: string; method: string; params: Record<string, unknown>; expiresAt: number };
    expect(cmd.deviceId).toBe(v.deviceId);
    expect(cmd.requestId).toBe(v.requestId);
    expect(String(cmd.expiresAt)).toBe(v.expiresAt);
    expect(v.topic).toBe(`v1/devices/${v.deviceId}/rpc/request/${v.requestId}`);
    expect(signedString(cmd)).toBe(v.signed);
    expect(signCommand(key, cmd)).toEqual({ signed: v.signed, sig: v.sig, kid: v.kid });
    // Ed25519 is deterministic: the thread-pool signature is the same bytes.
    await expect(signCommandAsync(key, cmd)).resolves.toEqual({ signed: v.signed, sig: v.sig, kid: v.kid });
    expect(verifySigned(v.publicKey!, v.signed!, v.sig!)).toBe(true);
    expect(verifySigned(v.publicKey!, v.signed!.replace('02', '03'), v.sig!)).toBe(false);
    // The whole request printed after the vector carries exactly these three keys.
    const whole = /The whole request on that topic:\n\n```json\n(.*)\n```/.exec(doc);
    expect(JSON.parse(whole![1]!)).toEqual({ method: cmd.method, params: cmd.params, expiresAt: cmd.expiresAt, signed: v.signed, sig: v.sig, kid: v.kid });
  });

  it('the worked example\'s payload verifies too, and its `signed` holds exactly its params', () => {
    const at = doc.indexOf('#### Worked example');
    const block = /```json\n([\s\S]*?)```/.exec(doc.slice(at));
    const payload = JSON.parse(block![1]!) as { method: string; params: unknown; expiresAt: number; signed: string; sig: string; kid: string };
    expect(payload.kid).toBe(v.kid);
    expect(verifySigned(v.publicKey!, payload.signed, payload.sig)).toBe(true);
    const inner = JSON.parse(payload.signed) as Record<string, unknown>;
    expect(inner).toMatchObject({ method: payload.method, params: payload.params, expiresAt: payload.expiresAt });
  });
});

describe('CommandKeys (the key ring)', () => {
  it('generates a key at first start in <dataDir>/command-keys.json, mode 0600, and loads the same key at the next start', async () => {
    const dir = tmp();
    const ring = new CommandKeys({ dataDir: dir, logger, clock: { now: () => 1_764_460_800_000 } });
    await ring.start();
    const file = path.join(dir, COMMAND_KEYS_FILE);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const [k] = ring.list();
    expect(ring.list()).toEqual([{ kid: k!.kid, alg: 'Ed25519', publicKey: k!.publicKey, active: true, createdAt: 1_764_460_800_000 }]);
    expect(Buffer.from(k!.publicKey, 'base64url')).toHaveLength(32);
    expect(k!.kid).toMatch(/^[0-9a-f]{16}$/);
    await ring.stop();
    const again = new CommandKeys({ dataDir: dir, logger });
    await again.start();
    expect(again.list()).toEqual([k]);
    await again.stop();
    expect(() => again.list()).toThrow(/not loaded/);
  });

  it('signs with the active key; a rotation makes a new active key, the old one stays listed and verifiable until retired', async () => {
    const dir = tmp();
    const ring = new CommandKeys({ dataDir: dir, logger });
    await ring.start();
    const cmd = { deviceId: 'loa-01', requestId: 'r_1', method: 'broadcast.stop', params: {}, expiresAt: 2_000_000_000_000 };
    const old = ring.list()[0]!;
    const s1 = ring.sign(cmd);
    expect(s1.kid).toBe(old.kid);
    expect(verifySigned(old.publicKey, s1.signed, s1.sig)).toBe(true);

    const fresh = await ring.rotate();
    expect(fresh.kid).not.toBe(old.kid);
    expect(ring.activeKid).toBe(fresh.kid);
    expect(ring.list().map((k) => [k.kid, k.active])).toEqual([[fresh.kid, true], [old.kid, false]]);
    const s2 = ring.sign(cmd);
    expect(s2.kid).toBe(fresh.kid);
    expect(verifySigned(fresh.publicKey, s2.signed, s2.sig)).toBe(true);
    expect(verifySigned(old.publicKey, s2.signed, s2.sig)).toBe(false);

    // Survives a restart as rotated.
    const reloaded = new CommandKeys({ dataDir: dir, logger });
    await reloaded.start();
    expect(reloaded.list()).toEqual(ring.list());

    await expect(ring.retire(fresh.kid)).rejects.toMatchObject({ code: 'KENG_ERR_COMMAND_KEY_ACTIVE', statusCode: 409 });
    await expect(ring.retire('0123456789abcdef')).rejects.toMatchObject({ code: 'KENG_ERR_NOT_FOUND' });
    await expect(ring.retire(old.kid)).resolves.toMatchObject({ kid: old.kid, active: false });
    expect(ring.list().map((k) => k.kid)).toEqual([fresh.kid]);
    // The retired key's private part is gone from disk.
    const stored = JSON.parse(readFileSync(path.join(dir, COMMAND_KEYS_FILE), 'utf8')) as { keys: Array<{ kid: string }> };
    expect(stored.keys.map((k) => k.kid)).toEqual([fresh.kid]);
    expect(statSync(path.join(dir, COMMAND_KEYS_FILE)).mode & 0o777).toBe(0o600);
  });

  it('tightens a key file readable by others to 0600; refuses a damaged file or a key that does not match its seed', async () => {
    const dir = tmp();
    const file = path.join(dir, COMMAND_KEYS_FILE);
    const first = new CommandKeys({ dataDir: dir, logger });
    await first.start();
    chmodSync(file, 0o644);
    const second = new CommandKeys({ dataDir: dir, logger });
    await second.start();
    expect(statSync(file).mode & 0o777).toBe(0o600);

    const good = JSON.parse(readFileSync(file, 'utf8')) as { keys: Array<{ publicKey: string }> };
    good.keys[0]!.publicKey = keyFromSeed(Buffer.alloc(32, 7).toString('base64url')).publicKey;
    writeFileSync(file, JSON.stringify(good));
    await expect(new CommandKeys({ dataDir: dir, logger }).start()).rejects.toThrow(/does not match/);
    writeFileSync(file, '{"format":1}');
    await expect(new CommandKeys({ dataDir: dir, logger }).start()).rejects.toThrow(/not a valid key ring/);
  });

  it('sign() before start() is KENG_ERR_NOT_READY (signAsync() rejects with it)', async () => {
    const ring = new CommandKeys({ dataDir: tmp(), logger });
    const cmd = { deviceId: 'd', requestId: 'r', method: 'broadcast.stop', params: {}, expiresAt: 1 };
    expect(() => ring.sign(cmd)).toThrow(expect.objectContaining({ code: 'KENG_ERR_NOT_READY' }));
    await expect(ring.signAsync(cmd)).rejects.toMatchObject({ code: 'KENG_ERR_NOT_READY' });
  });

  it('signAsync() signs with the key active when called, as sign() does', async () => {
    const ring = new CommandKeys({ dataDir: tmp(), logger });
    await ring.start();
    const cmd = { deviceId: 'loa-01', requestId: 'r_2', method: 'broadcast.play', params: { broadcastId: 'b' }, expiresAt: 2_000_000_000_000 };
    await expect(ring.signAsync(cmd)).resolves.toEqual(ring.sign(cmd));
    const fresh = await ring.rotate();
    const s = await ring.signAsync(cmd);
    expect(s.kid).toBe(fresh.kid);
    expect(verifySigned(fresh.publicKey, s.signed, s.sig)).toBe(true);
  });
});

describe('the reference speaker\'s verifier against the controller\'s signatures', () => {
  const key = keyFromSeed(Buffer.alloc(32, 1).toString('base64url'));
  const other = keyFromSeed(Buffer.alloc(32, 2).toString('base64url'));
  const listed = [{ kid: key.kid, alg: 'Ed25519', publicKey: key.publicKey }];
  const now = 1_764_460_800_000;
  const cmd = { deviceId: 'loa-01', requestId: 'r_1', method: 'broadcast.play', params: { broadcastId: 'b' }, expiresAt: now + 60_000 };
  const request = (c = cmd, k = key) => ({ method: 'broadcast.play', params: { broadcastId: 'outer' }, expiresAt: c.expiresAt, ...signCommand(k, c) });

  it('accepts a good signature and returns what `signed` says (not the outer params)', () => {
    const v = new CommandVerifier({ deviceId: 'loa-01', keys: listed });
    expect(v.check('r_1', request(), now)).toEqual({ ok: true, signed: true, method: 'broadcast.play', params: { broadcastId: 'b' }, expiresAt: now + 60_000 });
  });

  it('refuses with the reason: bad signature, unknown key, wrong device, wrong request id, expired, replayed, unsigned', () => {
    const v = new CommandVerifier({ deviceId: 'loa-01', keys: listed, requireSigned: true });
    const forged = { ...request(), signed: signedString({ ...cmd, params: { broadcastId: 'evil' } }) };
    expect(v.check('r_1', forged, now)).toEqual({ ok: false, detail: 'bad_signature' });
    expect(v.check('r_1', { ...request(), sig: request().sig.slice(0, -4) + 'AAAA' }, now)).toEqual({ ok: false, detail: 'bad_signature' });
    expect(v.check('r_1', { ...request(cmd, other), kid: key.kid }, now)).toEqual({ ok: false, detail: 'bad_signature' });
    expect(v.check('r_1', request(cmd, other), now)).toEqual({ ok: false, detail: 'unknown_key' });
    expect(v.check('r_1', request({ ...cmd, deviceId: 'loa-02' }), now)).toEqual({ ok: false, detail: 'wrong_device' });
    expect(v.check('r_2', request(), now)).toEqual({ ok: false, detail: 'wrong_request_id' });
    expect(v.check('r_1', request(), now + 60_001)).toEqual({ ok: false, detail: 'expired' });
    expect(v.check('r_9', { method: 'broadcast.stop', params: {}, expiresAt: now + 1000 }, now)).toEqual({ ok: false, detail: 'unsigned' });
    expect(v.check('r_9', { method: 'speaker.setVolume', params: { volume: 3 }, expiresAt: now + 1000 }, now)).toMatchObject({ ok: true, signed: false });
    expect(v.check('r_1', request(), now)).toMatchObject({ ok: true });
    v.markExecuted('r_1', cmd.expiresAt, now);
    expect(v.check('r_1', request(), now)).toEqual({ ok: false, detail: 'replayed' });
  });

  it('remembers a bounded number of executed ids, forgetting expired ones first', () => {
    const v = new CommandVerifier({ deviceId: 'loa-01', keys: listed, remember: 2 });
    v.markExecuted('r_a', now - 1, now - 10);
    v.markExecuted('r_b', now + 10_000, now);
    v.markExecuted('r_c', now + 10_000, now);
    const c = (id: string) => v.check(id, request({ ...cmd, requestId: id }), now);
    expect(c('r_b')).toEqual({ ok: false, detail: 'replayed' });
    expect(c('r_c')).toEqual({ ok: false, detail: 'replayed' });
    v.markExecuted('r_d', now + 10_000, now);
    expect(c('r_b')).toMatchObject({ ok: true }); // the oldest went
    expect(c('r_d')).toEqual({ ok: false, detail: 'replayed' });
  });

  it('after setKeys (a rotation), accepts the new key and no longer a key that was dropped', () => {
    const v = new CommandVerifier({ deviceId: 'loa-01', keys: listed });
    v.setKeys([{ kid: other.kid, alg: 'Ed25519', publicKey: other.publicKey }]);
    expect(v.check('r_1', request(cmd, other), now)).toMatchObject({ ok: true });
    expect(v.check('r_1', request(), now)).toEqual({ ok: false, detail: 'unknown_key' });
  });
});

/**
 * Anchors (src/audit/anchor.ts) and the server's AuditChain component (keeper.ts): signed heads
 * kept outside the database, what they catch (a cut tail, a rewrite under another key, a
 * downgrade of the whole chain), and the key handling at start (generated once, 0600; a keyed
 * chain never gets a new key).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  AUDIT_ANCHORS_FILE, AUDIT_KEY_FILE, AuditChain, AuditLog, anchorSignatureOk, chainHead, makeAuditKey, parseAnchorLine,
  readAnchorFile, signAnchor, verifyAuditChain, type AuditAnchor, type LocatedAnchor,
} from '../../src/audit/index.js';
import { createLogger } from '../../src/core/index.js';
import { rechain, truncateAfter } from '../helpers/audit-attack.js';
import { fakeClock, tempStateDb, type TempDb } from './auth-db.js';
import type { Db } from '../../src/storage/sql/index.js';
import { stateSqlitePort } from '../../src/storage/state/index.js';

const KEY = makeAuditKey(Buffer.alloc(32, 7), 'test key');
const located = (...anchors: AuditAnchor[]): LocatedAnchor[] => anchors.map((anchor, i) => ({ where: `test:${i + 1}`, anchor }));

describe('anchor signatures and lines', () => {
  const head = { seq: 12, hash: 'ab'.repeat(32), keyedSince: 3 };

  it('sign and check; any edited member or another key fails', async () => {
    const a = signAnchor(head, KEY, Date.UTC(2026, 0, 2), 'start');
    expect(a).toMatchObject({ v: 1, seq: 12, keyedSince: 3, at: '2026-01-02T00:00:00.000Z', kid: KEY.id, reason: 'start' });
    expect(anchorSignatureOk(a, KEY)).toBe(true);
    for (const edit of [{ seq: 11 }, { hash: 'cd'.repeat(32) }, { keyedSince: null }, { at: '2026-01-03T00:00:00.000Z' }, { reason: 'stop' }]) {
      expect(anchorSignatureOk({ ...a, ...edit }, KEY)).toBe(false);
    }
    expect(anchorSignatureOk(a, makeAuditKey(randomBytes(32), 'other'))).toBe(false);
  });

  it('reads anchor lines, `keng audit head` output and server log lines; skips other log lines', async () => {
    const a = signAnchor(head, KEY, 0);
    expect(parseAnchorLine(JSON.stringify(a))).toEqual(a);
    expect(parseAnchorLine(JSON.stringify({ level: 30, msg: 'audit head anchored', auditAnchor: a }))).toEqual(a);
    expect(parseAnchorLine(JSON.stringify({ level: 30, msg: 'keng started' }))).toBe('other');
    expect(parseAnchorLine(JSON.stringify({ ...a, hash: 'short' }))).toBe('bad');
    expect(parseAnchorLine('{"seq": 1, "sig"')).toBe('bad');
  });

  it('a file: a torn last line is skipped, an unreadable line in the middle is named, a missing file is null', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keng-anchors-'));
    try {
      const f = path.join(dir, 'a.jsonl');
      const a = JSON.stringify(signAnchor(head, KEY, 0));
      writeFileSync(f, `${a}\n${a}\n{"v":1,"se`);
      expect(readAnchorFile(f)).toMatchObject({ anchors: [{ where: `${f}:1` }, { where: `${f}:2` }], problems: [] });
      writeFileSync(f, `${a}\nedited by hand\n${a}\n`);
      expect(readAnchorFile(f)!.problems).toEqual([`${f}:2: not a readable anchor`]);
      expect(readAnchorFile(path.join(dir, 'none'))).toBeNull();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('verify with anchors', () => {
  let db: TempDb;
  let audit: AuditLog;
  const clock = fakeClock();
  const port = (): Db<unknown> => stateSqlitePort(db.state);
  const write = async (n: number): Promise<void> => { for (let i = 0; i < n; i++) { clock.advance(1000); await audit.record({ actor: 'user:lan', action: 'device.create', target: `device:d${i}` }); } };
  const anchor = async (): Promise<AuditAnchor> => signAnchor(await chainHead(port()), KEY, clock.now(), 'test');
  beforeEach(async () => {
    db = await tempStateDb();
    await new AuditLog({ db: port(), clock }).record({ actor: 'user:lan', action: 'user.create' }); // seq 1, before keying
    audit = new AuditLog({ db: port(), clock, key: KEY });
    await write(4); // seq 2: switch entry; 3..6
  });
  afterEach(async () => { await db.close(); });

  it('counts the anchors it checked', async () => {
    const a1 = await anchor();
    await write(2);
    const a2 = await anchor();
    expect(await verifyAuditChain(port(), { key: KEY, anchors: located(a2, a1) })).toMatchObject({ ok: true, anchors: 2, keyedSince: 2, lastSeq: 8 });
  });

  it('a cut tail (rows and head record) is caught by a later anchor, not by the chain alone', async () => {
    const a = await anchor(); // seq 6
    truncateAfter(db.state.db, 4);
    expect(await verifyAuditChain(port(), { key: KEY })).toMatchObject({ ok: true, lastSeq: 4 });
    expect(await verifyAuditChain(port(), { key: KEY, anchors: located(a) }))
      .toMatchObject({ ok: false, kind: 'tampered', seq: 5, reason: expect.stringMatching(/rows 5\.\.6 are missing.*truncated/) });
  });

  it('a chain re-keyed with a made-up key is tampering, not a wrong key, when anchors signed with the loaded key exist', async () => {
    const a = await anchor();
    rechain(db.state.db, 2, { rule: 'key', key: randomBytes(32) });
    expect(await verifyAuditChain(port(), { key: KEY, anchors: located(a) })).toMatchObject({ ok: false, kind: 'tampered', seq: 2 });
  });

  it('a whole-chain downgrade to sha256 contradicts the anchors\' switch point', async () => {
    const a = await anchor();
    rechain(db.state.db, 1, { rule: 'sha256' });
    expect(await verifyAuditChain(port(), { key: KEY, anchors: located(a) }))
      .toMatchObject({ ok: false, kind: 'tampered', seq: 2, reason: expect.stringMatching(/keyed since seq 2, but it is now not keyed/) });
  });

  it('an anchored entry with another hash: rewritten between the last good anchor and it', async () => {
    const a1 = await anchor();
    await write(3);
    const a2 = await anchor();
    db.state.db.prepare('UPDATE audit_log SET hash = ? WHERE seq = 9').run('0'.repeat(64));
    expect(await verifyAuditChain(port(), { key: KEY, anchors: located(a1, a2) })).toMatchObject({ ok: false, kind: 'tampered', seq: 9 });
    // The walk finds this one first; the anchor message is for rewrites the walk cannot see (a re-chain with the key).
  });

  it('a forged or foreign anchor is reported', async () => {
    const a = await anchor();
    expect(await verifyAuditChain(port(), { key: KEY, anchors: located({ ...a, seq: 3 }) }))
      .toMatchObject({ ok: false, reason: expect.stringMatching(/bad signature/) });
    const foreign = signAnchor(await chainHead(port()), makeAuditKey(randomBytes(32), 'x'), 0);
    expect(await verifyAuditChain(port(), { key: KEY, anchors: located(foreign) }))
      .toMatchObject({ ok: false, reason: expect.stringMatching(/signed with key id/) });
  });
});

describe('AuditChain (the server component)', () => {
  let db: TempDb;
  let dir: string;
  let logged: string;
  const clock = fakeClock();
  const logger = (): ReturnType<typeof createLogger> => createLogger('info', { destination: new Writable({ write(c, _e, cb) { logged += String(c); cb(); } }) });
  const chain = (settings: Record<string, unknown> = {}): AuditChain => {
    const audit = new AuditLog({ db: port(), clock });
    return new AuditChain({ audit, db: port(), dataDir: dir, settings: { anchorIntervalSec: 10, ...settings }, logger: logger(), clock });
  };
  const port = (): Db<unknown> => stateSqlitePort(db.state);
  beforeEach(async () => { db = await tempStateDb(); dir = db.dir; logged = ''; });
  afterEach(async () => { vi.useRealTimers(); await db.close(); });

  it('first start: generates <dataDir>/audit-key (0600, hex), keys the chain, anchors to the log and the anchor files (0600)', async () => {
    const extra = path.join(dir, 'elsewhere.jsonl');
    const c = chain({ anchorFile: extra });
    await c.start();
    const keyFile = path.join(dir, AUDIT_KEY_FILE);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(keyFile, 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);
    expect(db.state.db.prepare('SELECT seq, action FROM audit_log').all()).toEqual([{ seq: 1, action: 'audit.chain_keyed' }]);
    await c.stop();
    for (const f of [path.join(dir, AUDIT_ANCHORS_FILE), extra]) {
      expect(statSync(f).mode & 0o777).toBe(0o600);
      const lines = readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as AuditAnchor);
      expect(lines.map((l) => [l.reason, l.seq, l.keyedSince])).toEqual([['start', 1, 1], ['stop', 1, 1]]);
    }
    const logLines = logged.trim().split('\n').map((l) => JSON.parse(l) as { auditAnchor?: AuditAnchor; msg: string });
    expect(logLines.filter((l) => l.auditAnchor).map((l) => l.auditAnchor!.reason)).toEqual(['start', 'stop']);
    expect(logged).toContain('generated the audit key');
    expect(logged).not.toContain(readFileSync(keyFile, 'utf8').trim());
  });

  it('a keyed chain: a missing key file or another key refuses the start (KENG_ERR_AUDIT_KEY), and no new key is made', async () => {
    const c = chain();
    await c.start();
    await c.stop();
    const keyFile = path.join(dir, AUDIT_KEY_FILE);
    const original = readFileSync(keyFile);
    rmSync(keyFile);
    await expect(chain().start()).rejects.toMatchObject({ code: 'KENG_ERR_AUDIT_KEY', message: expect.stringMatching(/does not exist: restore it/) });
    expect(existsSync(keyFile)).toBe(false);
    await expect(chain({ key: randomBytes(32).toString('hex') }).start()).rejects.toMatchObject({ code: 'KENG_ERR_AUDIT_KEY', message: expect.stringMatching(/is not the key/) });
    // The same key from another place is fine.
    const fromEnv = chain({ key: original.toString('utf8').trim() });
    await fromEnv.start();
    expect(await fromEnv.verify()).toMatchObject({ ok: true, anchors: 3 });
    await fromEnv.stop();
  });

  it('anchors again on its interval only when the head moved', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const c = chain();
    await c.start();
    const count = (): number => readFileSync(path.join(dir, AUDIT_ANCHORS_FILE), 'utf8').trim().split('\n').length;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(count()).toBe(1);
    await new AuditLog({ db: port(), clock, key: c.auditKey }).record({ actor: 'user:lan', action: 'device.create' });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(count()).toBe(2);
    expect(await c.verify()).toMatchObject({ ok: true, anchors: 2, lastSeq: 2 });
    await c.stop();
  });

  it('an anchor file that cannot be written stops the start, naming the setting', async () => {
    await expect(chain({ anchorFile: path.join(dir, 'no-such-dir', 'a.jsonl') }).start())
      .rejects.toMatchObject({ code: 'KENG_ERR_CONFIG', message: expect.stringMatching(/KENG_AUDIT_ANCHOR_FILE/) });
  });
});

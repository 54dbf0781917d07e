/**
 * The keyed audit chain (src/audit/chain.ts, log.ts, verify.ts; docs/audit.md): HMAC links with a
 * key outside the database, the switch from an unkeyed chain, and the rewrites a database holder
 * can make (edit + re-chain with sha256, with a made-up key, downgrade to the sha256 rule).
 */
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AuditLog, CHAIN_KEYED_ACTION, decodeAuditKey, makeAuditKey, rowHash, verifyAuditChain, type AuditKey, type AuditRow,
} from '../../src/audit/index.js';
import { dropRow, rechain } from '../helpers/audit-attack.js';
import type { Db } from '../../src/storage/sql/index.js';
import { stateSqlitePort } from '../../src/storage/state/index.js';
import { fakeClock, tempStateDb, type TempDb } from './auth-db.js';

const KEY = makeAuditKey(Buffer.alloc(32, 7), 'test key');
const OTHER = makeAuditKey(Buffer.alloc(32, 9), 'other key');

let db: TempDb;
let clock: ReturnType<typeof fakeClock>;
beforeEach(async () => { db = await tempStateDb(); clock = fakeClock(); });
afterEach(async () => { await db.close(); });

/** The state store as the server reaches it (follows db.reopen()). */
const port = (): Db<unknown> => stateSqlitePort({ get db() { return db.state.db; } });
function log(key: AuditKey | null = KEY): AuditLog {
  return new AuditLog({ db: port(), clock, key });
}
async function write(a: AuditLog, n: number, action = 'device.create'): Promise<void> {
  for (let i = 0; i < n; i++) { clock.advance(1000); await a.record({ actor: { kind: 'user', id: 'lan' }, action, target: `device:d${i}` }); }
}
const rows = (): AuditRow[] => db.state.db.prepare('SELECT * FROM audit_log ORDER BY seq').all() as AuditRow[];
const sql = (s: string, ...args: unknown[]): void => { db.state.db.prepare(s).run(...args); };

describe('keyed chain', () => {
  it('a fresh chain is keyed from seq 1 (the switch entry), every row HMAC-linked; verifies with the key only', async () => {
    await write(log(), 3);
    const r = rows();
    expect(r.map((x) => [x.seq, x.action, x.key_id])).toEqual([
      [1, CHAIN_KEYED_ACTION, KEY.id], [2, 'device.create', KEY.id], [3, 'device.create', KEY.id], [4, 'device.create', KEY.id],
    ]);
    expect(r[1]!.hash).not.toBe(rowHash(r[1]!)); // not the rule anyone can compute
    expect(await verifyAuditChain(port(), { key: KEY })).toEqual({ ok: true, count: 4, lastSeq: 4, keyedSince: 1, keyId: KEY.id, anchors: 0 });
    expect(await verifyAuditChain(port())).toMatchObject({ ok: false, kind: 'no-key', seq: 1 });
    expect(await verifyAuditChain(port(), { key: OTHER })).toMatchObject({ ok: false, kind: 'wrong-key', seq: 1 });
    expect(await verifyAuditChain(port(), { key: OTHER })).toMatchObject({ reason: expect.stringContaining(`key id ${KEY.id}`) });
  });

  it('an upgrade keeps the sha256 links of the old rows and keys everything from the switch entry on', async () => {
    await write(log(null), 3); // the version before keying
    expect(await verifyAuditChain(port())).toMatchObject({ ok: true, count: 3, keyedSince: null });
    const keyed = log();
    await keyed.ensureKeyed(); // the server's start
    await keyed.ensureKeyed(); // only once
    await write(keyed, 2);
    expect(rows().map((x) => [x.seq, x.key_id === null ? 'sha256' : 'hmac', x.action])).toEqual([
      [1, 'sha256', 'device.create'], [2, 'sha256', 'device.create'], [3, 'sha256', 'device.create'],
      [4, 'hmac', CHAIN_KEYED_ACTION], [5, 'hmac', 'device.create'], [6, 'hmac', 'device.create'],
    ]);
    expect(JSON.parse(rows()[3]!.after_json!)).toEqual({ algorithm: 'HMAC-SHA256', keyId: KEY.id, unkeyedEntries: 3 });
    expect(await verifyAuditChain(port(), { key: KEY })).toMatchObject({ ok: true, count: 6, keyedSince: 4 });
    // An edit in the old, unkeyed part is still caught by its link.
    sql("UPDATE audit_log SET actor = 'user:x' WHERE seq = 2");
    expect(await verifyAuditChain(port(), { key: KEY })).toMatchObject({ ok: false, kind: 'tampered', seq: 2 });
  });

  it('once keyed, an append without the key or with another key is refused (nothing unkeyed after keyed rows)', async () => {
    await write(log(), 1);
    await expect(write(log(null), 1)).rejects.toThrow(expect.objectContaining({ code: 'KENG_ERR_AUDIT_KEY', message: expect.stringMatching(/no audit key/) }));
    await expect(write(log(OTHER), 1)).rejects.toThrow(expect.objectContaining({ code: 'KENG_ERR_AUDIT_KEY', message: expect.stringMatching(/is not the key/) }));
    expect(rows()).toHaveLength(2);
  });

  it('continues one chain across a restart (another AuditLog on the reopened store)', async () => {
    await write(log(), 2);
    await db.reopen();
    const a2 = new AuditLog({ db: port(), clock, key: makeAuditKey(Buffer.alloc(32, 7), 'the same key, read again') });
    await write(a2, 2);
    expect(await verifyAuditChain(port(), { key: KEY })).toMatchObject({ ok: true, count: 5 });
  });
});

describe('rewrites by someone holding only the database', () => {
  beforeEach(async () => {
    await write(log(null), 2);
    await write(log(), 4); // seq 3: the switch entry, 4..7 keyed
  });

  it('an edited keyed row is caught, its hash left alone or recomputed with sha256', async () => {
    sql("UPDATE audit_log SET actor = 'user:x' WHERE seq = 5");
    expect(await verifyAuditChain(port(), { key: KEY })).toMatchObject({ ok: false, kind: 'tampered', seq: 5, reason: expect.stringMatching(/HMAC/) });
  });

  it('edit + drop + re-chain with the shipped sha256, key ids kept: the HMAC fails at the first rewritten row', async () => {
    sql("UPDATE audit_log SET actor = 'user:x' WHERE seq = 5");
    dropRow(db.state.db, 6);
    rechain(db.state.db, 5, { rule: 'key', key: Buffer.from('not the key'), keyId: KEY.id });
    expect(await verifyAuditChain(port(), { key: KEY })).toMatchObject({ ok: false, kind: 'tampered', seq: 5 });
  });

  it('re-chained to the sha256 rule from a keyed row on: an unkeyed row after keyed ones', async () => {
    sql("UPDATE audit_log SET actor = 'user:x' WHERE seq = 5");
    rechain(db.state.db, 5, { rule: 'sha256' });
    expect(await verifyAuditChain(port(), { key: KEY })).toMatchObject({ ok: false, kind: 'tampered', seq: 5, reason: expect.stringMatching(/unkeyed/) });
  });

  it('everything downgraded to sha256, switch entry included: caught while an audit key exists', async () => {
    sql("UPDATE audit_log SET actor = 'user:x' WHERE seq = 5");
    rechain(db.state.db, 1, { rule: 'sha256' });
    expect(await verifyAuditChain(port())).toMatchObject({ ok: true }); // the old rule alone cannot tell
    expect(await verifyAuditChain(port(), { key: KEY })).toMatchObject({ ok: false, kind: 'tampered', reason: expect.stringMatching(/no entry is keyed/) });
  });

  it('downgraded up to a later keyed row: the keyed part must start with the switch entry', async () => {
    sql("UPDATE audit_log SET actor = 'user:x' WHERE seq = 4");
    rechain(db.state.db, 1, { rule: 'sha256' });
    // Put back HMAC links from seq 6 on? Impossible without the key; a made-up key there is caught as not the switch entry.
    rechain(db.state.db, 6, { rule: 'key', key: Buffer.alloc(32, 1), keyId: KEY.id });
    expect(await verifyAuditChain(port(), { key: KEY })).toMatchObject({ ok: false, kind: 'tampered', seq: 6, reason: expect.stringMatching(CHAIN_KEYED_ACTION) });
  });

  it('re-chained with a made-up key under its own key id: reported as a wrong key (anchors tell it apart: audit-anchors test)', async () => {
    sql("UPDATE audit_log SET actor = 'user:x' WHERE seq = 5");
    rechain(db.state.db, 3, { rule: 'key', key: randomBytes(32) });
    expect(await verifyAuditChain(port(), { key: KEY })).toMatchObject({ ok: false, kind: 'wrong-key', seq: 3 });
  });
});

describe('audit key text', () => {
  it('hex (64+ digits) first, else base64 or base64url, at least 32 bytes', async () => {
    const raw = randomBytes(32);
    expect(decodeAuditKey(raw.toString('hex')).equals(raw)).toBe(true);
    expect(decodeAuditKey(`${raw.toString('hex').toUpperCase()}\n`).equals(raw)).toBe(true);
    expect(decodeAuditKey(raw.toString('base64')).equals(raw)).toBe(true);
    expect(decodeAuditKey(raw.toString('base64url')).equals(raw)).toBe(true);
    expect(() => decodeAuditKey(randomBytes(16).toString('hex'))).toThrow(/at least 32 bytes/);
    expect(() => decodeAuditKey('not a key!')).toThrow(/at least 32 bytes/);
    expect(makeAuditKey(raw, 'x').id).toMatch(/^[0-9a-f]{16}$/);
    expect(makeAuditKey(raw, 'x').id).not.toContain(raw.toString('hex').slice(0, 16));
  });
});

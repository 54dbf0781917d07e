import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog, GENESIS_HASH, canonicalJson, redact, verifyAuditChain } from '../../src/audit/index.js';
import { fakeClock, tempStateDb, type TempDb } from './auth-db.js';
import type { Db } from '../../src/storage/sql/index.js';
import { stateSqlitePort } from '../../src/storage/state/index.js';

let db: TempDb;
let audit: AuditLog;
/** The state store as the server reaches it (follows db.reopen()). */
const port = (): Db<unknown> => stateSqlitePort({ get db() { return db.state.db; } });
beforeEach(async () => {
  db = await tempStateDb();
  const clock = fakeClock();
  audit = new AuditLog({ db: port(), clock });
  for (let i = 1; i <= 5; i++) {
    clock.advance(1000);
    await audit.record({ actor: { kind: 'user', id: 'lan' }, ip: '10.0.0.1', action: 'device.create', target: `device:d${i}`, after: { id: `d${i}`, secret: 's3cr3t' } });
  }
});
afterEach(async () => { await db.close(); });

const sql = (s: string, ...args: unknown[]): void => { db.state.db.prepare(s).run(...args); };

describe('audit chain', () => {
  it('chains rows from the genesis hash and verifies', async () => {
    const rows = db.state.db.prepare('SELECT seq, prev_hash, hash FROM audit_log ORDER BY seq').all() as Array<{ seq: number; prev_hash: string; hash: string }>;
    expect(rows.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(rows[0]!.prev_hash).toBe(GENESIS_HASH);
    for (let i = 1; i < rows.length; i++) expect(rows[i]!.prev_hash).toBe(rows[i - 1]!.hash);
    expect(await verifyAuditChain(port())).toMatchObject({ ok: true, count: 5, lastSeq: 5, keyedSince: null });
  });

  it('never stores secrets in before/after', async () => {
    const all = JSON.stringify(db.state.db.prepare('SELECT * FROM audit_log').all());
    expect(all).not.toContain('s3cr3t');
    expect((await audit.query({ limit: 1 }))[0]!.after).toEqual({ id: 'd5', secret: '[redacted]' });
    expect(redact({ password: 'x', nested: { accessToken: 'y', apiKey: 'z', name: 'ok' }, list: [{ secret: 1 }] }))
      .toEqual({ password: '[redacted]', nested: { accessToken: '[redacted]', apiKey: '[redacted]', name: 'ok' }, list: [{ secret: '[redacted]' }] });
  });

  it('catches an edited row', async () => {
    sql("UPDATE audit_log SET actor = 'user:someone-else' WHERE seq = 3");
    expect(await verifyAuditChain(port())).toMatchObject({ ok: false, seq: 3 });
  });

  it('catches an edited row even when its hash is recomputed naively (next row no longer links)', async () => {
    sql("UPDATE audit_log SET after_json = '{}', hash = 'f' || substr(hash, 2) WHERE seq = 2");
    expect(await verifyAuditChain(port())).toMatchObject({ ok: false, seq: 2 });
  });

  it('catches a deleted row', async () => {
    sql('DELETE FROM audit_log WHERE seq = 2');
    expect(await verifyAuditChain(port())).toMatchObject({ ok: false, seq: 3 });
  });

  it('catches a deleted row even when the later rows are renumbered', async () => {
    sql('DELETE FROM audit_log WHERE seq = 2');
    sql('UPDATE audit_log SET seq = seq - 1 WHERE seq > 2');
    expect(await verifyAuditChain(port())).toMatchObject({ ok: false, seq: 2 });
  });

  it('catches a removed tail (head record)', async () => {
    sql('DELETE FROM audit_log WHERE seq = 5');
    expect(await verifyAuditChain(port())).toMatchObject({ ok: false, seq: 5 });
  });

  it('catches reordered rows', async () => {
    sql('UPDATE audit_log SET seq = 100 WHERE seq = 2');
    sql('UPDATE audit_log SET seq = 2 WHERE seq = 4');
    sql('UPDATE audit_log SET seq = 4 WHERE seq = 100');
    expect(await verifyAuditChain(port())).toMatchObject({ ok: false, seq: 2 });
  });

  it('appends continue the chain after a restart; filters and paging work', async () => {
    await db.reopen();
    const a2 = new AuditLog({ db: port(), clock: fakeClock(Date.UTC(2026, 0, 1)) });
    await a2.record({ actor: 'cli:root', action: 'user.unlock', target: 'user:lan' });
    expect(await verifyAuditChain(port())).toMatchObject({ ok: true, count: 6, lastSeq: 6 });
    expect((await a2.query({ action: 'user' })).map((e) => e.seq)).toEqual([6]);
    expect((await a2.query({ action: 'device.create', limit: 2 })).map((e) => e.seq)).toEqual([5, 4]);
    expect((await a2.query({ action: 'device.create', beforeSeq: 4 })).map((e) => e.seq)).toEqual([3, 2, 1]);
    expect((await a2.query({ actor: 'cli:root' }))).toHaveLength(1);
    expect((await a2.query({ from: Date.UTC(2026, 0, 1) })).map((e) => e.seq)).toEqual([6]);
  });

  it('canonical JSON does not depend on key order', async () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: null } })).toBe('{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}');
  });
});

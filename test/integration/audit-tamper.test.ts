/**
 * The issue, end to end: "using the shipped hash function, a script changed who deleted a device,
 * dropped a lockout row, re-chained the log and `keng audit verify` said 'chain intact'".
 *
 * A real Keng (buildApp, real HTTP) records audited changes: areas, a device created and deleted,
 * a user locked out after failed logins; it stops (anchoring its head). Each test copies that data
 * directory, edits the COPY's state.db with better-sqlite3 as someone holding only the database
 * would, and runs the real CLI (node bin/keng.js, compiled) on it: the rewrite is reported with a
 * non-zero exit, the untouched copy verifies, a cut tail is caught by an anchor, a wrong key is
 * reported as such, and a chain started before keying verifies after the upgrade.
 */
import { execFile, execSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENESIS_HASH, anchorSignatureOk, makeAuditKey, decodeAuditKey, rowHash, type AuditAnchor } from '../../src/audit/index.js';
import { ALL_MIGRATIONS } from '../../src/migrations.js';
import { StateDb } from '../../src/storage/state/index.js';
import { createLogger } from '../../src/core/index.js';
import { startAccountsApp, type AccountsApp } from '../component/auth-fixture.js';
import { issueAttack, rechain, truncateAfter } from '../helpers/audit-attack.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'bin/keng.js');
const PW = 'mật khẩu đủ dài 2026';

interface Run { code: number; stdout: string; stderr: string }
/** The real CLI on `dataDir`, with no KENG_* variable of this process leaking in. */
function keng(args: string[], dataDir: string, extra: Record<string, string> = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KENG_')) env[k] = v;
  Object.assign(env, { KENG_DATA_DIR: dataDir }, extra);
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** dist/ is rebuilt when a source file is newer than its compiled file (the CLI runs compiled code). */
function buildIfStale(): void {
  const stale = (dir: string): boolean => readdirSync(dir, { withFileTypes: true }).some((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return stale(p);
    if (!e.name.endsWith('.ts')) return false;
    const js = path.join(ROOT, 'dist', path.relative(ROOT, p)).replace(/\.ts$/, '.js');
    return !existsSync(js) || statSync(js).mtimeMs < statSync(p).mtimeMs;
  });
  if (stale(path.join(ROOT, 'src'))) execSync('npx tsc -p tsconfig.json', { cwd: ROOT, stdio: 'pipe' });
}

const tmp: string[] = [];
const tempDir = (prefix: string): string => { const d = mkdtempSync(path.join(tmpdir(), prefix)); tmp.push(d); return d; };
let golden: string;
let t: AccountsApp | undefined;

/** A copy of the stopped server's data directory, and its state.db opened for editing. */
function copy(): { dir: string; edit(fn: (db: Database.Database) => void): void } {
  const dir = path.join(tempDir('keng-audit-copy-'), 'data');
  cpSync(golden, dir, { recursive: true });
  return {
    dir,
    edit(fn) {
      const db = new Database(path.join(dir, 'state.db'));
      try { fn(db); } finally { db.close(); }
    },
  };
}

beforeAll(async () => {
  buildIfStale();
  golden = path.join(tempDir('keng-audit-golden-'), 'data');
  t = await startAccountsApp({ dataDir: golden, stoppedAt: Date.now() });
  const ok = async (m: string, url: string, body?: unknown, want = [200, 201, 204]): Promise<void> => {
    const r = await t!.http(m, url, body);
    expect(want, `${m} ${url}: ${JSON.stringify(r.body)}`).toContain(r.status);
  };
  await ok('POST', '/api/v1/areas', { code: 'P', name: 'Tỉnh', level: 'province' });
  await ok('POST', '/api/v1/areas', { code: 'C', name: 'Xã', level: 'commune', parent: 'P' });
  await ok('POST', '/api/v1/devices', { id: 'loa-01', kind: 'speaker', name: 'Loa chợ', area: 'C' });
  await ok('DELETE', '/api/v1/devices/loa-01');
  await ok('POST', '/api/v1/users', { username: 'lan', password: PW, role: 'viewer', areas: ['C'] });
  for (let i = 0; i < 10; i++) {
    t.advance(600_000); // past each growing delay
    expect((await t.http('POST', '/api/v1/auth/login', { username: 'lan', password: `sai ${i}` }, null)).status).toBe(401);
  }
  await ok('PATCH', '/api/v1/users/lan', { unlock: true });
  await ok('POST', '/api/v1/devices', { id: 'cam-bien-1', kind: 'sensor', name: 'Ruộng', area: 'C' });
  // The signed head over the API (admin): what the log and the anchor files hold too.
  const head = await t.http('GET', '/api/v1/audit/head');
  expect(head.status).toBe(200);
  const key = makeAuditKey(decodeAuditKey(readFileSync(path.join(golden, 'audit-key'), 'utf8')), 'test');
  expect(anchorSignatureOk(head.body as AuditAnchor, key)).toBe(true);
  expect(head.body).toMatchObject({ keyedSince: 1, kid: key.id });
  await t.stop();
  t = undefined;
}, 240_000);

afterAll(async () => {
  await t?.stop();
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

describe('keng audit verify on a copy of a data directory', { timeout: 120_000 }, () => {
  it('the untouched copy: chain intact, keyed since seq 1, anchors checked', async () => {
    const c = copy();
    const r = await keng(['audit', 'verify'], c.dir);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(/^OK: \d+ audit entries, chain intact \(last seq \d+, keyed since seq 1, [2-9]\d* anchors checked\)\n$/);
    const json = JSON.parse((await keng(['audit', 'verify', '--json'], c.dir)).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ ok: true, keyedSince: 1, notes: [] });
  });

  it('the issue\'s attack, re-chained with the shipped sha256: tampering, exit 1', async () => {
    const c = copy();
    let edited = 0;
    c.edit((db) => { edited = issueAttack(db, { rule: 'sha256' }).edited; });
    const r = await keng(['audit', 'verify'], c.dir);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^keng: KENG_ERR_AUDIT_CHAIN_BROKEN: Audit log chain broken at seq ${edited}: an unkeyed \\(sha256\\) row after the chain was keyed`));
  });

  it('the same, every row (switch entry too) rewritten to sha256: caught by the anchors, and by the key alone without them', async () => {
    const c = copy();
    c.edit((db) => {
      issueAttack(db, { rule: 'sha256' });
      // Re-chain from the very first row: no keyed row is left at all.
      const rows = db.prepare('SELECT * FROM audit_log ORDER BY seq').all() as Array<Parameters<typeof rowHash>[0] & { hash: string }>;
      let prev = GENESIS_HASH;
      for (const row of rows) {
        row.prev_hash = prev;
        row.hash = rowHash(row);
        db.prepare('UPDATE audit_log SET prev_hash = ?, hash = ?, key_id = NULL WHERE seq = ?').run(row.prev_hash, row.hash, row.seq);
        prev = row.hash;
      }
      db.prepare('UPDATE audit_head SET hash = ? WHERE id = 1').run(prev);
    });
    const withAnchors = await keng(['audit', 'verify'], c.dir);
    expect(withAnchors.code).toBe(1);
    expect(withAnchors.stderr).toMatch(/chain broken at seq 1: the anchor of .* records the chain as keyed since seq 1, but it is now not keyed at all/);
    rmSync(path.join(c.dir, 'audit-anchors.jsonl'));
    const keyOnly = await keng(['audit', 'verify'], c.dir);
    expect(keyOnly.code).toBe(1);
    expect(keyOnly.stderr).toMatch(/chain broken at seq 1: no entry is keyed although there is an audit key/);
  });

  it('the attack re-chained with a made-up key: tampering, whether it keeps the key id or names its own', async () => {
    const mine = copy();
    let edited = 0;
    mine.edit((db) => {
      const kid = db.prepare('SELECT key_id FROM audit_log WHERE seq = 1').pluck().get() as string;
      edited = issueAttack(db, { rule: 'key', key: randomBytes(32), keyId: kid }).edited;
    });
    const r1 = await keng(['audit', 'verify'], mine.dir);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toContain(`chain broken at seq ${edited}: the HMAC does not match the row`);

    const own = copy();
    own.edit((db) => { edited = issueAttack(db, { rule: 'key', key: randomBytes(32) }).edited; });
    const r2 = await keng(['audit', 'verify'], own.dir);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(new RegExp(`chain broken at seq ${edited}: keyed with key id [0-9a-f]{16}, but the chain is keyed with key id [0-9a-f]{16} since seq 1`));

    // The whole chain under the made-up key (switch entry included) would look like a wrong key, but the anchors
    // signed with the installation's key prove which key is right.
    const all = copy();
    const madeUp = randomBytes(32);
    all.edit((db) => { issueAttack(db, { rule: 'key', key: madeUp }); rechain(db, 1, { rule: 'key', key: madeUp }); });
    const r3 = await keng(['audit', 'verify'], all.dir);
    expect(r3.code).toBe(1);
    expect(r3.stderr).toMatch(/KENG_ERR_AUDIT_CHAIN_BROKEN: .*is signed with the loaded key .*re-chained with another key/);
  });

  it('a cut tail (rows and head record) is caught by the anchor written at stop', async () => {
    const c = copy();
    let last = 0;
    c.edit((db) => { last = db.prepare('SELECT MAX(seq) FROM audit_log').pluck().get() as number; truncateAfter(db, last - 2); });
    const r = await keng(['audit', 'verify'], c.dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`chain broken at seq ${last - 1}: rows ${last - 1}\\.\\.${last} are missing: the anchor of .* \\(the log was truncated\\)`));
  });

  it('a signed head kept elsewhere (`keng audit head`) catches a cut tail even when the anchor file went with it', async () => {
    const c = copy();
    const head = await keng(['audit', 'head'], c.dir);
    expect(head.code).toBe(0);
    const kept = path.join(tempDir('keng-kept-'), 'head.json');
    writeFileSync(kept, head.stdout);
    expect(JSON.parse(head.stdout)).toMatchObject({ v: 1, reason: 'head', keyedSince: 1 });
    c.edit((db) => { truncateAfter(db, (db.prepare('SELECT MAX(seq) FROM audit_log').pluck().get() as number) - 1); });
    rmSync(path.join(c.dir, 'audit-anchors.jsonl'));
    const blind = await keng(['audit', 'verify'], c.dir);
    expect(blind.code).toBe(0); // what no check can see: the tail and every anchor of it gone
    expect(blind.stdout).toMatch(/note: no anchor file/);
    const r = await keng(['audit', 'verify', '--anchors', kept], c.dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the log was truncated/);
  });

  it('a wrong or missing key is reported as such (exit 78), not as tampering', async () => {
    const c = copy();
    const wrong = await keng(['audit', 'verify'], c.dir, { KENG_AUDIT_KEY: randomBytes(32).toString('hex') });
    expect(wrong.code).toBe(78);
    expect(wrong.stderr).toMatch(/^keng: KENG_ERR_AUDIT_KEY: Audit key: the chain is keyed with key id [0-9a-f]{16} since seq 1, but the key from KENG_AUDIT_KEY \(audit.key\) has id [0-9a-f]{16} \(wrong key/);
    const right = await keng(['audit', 'verify'], c.dir, { KENG_AUDIT_KEY: readFileSync(path.join(c.dir, 'audit-key'), 'utf8').trim() });
    expect(right.code).toBe(0);
    rmSync(path.join(c.dir, 'audit-key'));
    const none = await keng(['audit', 'verify'], c.dir);
    expect(none.code).toBe(78);
    expect(none.stderr).toMatch(/KENG_ERR_AUDIT_KEY: .*no audit key was given/);
    // A CLI change would go unaudited: refused, and nothing is written.
    const unlock = await keng(['users', 'unlock', 'lan'], c.dir);
    expect(unlock.code).toBe(78);
    expect(unlock.stderr).toMatch(/KENG_ERR_AUDIT_KEY: .*this process has no audit key/);
    expect(existsSync(path.join(c.dir, 'audit-key'))).toBe(false);
  });
});

describe('upgrade from an unkeyed chain', { timeout: 120_000 }, () => {
  it('entries of the old version keep their sha256 links; from the upgrade on the chain is keyed and verifies', async () => {
    const dir = path.join(tempDir('keng-audit-upgrade-'), 'data');
    // The state as the version before keying left it: schema 10, sha256 links, no key, no anchors.
    const old = new StateDb({ dataDir: dir, logger: createLogger('silent'), migrations: ALL_MIGRATIONS.slice(0, 10) });
    await old.start();
    let prev = GENESIS_HASH;
    for (let seq = 1; seq <= 3; seq++) {
      const row = { seq, at: Date.UTC(2025, 0, seq), actor: 'admin:admin', action: 'area.create', target: `area:A${seq}`, ip: null, before_json: null, after_json: null, prev_hash: prev };
      const hash = rowHash(row);
      old.db.prepare(`INSERT INTO audit_log (seq, at, actor, action, target, ip, before_json, after_json, prev_hash, hash)
        VALUES (@seq, @at, @actor, @action, @target, @ip, @before_json, @after_json, @prev_hash, @hash)`).run({ ...row, hash });
      old.db.prepare('INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash').run(seq, hash);
      prev = hash;
    }
    await old.stop();
    const before = await keng(['audit', 'verify'], dir);
    expect(before.stdout).toMatch(/^OK: 3 audit entries, chain intact \(last seq 3, NOT keyed/);

    const app = await startAccountsApp({ dataDir: dir });
    expect((await app.http('POST', '/api/v1/areas', { code: 'P', name: 'Tỉnh', level: 'province' })).status).toBe(201);
    await app.stop();
    const after = await keng(['audit', 'verify'], dir);
    expect(after.code).toBe(0);
    expect(after.stdout).toMatch(/^OK: 5 audit entries, chain intact \(last seq 5, keyed since seq 4, 2 anchors checked\)/);
    const db = new Database(path.join(dir, 'state.db'), { readonly: true });
    try {
      expect(db.prepare('SELECT seq, action, key_id IS NOT NULL AS keyed FROM audit_log ORDER BY seq').all()).toEqual([
        { seq: 1, action: 'area.create', keyed: 0 }, { seq: 2, action: 'area.create', keyed: 0 }, { seq: 3, action: 'area.create', keyed: 0 },
        { seq: 4, action: 'audit.chain_keyed', keyed: 1 }, { seq: 5, action: 'area.create', keyed: 1 },
      ]);
    } finally {
      db.close();
    }
  });
});

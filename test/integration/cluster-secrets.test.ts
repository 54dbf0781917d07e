/**
 * Cluster mode: the command key ring and the link-signing keys shared by every node, sealed in a
 * real PostgreSQL 15 (src/storage/secrets, src/rpc/command-keys/ring.ts, src/media/signing.ts).
 * Each "node" is its own pool on one database and its own data directory, as two Keng processes.
 *
 * - two nodes starting at once end with one ring (and one key of each kind);
 * - a rotation or a retirement on one node is listed, and signed with, by the other within its
 *   poll period; rotations on two nodes at the same moment both survive (row lock);
 * - the rows hold no seed or key in any form (the bytes are searched);
 * - another audit key: the start is refused with KENG_ERR_SECRETS_KEY naming the cause, counted,
 *   and nothing is written (no new ring); an altered row is refused as such;
 * - an embedded node's files are imported when the database has none; a node whose files differ
 *   from the database's uses the database's and says so.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/index.js';
import { systemClock } from '../../src/core/clock.js';
import { COMMAND_KEYS_FILE, CommandKeys } from '../../src/rpc/index.js';
import { verifySigned } from '../../src/rpc/command-keys/index.js';
import { SIGNING_KEY_FILE, UrlSigner, loadOrCreateKey, sharedSigningKey } from '../../src/media/index.js';
import { SharedSecrets } from '../../src/storage/secrets/index.js';
import { ADMIN_TOKEN_FILE, AdminAuth } from '../../src/auth/index.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { LogSink } from '../component/api-fakes.js';
import { freshStateDatabase, stopStatePostgres } from '../helpers/state-dialects.js';

afterAll(stopStatePostgres);

const AUDIT_KEY = Buffer.alloc(32, 0x5a);
const OTHER_KEY = Buffer.alloc(32, 0x33);
const cmd = { deviceId: 'loa-01', requestId: 'r_1', method: 'broadcast.play', params: { broadcastId: 'b1' }, expiresAt: 2_000_000_000_000 };

interface Node { dir: string; db: Db<unknown>; secrets: SharedSecrets; keys: CommandKeys; logs: LogSink; metrics: Registry }

let url = '';
const opened: Node[] = [];
const dirs: string[] = [];
const tmp = (): string => { const d = mkdtempSync(path.join(tmpdir(), 'keng-secrets-')); dirs.push(d); return d; };

beforeEach(async () => { url = await freshStateDatabase(); });
afterEach(async () => {
  for (const n of opened.splice(0)) { await n.keys.stop(); await n.db.close(); }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** One node: a pool, a data directory, the sealed store keyed by `root`, its command keys (not started). */
function node(root = AUDIT_KEY, dir = tmp(), pollMs?: number): Node {
  const db = openPgDb(url);
  const logs = new LogSink();
  const logger = createLogger('debug', { destination: logs });
  const metrics = new Registry();
  const secrets = new SharedSecrets({ db, rootSecret: () => root, rootLabel: () => 'KENG_AUDIT_KEY (audit.key)', clock: systemClock, logger, metrics });
  const keys = new CommandKeys({ dataDir: dir, logger, shared: secrets, ...(pollMs ? { pollMs } : {}) });
  const n = { dir, db, secrets, keys, logs, metrics };
  opened.push(n);
  return n;
}

async function rows(): Promise<Array<{ name: string; version: number; key_id: string; nonce: Buffer; sealed: Buffer }>> {
  const db = openPgDb(url);
  try {
    return (await sql<{ name: string; version: number; key_id: string; nonce: Buffer; sealed: Buffer }>`SELECT * FROM cluster_secrets ORDER BY name`.execute(db.kysely)).rows;
  } finally { await db.close(); }
}

/** Whether `hay` holds `needle` as raw bytes, base64, base64url or hex. */
function holds(hay: Buffer, needle: Buffer): boolean {
  const forms = [needle, Buffer.from(needle.toString('base64')), Buffer.from(needle.toString('base64url')), Buffer.from(needle.toString('hex'))];
  return forms.some((f) => hay.includes(f));
}

async function until(what: string, ms: number, ok: () => boolean): Promise<number> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - t0;
}

const seedsOf = (dir: string): Buffer[] =>
  (JSON.parse(readFileSync(path.join(dir, COMMAND_KEYS_FILE), 'utf8')) as { keys: Array<{ seed: string }> }).keys.map((k) => Buffer.from(k.seed, 'base64url'));

describe('shared secrets on PostgreSQL', () => {
  it('two nodes starting at once end with one ring and one link-signing key', async () => {
    const [a, b] = [node(), node()];
    await Promise.all([a.keys.start(), b.keys.start()]);
    expect(a.keys.list()).toHaveLength(1);
    expect(b.keys.list()).toEqual(a.keys.list());
    // A command signed on B verifies with the keys A lists.
    const s = b.keys.sign(cmd);
    expect(a.keys.list().some((k) => k.kid === s.kid && verifySigned(k.publicKey, s.signed, s.sig))).toBe(true);

    const [ka, kb] = await Promise.all([
      sharedSigningKey(a.secrets, 'media-signing', 'media link-signing key', path.join(a.dir, SIGNING_KEY_FILE), createLogger('silent')),
      sharedSigningKey(b.secrets, 'media-signing', 'media link-signing key', path.join(b.dir, SIGNING_KEY_FILE), createLogger('silent')),
    ]);
    expect(kb.equals(ka)).toBe(true);
    const exp = Math.floor(Date.now() / 1000) + 60;
    expect(new UrlSigner(kb).verify('m1', String(exp), new UrlSigner(ka).sign('m1', exp), Date.now())).toBe('ok');

    const stored = await rows();
    expect(stored.map((r) => [r.name, r.version])).toEqual([['command-keys', 1], ['media-signing', 1]]);
    // Exactly one node generated each; no key file was written (the database holds them).
    const generated = [...a.logs.lines, ...b.logs.lines].filter((l) => /generated the command key ring/.test(String(l.msg)));
    expect(generated).toHaveLength(1);
  });

  it('the rows hold no seed, private key or HMAC key in any encoding', async () => {
    // The secrets come from files (imported), so the test knows every byte it must not find.
    const dir = tmp();
    const embedded = new CommandKeys({ dataDir: dir, logger: createLogger('silent') });
    await embedded.start();
    await embedded.rotate();
    await embedded.stop();
    const mediaKey = loadOrCreateKey(path.join(dir, SIGNING_KEY_FILE));
    const a = node(AUDIT_KEY, dir);
    await a.keys.start();
    await sharedSigningKey(a.secrets, 'media-signing', 'media link-signing key', path.join(dir, SIGNING_KEY_FILE), createLogger('silent'));
    const seeds = seedsOf(dir);
    expect(seeds).toHaveLength(2);
    const stored = await rows();
    expect(stored).toHaveLength(2);
    for (const r of stored) {
      const all = Buffer.concat([Buffer.from(r.name), Buffer.from(r.key_id), r.nonce, r.sealed]);
      for (const secret of [...seeds, mediaKey, AUDIT_KEY]) expect(holds(all, secret), r.name).toBe(false);
      // Not even the ring's JSON structure is readable.
      expect(all.includes(Buffer.from('"seed"'))).toBe(false);
      expect(all.includes(Buffer.from('Ed25519'))).toBe(false);
    }
    // The sealed ring does not open as another row (the row's name is bound to it).
    const ring = stored.find((r) => r.name === 'command-keys')!;
    const db = openPgDb(url);
    try {
      await sql`UPDATE cluster_secrets SET nonce = ${ring.nonce}, sealed = ${ring.sealed} WHERE name = 'media-signing'`.execute(db.kysely);
    } finally { await db.close(); }
    const b = node();
    await expect(sharedSigningKey(b.secrets, 'media-signing', 'media link-signing key', path.join(b.dir, SIGNING_KEY_FILE), createLogger('silent')))
      .rejects.toMatchObject({ code: 'KENG_ERR_SECRETS_KEY', message: expect.stringMatching(/damaged or altered/) });
  });

  it('a rotation on A is listed and signed with on B within its poll period; a retirement on B reaches A', async () => {
    const [a, b] = [node(), node()];
    await a.keys.start();
    await b.keys.start();
    const old = a.keys.activeKid;
    const fresh = await a.keys.rotate();
    expect(a.keys.activeKid).toBe(fresh.kid);
    const took = await until('B sees the rotation', 5_000, () => b.keys.activeKid === fresh.kid);
    expect(b.keys.list()).toEqual(a.keys.list());
    expect(b.keys.list().map((k) => [k.kid, k.active])).toEqual([[fresh.kid, true], [old, false]]);
    const s = b.keys.sign(cmd);
    expect(s.kid).toBe(fresh.kid);
    expect(verifySigned(fresh.publicKey, s.signed, s.sig)).toBe(true);
    expect(b.logs.lines.some((l) => /changed on another node/.test(String(l.msg)))).toBe(true);

    await b.keys.retire(old);
    const took2 = await until('A sees the retirement', 5_000, () => a.keys.list().length === 1);
    expect(a.keys.list()).toEqual(b.keys.list());
    // The active key cannot be retired, whichever node asks, and the check is the database's.
    await expect(a.keys.retire(fresh.kid)).rejects.toMatchObject({ code: 'KENG_ERR_COMMAND_KEY_ACTIVE' });
    await expect(a.keys.retire(old)).rejects.toMatchObject({ code: 'KENG_ERR_NOT_FOUND' });
    process.stdout.write(`command keys: rotation on A seen on B after ${took} ms, retirement on B seen on A after ${took2} ms (poll 1000 ms)\n`);
    expect((await rows()).find((r) => r.name === 'command-keys')!.version).toBe(3);
  });

  it('rotations on two nodes at the same moment both survive', async () => {
    const [a, b] = [node(), node()];
    await a.keys.start();
    await b.keys.start();
    const first = a.keys.activeKid;
    const [ra, rb] = await Promise.all([a.keys.rotate(), b.keys.rotate()]);
    await until('both nodes list three keys', 5_000, () => a.keys.list().length === 3 && b.keys.list().length === 3);
    expect(new Set(a.keys.list().map((k) => k.kid))).toEqual(new Set([first, ra.kid, rb.kid]));
    expect(b.keys.list()).toEqual(a.keys.list());
    expect([ra.kid, rb.kid]).toContain(a.keys.activeKid);
  });

  it('a node with another audit key refuses to start, names the cause, counts it, and makes no new ring', async () => {
    const a = node();
    await a.keys.start();
    const before = await rows();
    const wrong = node(OTHER_KEY);
    const err = await wrong.keys.start().then(() => null, (e: unknown) => e as { code: string; message: string });
    expect(err).toMatchObject({ code: 'KENG_ERR_SECRETS_KEY' });
    expect(err!.message).not.toMatch(/\n/);
    expect(err!.message).toMatch(/cannot decrypt the command key ring stored in PostgreSQL/);
    expect(err!.message).toMatch(/another audit key/);
    expect(err!.message).toMatch(/same KENG_AUDIT_KEY/);
    expect(err!.message).toMatch(/does not make a new one/);
    expect(await rows()).toEqual(before);
    const metric = await wrong.metrics.getSingleMetricAsString('keng_cluster_secret_decrypt_failures_total');
    expect(metric).toMatch(/keng_cluster_secret_decrypt_failures_total\{secret="command-keys"\} 1/);
    expect(() => wrong.keys.list()).toThrow(expect.objectContaining({ code: 'KENG_ERR_NOT_READY' }));
    // The link-signing keys too.
    await sharedSigningKey(a.secrets, 'firmware-signing', 'firmware link-signing key', path.join(a.dir, 'firmware-signing.key'), createLogger('silent'));
    await expect(sharedSigningKey(wrong.secrets, 'firmware-signing', 'firmware link-signing key', path.join(wrong.dir, 'firmware-signing.key'), createLogger('silent')))
      .rejects.toMatchObject({ code: 'KENG_ERR_SECRETS_KEY' });
  });

  it('a running node meets a row it cannot decrypt: keeps its keys, counts it once, reloads when the row is good again', async () => {
    const [a, b] = [node(), node()];
    await a.keys.start();
    await b.keys.start();
    const listed = b.keys.list();
    const good = (await rows()).find((r) => r.name === 'command-keys')!;
    const flipped = Buffer.from(good.sealed);
    flipped[flipped.length - 1] = flipped[flipped.length - 1]! ^ 1;
    const db = openPgDb(url);
    try {
      await sql`UPDATE cluster_secrets SET version = version + 1, sealed = ${flipped} WHERE name = 'command-keys'`.execute(db.kysely);
      const failures = async (): Promise<string> => await b.metrics.getSingleMetricAsString('keng_cluster_secret_decrypt_failures_total');
      await until('B counts the bad row', 5_000, () => b.logs.lines.some((l) => l.level === 50 && /cannot be used on this node/.test(String(l.msg))));
      await new Promise((r) => setTimeout(r, 2_500)); // two more polls
      expect(await failures()).toMatch(/\{secret="command-keys"\} 1$/m);
      expect(b.keys.list()).toEqual(listed);
      expect(b.keys.sign(cmd).kid).toBe(listed[0]!.kid);
      // Good again (as a rotation through A writes it): B reloads.
      await sql`UPDATE cluster_secrets SET sealed = ${good.sealed} WHERE name = 'command-keys'`.execute(db.kysely);
    } finally { await db.close(); }
    const fresh = await a.keys.rotate();
    await until('B reloads after the row is good again', 5_000, () => b.keys.activeKid === fresh.kid);
  });

  it('a node switching from embedded mode imports its files; a node whose files differ uses the database\'s and warns', async () => {
    // An embedded node: its own ring (rotated once) and media key, which its speakers trust.
    const dirA = tmp();
    const embedded = new CommandKeys({ dataDir: dirA, logger: createLogger('silent') });
    await embedded.start();
    await embedded.rotate();
    const embeddedList = embedded.list();
    await embedded.stop();
    const mediaA = loadOrCreateKey(path.join(dirA, SIGNING_KEY_FILE));
    // Another embedded node, with other keys.
    const dirB = tmp();
    const other = new CommandKeys({ dataDir: dirB, logger: createLogger('silent') });
    await other.start();
    await other.stop();
    writeFileSync(path.join(dirB, SIGNING_KEY_FILE), randomBytes(32), { mode: 0o600 });

    const a = node(AUDIT_KEY, dirA);
    await a.keys.start();
    expect(a.keys.list()).toEqual(embeddedList);
    expect(a.logs.lines.some((l) => l.level === 30 && /imported the command key ring of .*command-keys\.json/.test(String(l.msg)))).toBe(true);
    const ka = await sharedSigningKey(a.secrets, 'media-signing', 'media link-signing key', path.join(dirA, SIGNING_KEY_FILE), createLogger('silent'));
    expect(ka.equals(mediaA)).toBe(true);

    const b = node(AUDIT_KEY, dirB);
    await b.keys.start();
    expect(b.keys.list()).toEqual(embeddedList);
    const warned = b.logs.lines.filter((l) => l.level === 40).map((l) => String(l.msg));
    expect(warned.some((m) => /command-keys\.json holds another command key ring than the cluster database; the database's wins/.test(m))).toBe(true);
    const blogger = createLogger('info', { destination: b.logs });
    const kb = await sharedSigningKey(b.secrets, 'media-signing', 'media link-signing key', path.join(dirB, SIGNING_KEY_FILE), blogger);
    expect(kb.equals(mediaA)).toBe(true);
    expect(b.logs.lines.some((l) => l.level === 40 && /media-signing\.key holds another media link-signing key .* the database's wins/.test(String(l.msg)))).toBe(true);
    // The files are left as they were (switching back to embedded mode finds them unchanged).
    expect(seedsOf(dirB)).toHaveLength(1);

    // An unusable file does not matter once the database has the ring (warned)...
    const dirC = tmp();
    writeFileSync(path.join(dirC, COMMAND_KEYS_FILE), '{"format":1}');
    const c = node(AUDIT_KEY, dirC);
    await c.keys.start();
    expect(c.keys.list()).toEqual(embeddedList);
    expect(c.logs.lines.some((l) => l.level === 40 && /command key file is not usable/.test(String(l.msg)))).toBe(true);
    // ...but with no ring in the database it is not replaced by a new ring: the start is refused.
    url = await freshStateDatabase();
    await expect(node(AUDIT_KEY, dirC).keys.start()).rejects.toThrow(/not a valid key ring/);
    expect(await rows()).toEqual([]);
  });

  it('the generated admin token (no KENG_ADMIN_TOKEN) is the cluster\'s: any node accepts it, a node without the file gets it written', async () => {
    const [a, b, c, d] = [node(), node(), node(), node()];
    const tokenA = 'embedded-node-admin-token-0123456789';
    writeFileSync(path.join(a.dir, ADMIN_TOKEN_FILE), `${tokenA}\n`, { mode: 0o600 });
    writeFileSync(path.join(c.dir, ADMIN_TOKEN_FILE), 'another-nodes-admin-token-9876543210\n', { mode: 0o600 });
    const auth = (n: Node, adminToken?: string): AdminAuth => new AdminAuth({ dataDir: n.dir, logger: createLogger('info', { destination: n.logs }), shared: n.secrets, ...(adminToken ? { adminToken } : {}) });
    // A setting wins and writes nothing to the database.
    const configured = auth(d, 'configured-admin-token-0123456789');
    await configured.start();
    expect(await rows()).toEqual([]);
    const [aa, ab, ac] = [auth(a), auth(b), auth(c)];
    await aa.start();
    await ab.start();
    await ac.start();
    for (const x of [aa, ab, ac]) expect(x.verify(tokenA)).toBe(true);
    expect(ac.verify('another-nodes-admin-token-9876543210')).toBe(false);
    expect(readFileSync(path.join(b.dir, ADMIN_TOKEN_FILE), 'utf8').trim()).toBe(tokenA);
    expect(c.logs.lines.some((l) => l.level === 40 && /admin-token holds another admin token than the cluster database/.test(String(l.msg)))).toBe(true);
    const row = (await rows()).find((r) => r.name === 'admin-token')!;
    expect(holds(Buffer.concat([row.nonce, row.sealed]), Buffer.from(tokenA))).toBe(false);
  });
});

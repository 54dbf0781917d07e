/**
 * Cluster mode end to end: two Keng processes (dist/src/main.js) on one PostgreSQL 15 and one Redis
 * share one command key ring and one media and firmware link-signing key (docs/cluster.md "Shared
 * secrets"), although each was given its own key files.
 *
 * Node A starts on a copy of an embedded node's data directory: its files are imported. Node B starts
 * with other files: it uses the database's keys and warns. Then:
 * - GET /api/v1/command-keys answers the same on A and B (the embedded node's ring);
 * - a rotation through B is listed by A within its poll period;
 * - a media link and a firmware link signed by A download from B;
 * - a broadcast through B to a reference speaker connected to B, which was given only the active key
 *   A lists and refuses unsigned commands: it verifies the play command, downloads and plays it;
 * - a third node that cannot decrypt the ring (sealed under another audit key; a row altered in
 *   place) exits with 78 and one line naming the cause, and writes nothing.
 *
 * Needs a build (npx tsc -p tsconfig.json).
 */
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { broadcastLog, waitBroadcast } from '../../bench/lib/speaker-bench.js';
import { createLogger } from '../../src/core/index.js';
import { CommandKeys, COMMAND_KEYS_FILE } from '../../src/rpc/index.js';
import { KengApi } from '../../src/sim/api-client.js';
import { deriveKek, seal, unseal } from '../../src/storage/secrets/index.js';
import { runSpeakers, type SpeakerSim } from '../../src/sim/speaker/index.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { CLUSTER_ADMIN, CLUSTER_AUDIT_KEY, Cluster, adminApi, removeClusterDirs, seedCluster, within, type ClusterNode } from '../helpers/cluster.js';
import { silentWav } from '../helpers/audio.js';

let pg: PostgresServer | undefined;
let redis: RedisServer | undefined;
let cluster: Cluster | undefined;
let sim: SpeakerSim | undefined;
let a: ClusterNode;
let b: ClusterNode;
let seedRing: { active: string; keys: Array<{ kid: string }> };

const dataDirOf = (n: ClusterNode): string => n.env.KENG_DATA_DIR!;
type Listed = Array<{ kid: string; alg: string; publicKey: string; active: boolean; createdAt: string }>;
const keysOf = (n: ClusterNode): Promise<Listed> => adminApi(n.k.httpUrl, 'GET', '/api/v1/command-keys') as Promise<Listed>;

beforeAll(async () => {
  [pg, redis] = await Promise.all([startPostgres(), startRedis()]);
  const seed = await seedCluster([]);
  seedRing = JSON.parse(readFileSync(path.join(seed.dataDir, COMMAND_KEYS_FILE), 'utf8')) as typeof seedRing;
  cluster = new Cluster(seed, await pg.createDatabase('keng_secrets'), redis.url);
  // Direct MQTT (no HAProxy here): the speaker connects to node B itself.
  const env = { KENG_MQTT_PROXY_PROTOCOL: 'off', KENG_LOG_LEVEL: 'info' };
  a = await cluster.start('a', { env });
  b = await cluster.start('b', {
    env,
    // B's own, different keys: what a second embedded node switched to cluster mode would hold.
    async prepare(dir) {
      for (const f of [COMMAND_KEYS_FILE, 'media-signing.key', 'firmware-signing.key']) rmSync(path.join(dir, f), { force: true });
      const own = new CommandKeys({ dataDir: dir, logger: createLogger('silent') });
      await own.start();
      await own.stop();
      writeFileSync(path.join(dir, 'media-signing.key'), randomBytes(32), { mode: 0o600 });
      writeFileSync(path.join(dir, 'firmware-signing.key'), randomBytes(32), { mode: 0o600 });
    },
  });
}, 240_000);

afterAll(async () => {
  await sim?.stop();
  await cluster?.destroy();
  await redis?.destroy();
  await pg?.destroy();
  removeClusterDirs();
}, 90_000);

describe('cluster mode: one set of secrets for every node', () => {
  it('both nodes list the embedded node\'s command keys; B says its own files are not used; the rows are sealed', async () => {
    const [ka, kb] = await Promise.all([keysOf(a), keysOf(b)]);
    expect(kb).toEqual(ka);
    expect(ka.map((k) => k.kid)).toEqual(seedRing.keys.map((k) => k.kid));
    expect(a.k.output()).toMatch(/imported the command key ring of .*command-keys\.json/);
    expect(a.k.output()).toMatch(/imported the media link-signing key/);
    expect(a.k.output()).toMatch(/imported the firmware link-signing key/);
    expect(b.k.output()).toMatch(/command-keys\.json holds another command key ring than the cluster database; the database's wins/);
    expect(b.k.output()).toMatch(/media-signing\.key holds another media link-signing key/);
    expect(b.k.output()).toMatch(/firmware-signing\.key holds another firmware link-signing key/);
    const rows = (await pg!.query<{ name: string; sealed: Buffer }>('SELECT name, sealed FROM cluster_secrets ORDER BY name', [], 'keng_secrets')).rows;
    expect(rows.map((r) => r.name)).toEqual(['command-keys', 'firmware-signing', 'media-signing']);
    const seedText = readFileSync(path.join(dataDirOf(a), COMMAND_KEYS_FILE), 'utf8');
    const seedSeed = (JSON.parse(seedText) as { keys: Array<{ seed: string }> }).keys[0]!.seed;
    for (const r of rows) {
      expect(r.sealed.includes(Buffer.from(seedSeed))).toBe(false);
      expect(r.sealed.includes(Buffer.from(seedSeed, 'base64url'))).toBe(false);
      expect(r.sealed.includes(readFileSync(path.join(dataDirOf(a), 'media-signing.key')))).toBe(false);
    }
  });

  it('a rotation through B is listed by A within its poll period', async () => {
    const fresh = await adminApi(b.k.httpUrl, 'POST', '/api/v1/command-keys/rotate') as { kid: string };
    const took = await within('A lists the new key', 10_000, async () => (await keysOf(a))[0]?.kid === fresh.kid, 50);
    expect(await keysOf(a)).toEqual(await keysOf(b));
    expect((await keysOf(a)).map((k) => [k.kid, k.active])).toEqual([[fresh.kid, true], [seedRing.active, false]]);
    process.stdout.write(`rotation through B listed by A after ${took} ms\n`);
  }, 30_000);

  it('a media link and a firmware link signed by A download from B', async () => {
    const api = new KengApi(a.k.httpUrl, CLUSTER_ADMIN);
    const wav = silentWav(2);
    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(wav)], { type: 'audio/wav' }), 'im-lang.wav');
    const up = await fetch(`${a.k.httpUrl}/api/v1/media`, { method: 'POST', headers: { authorization: `Bearer ${CLUSTER_ADMIN}` }, body: form });
    expect(up.status, await up.clone().text()).toBe(201);
    const media = await up.json() as { id: string; ext?: string };
    const item = (await api.request<{ url?: string }>('GET', `/api/v1/media/${media.id}`)).body;
    expect(item.url).toMatch(new RegExp(`^${a.k.httpUrl}/media/${media.id}/file\\?exp=\\d+&sig=`));
    // The file itself is not copied between nodes (docs/cluster.md "Media library"): copy it, as an operator would.
    mkdirSync(path.join(dataDirOf(b), 'media'), { recursive: true });
    const file = `${media.id}.wav`;
    copyFileSync(path.join(dataDirOf(a), 'media', file), path.join(dataDirOf(b), 'media', file));
    const onB = await fetch(item.url!.replace(a.k.httpUrl, b.k.httpUrl));
    expect(onB.status).toBe(200);
    expect(Buffer.from(await onB.arrayBuffer()).equals(readFileSync(path.join(dataDirOf(a), 'media', file)))).toBe(true);
    // A link altered by one character is refused by B (403): B checks, it does not just serve.
    const bad = item.url!.replace(a.k.httpUrl, b.k.httpUrl).replace(/sig=(.)/, (_m, c: string) => `sig=${c === 'A' ? 'B' : 'A'}`);
    expect((await fetch(bad)).status).toBe(403);

    const bin = randomBytes(4096);
    const fw = await fetch(`${a.k.httpUrl}/api/v1/firmware/packages?title=loa-fw&version=1.2.3`, {
      method: 'POST', headers: { authorization: `Bearer ${CLUSTER_ADMIN}`, 'content-type': 'application/octet-stream' }, body: bin,
    });
    expect(fw.status, await fw.clone().text()).toBe(201);
    const pkg = await fw.json() as { id: string; url: string };
    const fwUrl = (await api.request<{ url: string }>('GET', `/api/v1/firmware/packages/${pkg.id}`)).body.url;
    expect(fwUrl.startsWith(a.k.httpUrl)).toBe(true);
    mkdirSync(path.join(dataDirOf(b), 'firmware'), { recursive: true });
    copyFileSync(path.join(dataDirOf(a), 'firmware', `${pkg.id}.bin`), path.join(dataDirOf(b), 'firmware', `${pkg.id}.bin`));
    const fwOnB = await fetch(fwUrl.replace(a.k.httpUrl, b.k.httpUrl));
    expect(fwOnB.status).toBe(200);
    expect(Buffer.from(await fwOnB.arrayBuffer()).equals(bin)).toBe(true);
  }, 60_000);

  it('a play command signed on B verifies with the keys A lists (reference speaker, signatures required)', async () => {
    const apiB = new KengApi(b.k.httpUrl, CLUSTER_ADMIN);
    const listedByA = await keysOf(a);
    const cred = await adminApi(a.k.httpUrl, 'POST', '/api/v1/devices', { id: 'loa-sec-1', kind: 'speaker', name: 'Loa 1', area: 'p1' }) as { secret: string };
    const errors: string[] = [];
    const commands: Array<{ method: string; signed: boolean }> = [];
    sim = await runSpeakers({
      url: `mqtt://127.0.0.1:${b.mqttPort}`, credentials: [{ id: 'loa-sec-1', secret: cred.secret }], speed: 10, telemetryIntervalMs: 600_000,
      // Only the active key A lists: B must sign with exactly that key.
      commandKeys: listedByA.filter((k) => k.active).map((k) => ({ kid: k.kid, alg: k.alg, publicKey: k.publicKey })), requireSignedCommands: true,
      onError: (id, err) => errors.push(`${id}: ${err.message}`),
    });
    const speaker = sim.speakers[0]!;
    // `signed`: the command carried a signature that the speaker's verifier (src/sim/speaker/verify.ts) accepted.
    speaker.on('command', (c: { method: string; signed: boolean }) => commands.push({ method: c.method, signed: c.signed }));
    await within('the speaker is online on B', 30_000, async () => (await apiB.request<{ online?: boolean }>('GET', '/api/v1/devices/loa-sec-1')).body.online === true, 200);

    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(silentWav(3))], { type: 'audio/wav' }), 'thong-bao.wav');
    const up = await fetch(`${b.k.httpUrl}/api/v1/media`, { method: 'POST', headers: { authorization: `Bearer ${CLUSTER_ADMIN}` }, body: form });
    expect(up.status).toBe(201);
    const media = await up.json() as { id: string };
    const post = await apiB.request<{ id: string }>('POST', '/api/v1/broadcasts', { target: { areas: ['p1'] }, content: { mediaId: media.id }, volume: 50 });
    expect(post.status, JSON.stringify(post.body)).toBe(201);
    const counts = await waitBroadcast(apiB, post.body.id, (c) => (c.completed ?? 0) >= 1, 60_000);
    expect(counts).toMatchObject({ completed: 1 });
    const states = (await broadcastLog(apiB, post.body.id)).map((l) => l.state);
    expect(states).toEqual(['pending', 'sent', 'accepted', 'playing', 'completed']);
    expect(speaker.received.filter((r) => r.method === 'broadcast.play')).toHaveLength(1);
    expect(commands).toEqual([{ method: 'broadcast.play', signed: true }]);
    expect(speaker.refused).toEqual([]);
    expect(errors).toEqual([]);
  }, 120_000);

  it('a node that cannot decrypt the ring refuses to start with one line naming the cause, and writes nothing', async () => {
    const q = (text: string, params: unknown[] = []) => pg!.query<{ name: string; version: number; key_id: string; nonce: Buffer; sealed: Buffer }>(text, params, 'keng_secrets');
    const before = (await q('SELECT * FROM cluster_secrets ORDER BY name')).rows;
    const ring = before.find((r) => r.name === 'command-keys')!;
    const refusal = async (name: string): Promise<string> => {
      const err = await cluster!.start(name, { env: { KENG_MQTT_PROXY_PROTOCOL: 'off' } }).then(() => null, (e: Error) => e);
      expect(err, 'the node started').not.toBeNull();
      expect(err!.message).toMatch(/keng exited early \(78\)/);
      const line = err!.message.split('\n').find((l) => l.startsWith('keng: '));
      expect(line).toBeDefined();
      return line!;
    };
    try {
      // Sealed under a key derived from another audit key (what a node with another KENG_AUDIT_KEY would have written).
      const other = deriveKek(Buffer.alloc(32, 0x77));
      const plain = unseal(deriveKek(Buffer.from(CLUSTER_AUDIT_KEY, 'hex')), 'command-keys', ring.nonce, ring.sealed);
      expect(plain).not.toBeNull();
      const resealed = seal(other, 'command-keys', plain!);
      await q('UPDATE cluster_secrets SET key_id = $1, nonce = $2, sealed = $3 WHERE name = $4', [other.id, resealed.nonce, resealed.sealed, 'command-keys']);
      const line1 = await refusal('c');
      expect(line1).toMatch(/^keng: Cluster secrets: cannot decrypt the command key ring stored in PostgreSQL .*another audit key .*same KENG_AUDIT_KEY/);
      // A row altered in place (one byte of the ciphertext).
      const flipped = Buffer.from(ring.sealed);
      flipped[0] = flipped[0]! ^ 1;
      await q('UPDATE cluster_secrets SET key_id = $1, nonce = $2, sealed = $3 WHERE name = $4', [ring.key_id, ring.nonce, flipped, 'command-keys']);
      const line2 = await refusal('d');
      expect(line2).toMatch(/^keng: Cluster secrets: cannot decrypt the command key ring .*damaged or altered/);
      // Neither made a new ring: the rows are as the test left them.
      const after = (await q('SELECT * FROM cluster_secrets ORDER BY name')).rows;
      expect(after.map((r) => [r.name, r.version])).toEqual(before.map((r) => [r.name, r.version]));
      expect(after.find((r) => r.name === 'command-keys')!.sealed.equals(flipped)).toBe(true);
    } finally {
      await q('UPDATE cluster_secrets SET key_id = $1, nonce = $2, sealed = $3 WHERE name = $4', [ring.key_id, ring.nonce, ring.sealed, 'command-keys']);
    }
    // The running nodes kept their keys meanwhile (their poll saw no new version) and still agree.
    expect(await keysOf(b)).toEqual(await keysOf(a));
  }, 240_000);
});

/**
 * Cluster mode, two Keng nodes (dist/src/main.js child processes) on one real PostgreSQL and Redis,
 * 300 reference speakers in one commune, half connected to each node (as a TCP balancer spreads them).
 * Their media directories are one directory (the shared storage docs/cluster.md asks for).
 *
 * - A broadcast started on node A reaches every speaker, also those connected to node B: node B, which
 *   holds their sessions, owns and publishes their commands; every target goes pending → sent → accepted
 *   → playing → completed once, each speaker receives the play command once, and both nodes report the
 *   same broadcast.
 * - An Actual alert created by one operator on node A and approved by a second operator on node B plays on
 *   every speaker of both nodes, once.
 * - A broadcast started on node A and stopped on node B while 20 of its speakers (10 on each node) are away: their
 *   play commands, queued on whichever node owns them, are withdrawn by the stop; when the speakers come back none
 *   of them gets the play, and their targets are `stopped` with one log line each.
 *
 * Needs a build (npx tsc -p tsconfig.json).
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { broadcastLog, uploadTone, waitBroadcast, waitSpeakersOnline } from '../../bench/lib/speaker-bench.js';
import { KengApi } from '../../src/sim/api-client.js';
import { simDeviceIds } from '../../src/sim/credentials.js';
import { registerSpeakers } from '../../src/sim/speaker-fleet.js';
import { runSpeakers, type SpeakerCommand, type SpeakerSim } from '../../src/sim/speaker/index.js';
import { CLUSTER_AUDIT_KEY } from '../helpers/cluster.js';
import { spawnKeng, type KengProcess } from '../helpers/process.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';

const N = 300;
const SPEED = 10;
const ADMIN = 'cluster-nodes-admin-token-0123456789';
const PASSWORD = 'mat-khau-rat-dai-0123456789';

let pg: PostgresServer | undefined;
let redis: RedisServer | undefined;
const nodes: KengProcess[] = [];
const sims: SpeakerSim[] = [];
/** broadcast id → device id → play commands received (re-deliveries included). */
const plays = new Map<string, Map<string, number>>();
let root = '';

beforeAll(async () => {
  pg = await startPostgres();
  redis = await startRedis();
  root = mkdtempSync(path.join(tmpdir(), 'keng-cluster-nodes-'));
  const shared = path.join(root, 'media');
  mkdirSync(shared);
  for (const name of ['node-a', 'node-b']) {
    const dataDir = path.join(root, name);
    mkdirSync(dataDir);
    symlinkSync(shared, path.join(dataDir, 'media'));
    nodes.push(await spawnKeng({
      KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: ADMIN, KENG_DATABASE_URL: pg.url, KENG_REDIS_URL: redis.url, KENG_NODE_ID: name,
      KENG_AUDIT_KEY: CLUSTER_AUDIT_KEY, KENG_LOG_LEVEL: 'info', // one keyed audit chain in PostgreSQL: one key on every node
      // 150 speakers per node answer and report within the same second (as in bench:broadcast).
      KENG_MQTT_RATE_LIMIT_PER_SEC: '100000', KENG_MQTT_RATE_LIMIT_BURST: '100000',
    }, { timeoutMs: 90_000 }));
  }
}, 200_000);

afterAll(async () => {
  for (const s of sims) await s.stop();
  for (const k of nodes) if (k.proc.exitCode === null && k.proc.signalCode === null) { k.proc.kill('SIGTERM'); await k.exited; }
  await redis?.destroy();
  await pg?.destroy();
  if (root) rmSync(root, { recursive: true, force: true });
}, 90_000);

async function login(k: KengProcess, username: string): Promise<KengApi> {
  const r = await fetch(`${k.httpUrl}/api/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: PASSWORD }),
  });
  expect(r.status).toBe(200);
  return new KengApi(k.httpUrl, ((await r.json()) as { token: string }).token);
}

function expectOnePlayEach(broadcastId: string): void {
  const m = plays.get(broadcastId) ?? new Map<string, number>();
  expect(m.size).toBe(N);
  expect([...m].filter(([, n]) => n !== 1).slice(0, 5)).toEqual([]);
}

describe('cluster mode: broadcasts and alerts across two nodes', () => {
  let apiA: KengApi;
  let apiB: KengApi;

  it('300 speakers, half on each node, all online as both nodes see it', async () => {
    const [a, b] = nodes as [KengProcess, KengProcess];
    apiA = new KengApi(a.httpUrl, ADMIN);
    apiB = new KengApi(b.httpUrl, ADMIN);
    await apiA.ensureArea({ code: 'tinh', name: 'Tỉnh', level: 'province' });
    await apiA.ensureArea({ code: 'xa', name: 'Xã Keng', level: 'commune', parent: 'tinh' });
    const creds = await registerSpeakers(apiA, simDeviceIds('cn-loa-', N), 'xa', { concurrency: 8 });
    for (const [k, half] of [[a, creds.slice(0, N / 2)], [b, creds.slice(N / 2)]] as const) {
      const sim = await runSpeakers({ url: `mqtt://127.0.0.1:${k.mqttPort}`, credentials: [...half], speed: SPEED, telemetryIntervalMs: 600_000, connectConcurrency: 50 });
      for (const s of sim.speakers) {
        s.on('command', (c: SpeakerCommand) => {
          const b = (c.params as { broadcastId?: unknown } | null)?.broadcastId;
          if (c.method !== 'broadcast.play' || typeof b !== 'string') return;
          const m = plays.get(b) ?? new Map<string, number>();
          plays.set(b, m);
          m.set(s.id, (m.get(s.id) ?? 0) + 1);
        });
      }
      sims.push(sim);
    }
    await waitSpeakersOnline(apiA, N, 90_000);
    await waitSpeakersOnline(apiB, N, 90_000);
  }, 180_000);

  it('a broadcast started on node A plays once on every speaker, those held by node B too', async () => {
    const media = await uploadTone({ httpUrl: nodes[0]!.httpUrl, adminToken: ADMIN } as Parameters<typeof uploadTone>[0], { seconds: 20, frequency: 440, name: 'thong-bao.mp3' });
    const post = await apiA.request<{ id: string }>('POST', '/api/v1/broadcasts', { target: { areas: ['xa'] }, content: { mediaId: media.id }, volume: 60 });
    expect(post.status, JSON.stringify(post.body)).toBe(201);
    const id = post.body.id;
    const counts = await waitBroadcast(apiA, id, (c) => (c.completed ?? 0) >= N, 150_000).catch(async (err: Error) => {
      const r = await apiA.request('GET', `/api/v1/broadcasts/${encodeURIComponent(id)}`);
      throw new Error(`${err.message}: ${JSON.stringify(r.body).slice(0, 2000)}`);
    });
    expect(counts).toMatchObject({ completed: N });
    // Node B reports the same broadcast (one database).
    expect(await waitBroadcast(apiB, id, (c) => (c.completed ?? 0) >= N, 10_000)).toMatchObject({ completed: N });

    const log = await broadcastLog(apiA, id);
    const byDevice = new Map<string, string[]>();
    for (const l of log) byDevice.set(l.deviceId, [...(byDevice.get(l.deviceId) ?? []), l.state]);
    expect(byDevice.size).toBe(N);
    const odd = [...byDevice].filter(([, states]) => states.join(',') !== 'pending,sent,accepted,playing,completed');
    if (odd.length > 0) process.stdout.write(nodes.map((k) => k.output().split('\n').filter((l) => /"level":(40|50|60)|ignored/.test(l)).slice(0, 40).join('\n')).join('\n----\n'));
    expect(odd.slice(0, 5)).toEqual([]);
    expectOnePlayEach(id);
  }, 240_000);

  it('an alert raised on node A and approved by a second operator on node B plays on every speaker once', async () => {
    for (const u of ['can-bo-1', 'can-bo-2']) {
      expect((await apiA.request('POST', '/api/v1/users', { username: u, password: PASSWORD, role: 'operator', areas: ['xa'] })).status).toBe(201);
    }
    const op1 = await login(nodes[0]!, 'can-bo-1');
    const op2 = await login(nodes[1]!, 'can-bo-2');
    const raised = await op1.request<{ id: string; state: string }>('POST', '/api/v1/alerts', {
      status: 'Actual', msgType: 'Alert', event: 'Lũ quét', severity: 'Extreme', urgency: 'Immediate', certainty: 'Likely',
      headline: 'Cảnh báo lũ quét', description: 'Nước suối dâng nhanh.', instruction: 'Di chuyển lên chỗ cao ngay.',
      areas: ['xa'], expires: new Date(Date.now() + 3600_000).toISOString(), repeat: 1,
    });
    expect(raised.status, JSON.stringify(raised.body)).toBe(201);
    expect(raised.body.state).toBe('pending_approval');
    const approved = await op2.request<{ state: string; broadcastId: string }>('POST', `/api/v1/alerts/${raised.body.id}/approve`);
    expect(approved.status, JSON.stringify(approved.body)).toBe(200);
    expect(approved.body.state).toBe('active');
    const id = approved.body.broadcastId;
    await waitBroadcast(apiB, id, (c) => (c.playing ?? 0) + (c.completed ?? 0) >= N, 120_000);
    expectOnePlayEach(id);
    // Both nodes tell the same story.
    const onA = (await op1.request<{ state: string }>('GET', `/api/v1/alerts/${raised.body.id}`)).body;
    expect(onA.state).toBe('active');
  }, 240_000);

  it('a broadcast started on A and stopped on B while 20 speakers are away: their queued plays are withdrawn, none plays when they come back', async () => {
    const [simA, simB] = sims as [SpeakerSim, SpeakerSim];
    const away = [...simA.speakers.slice(0, 10), ...simB.speakers.slice(0, 10)];
    const awayIds = new Set(away.map((s) => s.id));
    const backAt = Date.now() + 25_000;
    for (const s of away) void s.goOffline(25_000); // network loss: the will is published, back after 25 s
    const online = async (api: KengApi) => (await api.request<unknown[]>('GET', '/api/v1/devices?kind=speaker&online=true')).body.length;
    const end = Date.now() + 15_000;
    while ((await online(apiA)) > N - 20 || (await online(apiB)) > N - 20) {
      if (Date.now() > end) throw new Error('the away speakers are still online');
      await new Promise((r) => setTimeout(r, 250));
    }
    const media = await uploadTone({ httpUrl: nodes[0]!.httpUrl, adminToken: ADMIN } as Parameters<typeof uploadTone>[0], { seconds: 30, frequency: 660, name: 'dung.mp3' });
    const post = await apiA.request<{ id: string; targets: Array<{ deviceId: string; state: string }> }>('POST', '/api/v1/broadcasts',
      { target: { areas: ['xa'] }, content: { mediaId: media.id }, volume: 60 });
    expect(post.status, JSON.stringify(post.body)).toBe(201);
    const id = post.body.id;
    expect(post.body.targets.filter((t) => awayIds.has(t.deviceId)).every((t) => t.state === 'offline' || t.state === 'pending')).toBe(true);
    const stop = await apiB.request<{ targets: Array<{ deviceId: string; state: string }> }>('POST', `/api/v1/broadcasts/${encodeURIComponent(id)}/stop`);
    expect(stop.status, JSON.stringify(stop.body)).toBe(200);
    expect(stop.body.targets.filter((t) => awayIds.has(t.deviceId)).map((t) => t.state)).toEqual(away.map(() => 'stopped'));
    // The speakers come back (to the node each was on) and warm up; then a few seconds for any late play.
    await new Promise((r) => setTimeout(r, Math.max(0, backAt - Date.now())));
    await waitSpeakersOnline(apiA, N, 60_000);
    await new Promise((r) => setTimeout(r, 5_000));
    const got = plays.get(id) ?? new Map<string, number>();
    expect([...awayIds].filter((d) => got.has(d))).toEqual([]);
    const now = await apiA.request<{ targets: Array<{ deviceId: string; state: string }> }>('GET', `/api/v1/broadcasts/${encodeURIComponent(id)}`);
    expect(now.body.targets.filter((t) => awayIds.has(t.deviceId)).map((t) => t.state)).toEqual(away.map(() => 'stopped'));
    const lines = (await broadcastLog(apiA, id)).filter((l) => awayIds.has(l.deviceId) && l.state === 'stopped');
    expect(lines.length).toBe(20);
    expect(new Set(lines.map((l) => l.deviceId)).size).toBe(20);
  }, 180_000);
});

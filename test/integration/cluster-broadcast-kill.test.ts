/**
 * Cluster mode, a node killed in the middle of a broadcast: two Keng processes behind HAProxy
 * (send-proxy-v2, /readyz checks) on one PostgreSQL and Redis, 300 reference speakers connecting
 * through HAProxy (spread over both nodes), one media directory for both (shared storage), and the
 * media links pointing at HAProxy's HTTP frontend (media.publicBaseUrl), as a cluster must set them.
 *
 * A broadcast is started on node A; node B, holding about half the speakers, is SIGKILLed once a
 * third of the speakers have their play command. Its speakers reconnect through HAProxy to node A,
 * which adopts their commands (the device's session claim) and hears their answers and reports
 * again where node B never acknowledged them. Every target must reach `completed` once, with each
 * state logged once, and every speaker must play the broadcast exactly once (a play command sent
 * again after the move is recognised by its request id, device protocol §11.4).
 *
 * Needs a build (npx tsc -p tsconfig.json).
 */
import { mkdirSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { broadcastLog, uploadTone, waitBroadcast, waitSpeakersOnline, waitUntil } from '../../bench/lib/speaker-bench.js';
import { KengApi } from '../../src/sim/api-client.js';
import { simDeviceIds } from '../../src/sim/credentials.js';
import { registerSpeakers } from '../../src/sim/speaker-fleet.js';
import { runSpeakers, type SpeakerCommand, type SpeakerSim } from '../../src/sim/speaker/index.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import type { Haproxy } from '../../tools/haproxy.js';
import { CLUSTER_ADMIN, Cluster, alive, removeClusterDirs, seedCluster } from '../helpers/cluster.js';
import { freePort } from '../helpers/process.js';

const N = 300;
/** A 20 s tone played 5× faster: about 4 s of playback, so the kill lands while speakers play. */
const SPEED = 5;

let pg: PostgresServer;
let redis: RedisServer;
let cluster: Cluster;
let hp: Haproxy;
let sim: SpeakerSim | undefined;
let shared = '';

beforeAll(async () => {
  [pg, redis] = await Promise.all([startPostgres(), startRedis()]);
  const url = await pg.createDatabase('cluster_broadcast_kill');
  const seed = await seedCluster([]);
  shared = path.join(path.dirname(seed.dataDir), 'shared-media');
  mkdirSync(shared);
  cluster = new Cluster(seed, url, redis.url);
  // Speakers download media through the balancer, as in production: a link must outlive the node that signed it.
  const httpPort = await freePort();
  const env = {
    KENG_MQTT_RATE_LIMIT_PER_SEC: '100000', KENG_MQTT_RATE_LIMIT_BURST: '100000', KENG_LOG_LEVEL: 'info',
    KENG_MEDIA_PUBLIC_BASE_URL: `http://127.0.0.1:${httpPort}`,
  };
  const sharedMedia = (dataDir: string): void => {
    rmSync(path.join(dataDir, 'media'), { recursive: true, force: true });
    symlinkSync(shared, path.join(dataDir, 'media'));
  };
  await cluster.start('node-a', { env, prepare: sharedMedia });
  await cluster.start('node-b', { env, prepare: sharedMedia });
  hp = await cluster.haproxy({ httpPort });
}, 240_000);

afterAll(async () => {
  // A speaker still waiting for acknowledgements (a test that failed midway) would wait for them for ever.
  await Promise.race([sim?.stop(), new Promise((r) => setTimeout(r, 10_000))]);
  await cluster?.destroy();
  await redis?.destroy();
  await pg?.destroy();
  removeClusterDirs();
}, 90_000);

describe('cluster mode: a node SIGKILLed during a 300-speaker broadcast', () => {
  it('every target completes once and every speaker plays once, those that moved to the other node too', async () => {
    const a = cluster.node('node-a');
    const b = cluster.node('node-b');
    const apiA = new KengApi(a.k.httpUrl, CLUSTER_ADMIN);
    await apiA.ensureArea({ code: 'xa', name: 'Xã Keng', level: 'commune', parent: 'p1' });
    const creds = await registerSpeakers(apiA, simDeviceIds('kill-loa-', N), 'xa', { concurrency: 8 });
    sim = await runSpeakers({ url: `mqtt://127.0.0.1:${hp.mqttPort}`, credentials: creds, speed: SPEED, telemetryIntervalMs: 600_000, connectConcurrency: 50 });
    await waitSpeakersOnline(apiA, N, 90_000);
    const perNode = await cluster.connections();
    expect(perNode['node-b']).toBeGreaterThan(N / 4); // HAProxy (leastconn) spread them

    const media = await uploadTone({ httpUrl: a.k.httpUrl, adminToken: CLUSTER_ADMIN } as Parameters<typeof uploadTone>[0], { seconds: 20, frequency: 440, name: 'ban-tin.mp3' });
    const plays = new Map<string, number>();
    let killedAt = 0;
    let killing: Promise<unknown> | undefined;
    for (const s of sim.speakers) {
      s.on('command', (c: SpeakerCommand) => {
        if (c.method !== 'broadcast.play') return;
        plays.set(s.id, (plays.get(s.id) ?? 0) + 1);
        if (plays.size >= N / 3 && !killing) {
          killedAt = Date.now();
          b.k.proc.kill('SIGKILL');
          killing = b.k.exited;
        }
      });
    }
    const post = await apiA.request<{ id: string }>('POST', '/api/v1/broadcasts', { target: { areas: ['xa'] }, content: { mediaId: media.id }, volume: 60 });
    expect(post.status, JSON.stringify(post.body)).toBe(201);
    const id = post.body.id;
    await waitUntil(async () => killing !== undefined, 60_000, 50);
    await killing;
    expect(alive(b.k)).toBe(false);

    const counts = await waitBroadcast(apiA, id, (c) => (c.completed ?? 0) >= N, 60_000).catch(async (err: Error) => {
      const r = await apiA.request('GET', `/api/v1/broadcasts/${encodeURIComponent(id)}`);
      const stuck = ((r.body as { targets?: Array<{ deviceId: string; state: string }> }).targets ?? []).filter((t) => t.state !== 'completed').map((t) => t.deviceId);
      const rows = (await pg.query('SELECT id, device_id, state, owner_node, owner_inc, handed FROM rpc_requests WHERE device_id = ANY($1) ORDER BY device_id LIMIT 5', [stuck], 'cluster_broadcast_kill')).rows;
      const sessions = (await pg.query('SELECT * FROM device_sessions WHERE device_id = ANY($1) LIMIT 5', [stuck], 'cluster_broadcast_kill')).rows;
      const warn = a.k.output().split('\n').filter((l) => /"level":(50|60)/.test(l) || (stuck[0] !== undefined && l.includes(stuck[0]))).slice(0, 20).join('\n');
      const dev = sim!.speakers.find((x) => x.id === stuck[0]);
      const seen = dev ? JSON.stringify({ received: dev.received, events: dev.events }) : '';
      throw new Error(`${err.message}: ${JSON.stringify((r.body as { counts?: unknown }).counts)}; plays ${plays.size}; `
        + `stuck ${JSON.stringify(stuck.slice(0, 5))}; speaker ${seen}; rpc ${JSON.stringify(rows)}; sessions ${JSON.stringify(sessions)}; node A: ${warn}`);
    });
    if (counts.completed !== N) {
      const log = await broadcastLog(apiA, id);
      const bad = log.filter((l) => !['pending', 'sent', 'accepted', 'playing', 'completed'].includes(l.state)).slice(0, 5);
      throw new Error(`counts ${JSON.stringify(counts)}; e.g. ${JSON.stringify(bad)}`);
    }
    const doneAt = Date.now();

    // Server side: each target's states logged once each, in order.
    const log = await broadcastLog(apiA, id);
    const byDevice = new Map<string, string[]>();
    for (const l of log) byDevice.set(l.deviceId, [...(byDevice.get(l.deviceId) ?? []), l.state]);
    expect(byDevice.size).toBe(N);
    const odd = [...byDevice].filter(([, st]) => st.join(',') !== 'pending,sent,accepted,playing,completed');
    // Seen once in CI (a slow run): four targets logged without `playing`. Too rare to catch here, so a failure
    // carries what both nodes logged about those speakers and what the speakers sent and got.
    const why = odd.length === 0 ? '' : (() => {
      const ids = new Set(odd.slice(0, 5).map(([d]) => d));
      const about = (out: string): string => out.split('\n').filter((l) => [...ids].some((d) => l.includes(d))).slice(0, 40).join('\n');
      const seen = sim.speakers.filter((x) => ids.has(x.id)).map((x) => JSON.stringify({ id: x.id, events: x.events, received: x.received }).slice(0, 2000));
      return `log ${JSON.stringify(log.filter((l) => ids.has(l.deviceId)))}\nnode A:\n${about(a.k.output())}\nnode B:\n${about(b.k.output())}\nspeakers:\n${seen.join('\n')}`;
    })();
    expect(odd.slice(0, 5), why).toEqual([]);
    // Speaker side: one playback each (started, completed), whatever commands came twice.
    const playedTwice = sim.speakers.filter((s) => s.events.filter((e) => e.broadcastId === id && e.state === 'started').length !== 1).map((s) => s.id);
    expect(playedTwice.slice(0, 5)).toEqual([]);
    expect(plays.size).toBe(N);
    const again = [...plays.values()].filter((n) => n > 1).length;
    const moved = (await cluster.connections())['node-a'];
    process.stdout.write(`broadcast across a node kill: ${perNode['node-b']} speakers on node B at the start, killed ${killedAt ? 'after ' + (N / 3) + ' play commands' : 'never'}; `
      + `${moved} speakers on node A after; all ${N} completed ${doneAt - killedAt} ms after the kill; ${again} play commands received twice (recognised, played once)\n`);
  }, 400_000);
});

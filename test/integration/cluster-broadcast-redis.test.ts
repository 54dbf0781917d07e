/**
 * Cluster mode: Redis restarted during a 300-speaker broadcast. One Keng
 * process (dist/src/main.js) with KENG_DATABASE_URL on a throw-away PostgreSQL
 * and KENG_REDIS_URL on a throw-away redis-server, 300 reference speakers
 * (src/sim/speaker, this process) in one commune. `POST /api/v1/broadcasts`
 * to the commune; redis-server is SIGKILLed as the request leaves (it is down
 * while the 300 play commands go out) and started again (empty, same port)
 * when the first speaker has its command, while the speakers answer, download
 * and play.
 *
 * Redis is only the live bus: the commands, their answers and the speakers'
 * readings (committed in PostgreSQL) must not notice. Every target reaches
 * accepted, playing and completed; each speaker receives the play command
 * once and plays it once; the node saw the outage and reconnected; no errors.
 *
 * Needs a build (npx tsc -p tsconfig.json).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { broadcastLog, uploadTone, waitBroadcast, waitSpeakersOnline, waitUntil } from '../../bench/lib/speaker-bench.js';
import { KengApi } from '../../src/sim/api-client.js';
import { simDeviceIds } from '../../src/sim/credentials.js';
import { registerSpeakers } from '../../src/sim/speaker-fleet.js';
import { runSpeakers, type SpeakerSim } from '../../src/sim/speaker/index.js';
import { parseMetrics } from '../helpers/mqtt.js';
import { spawnKeng, type KengProcess } from '../helpers/process.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';

const N = 300;
/**
 * The tone lasts 20 s and the speakers play 5× faster: playback takes about 4 s, long enough for Redis
 * (restarted when the first command arrives, 0.1–1 s here) to be back while they play.
 */
const MEDIA_SEC = 20;
const SPEED = 5;
const ADMIN = 'cluster-broadcast-admin-token-0123456789';

let pg: PostgresServer | undefined;
let redis: RedisServer | undefined;
let keng: KengProcess | undefined;
let sim: SpeakerSim | undefined;
let dataDir = '';

beforeAll(async () => {
  pg = await startPostgres();
  redis = await startRedis();
  dataDir = mkdtempSync(path.join(tmpdir(), 'keng-cluster-broadcast-'));
  keng = await spawnKeng({
    KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: ADMIN,
    KENG_DATABASE_URL: pg.url, KENG_REDIS_URL: redis.url, KENG_NODE_ID: 'node-1',
    // 300 speakers answer and report within the same second (as in bench:broadcast).
    KENG_MQTT_RATE_LIMIT_PER_SEC: '100000', KENG_MQTT_RATE_LIMIT_BURST: '100000',
  }, { timeoutMs: 90_000 });
}, 150_000);

afterAll(async () => {
  await sim?.stop();
  if (keng && keng.proc.exitCode === null && keng.proc.signalCode === null) { keng.proc.kill('SIGTERM'); await keng.exited; }
  await redis?.destroy();
  await pg?.destroy();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
}, 90_000);

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${keng!.httpUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
  let sum = 0;
  for (const [key, v] of parseMetrics(text)) if (key === name || key.startsWith(name + '{')) sum += v;
  return sum;
}

/** Keng's log lines at level error or fatal (pino: 50, 60). */
function errorLines(): string[] {
  return keng!.output().split('\n').filter((l) => {
    try { return Number((JSON.parse(l) as { level?: unknown }).level) >= 50; } catch { return /\berror\b/i.test(l); }
  });
}

describe('cluster mode: Redis restarted during a 300-speaker broadcast', () => {
  it('every speaker reaches accepted, plays once and completes; the node rides out the outage', async () => {
    const k = keng!;
    const api = new KengApi(k.httpUrl, ADMIN);
    await api.ensureArea({ code: 'tinh', name: 'Tỉnh', level: 'province' });
    await api.ensureArea({ code: 'xa', name: 'Xã Keng', level: 'commune', parent: 'tinh' });
    const creds = await registerSpeakers(api, simDeviceIds('cl-loa-', N), 'xa', { concurrency: 8 });
    const simErrors: string[] = [];
    sim = await runSpeakers({ url: `mqtt://127.0.0.1:${k.mqttPort}`, credentials: creds, speed: SPEED, telemetryIntervalMs: 600_000, connectConcurrency: 50,
      onError: (id, err) => simErrors.push(`${id}: ${err.message}`) });
    await waitSpeakersOnline(api, N, 90_000);
    const media = await uploadTone({ httpUrl: k.httpUrl, adminToken: ADMIN } as Parameters<typeof uploadTone>[0], { seconds: MEDIA_SEC, frequency: 440, name: 'thong-bao.mp3' });
    expect(await metric('keng_cluster_bus_up')).toBe(1);
    const outagesBefore = await metric('keng_cluster_bus_outages_total');

    // Redis is SIGKILLed (a crash; the stream is lost, no persistence) just as the POST leaves, so it is
    // down while the server sends the 300 play commands (stop() sends the signal synchronously); it is
    // started again when the first speaker has its command, while the others answer, download and play.
    const playAt: number[] = [];
    let restart: Promise<void> | undefined;
    let backAt = 0;
    const killedAt = Date.now();
    const killed = redis!.stop();
    for (const s of sim.speakers) {
      s.on('command', (c: { method: string; at: number }) => {
        if (c.method !== 'broadcast.play') return;
        playAt.push(c.at);
        restart ??= (async () => { await killed; await redis!.restart(); backAt = Date.now(); })();
      });
    }
    const post = await api.request<{ id: string }>('POST', '/api/v1/broadcasts', { target: { areas: ['xa'] }, content: { mediaId: media.id }, volume: 60 });
    expect(post.status, JSON.stringify(post.body)).toBe(201);
    const id = post.body.id;

    const counts = await waitBroadcast(api, id, (c) => (c.completed ?? 0) >= N, 150_000).catch(async (err: Error) => {
      const r = await api.request('GET', `/api/v1/broadcasts/${encodeURIComponent(id)}`);
      throw new Error(`${err.message}: ${JSON.stringify(r.body).slice(0, 2000)}`);
    });
    expect(counts).toMatchObject({ completed: N });
    expect(restart).toBeDefined();
    await restart;

    // Server side: every target went pending → sent → accepted → playing → completed, each once.
    const log = await broadcastLog(api, id);
    const byDevice = new Map<string, string[]>();
    for (const l of log) byDevice.set(l.deviceId, [...(byDevice.get(l.deviceId) ?? []), l.state]);
    expect(byDevice.size).toBe(N);
    const odd = [...byDevice].filter(([, states]) => states.join(',') !== 'pending,sent,accepted,playing,completed');
    expect(odd.slice(0, 5)).toEqual([]);

    // Speaker side: one play command each (no redelivery, no retry), one playback started and completed.
    const plays = sim.speakers.map((s) => s.received.filter((r) => r.method === 'broadcast.play').length);
    expect(plays.filter((n) => n !== 1)).toEqual([]);
    expect(playAt).toHaveLength(N);
    for (const s of sim.speakers) {
      const mine = s.events.filter((e) => e.broadcastId === id).map((e) => e.state);
      expect(mine, s.id).toEqual(['started', 'completed']);
    }
    expect(simErrors).toEqual([]);

    // The node noticed the outage and is back on the bus; it stayed ready throughout (Redis is not on its critical path).
    await waitUntil(async () => (await metric('keng_cluster_bus_up')) === 1, 30_000, 200);
    expect(await metric('keng_cluster_bus_outages_total')).toBeGreaterThan(outagesBefore);
    const ready = await fetch(`${k.httpUrl}/readyz`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(ready.status).toBe(200);
    expect(k.proc.exitCode).toBeNull();
    expect(errorLines()).toEqual([]);
    // The speakers' playback readings reached PostgreSQL (ingest never waited for Redis).
    const stored = (await pg!.query<{ n: number }>("SELECT COUNT(DISTINCT device)::int AS n FROM telemetry_readings WHERE field = 'playing'")).rows[0]!.n;
    expect(stored).toBe(N);

    // The outage covered the commands going out (every "sent" after the kill, same machine, same clock), and
    // Redis came back while the speakers were still playing (their last "completed" after it).
    const at = (state: string): number[] => log.filter((l) => l.state === state).map((l) => Date.parse(l.at));
    expect(Math.min(...at('sent'))).toBeGreaterThanOrEqual(killedAt);
    expect(Math.max(...at('completed')), `Redis back at ${backAt}`).toBeGreaterThan(backAt);
    const down = (t: number): boolean => t < backAt;
    process.stdout.write(`300-speaker broadcast with a Redis restart: Redis back ${backAt - killedAt} ms after the kill, `
      + `by then ${at('sent').filter(down).length} sent, ${at('accepted').filter(down).length} accepted, ${at('playing').filter(down).length} playing; `
      + `all accepted ${Math.max(...at('accepted')) - killedAt} ms, all completed ${Math.max(...at('completed')) - killedAt} ms after the kill\n`);
  }, 300_000);
});

/**
 * `npm run bench:broadcast` (docs/benchmarks.md): one broadcast to 2,000
 * simulated speakers, and the scheduler's start jitter.
 *
 * 1. Starts Keng as a child process (node dist/src/main.js, temp data dir,
 *    free ports, raised MQTT rate limit), registers N speakers through the
 *    API and runs them with the reference speaker simulator (this process).
 * 2. Uploads a short MP3 (made with ffmpeg), `POST /api/v1/broadcasts` to all
 *    of them, waits (light polling of GET /broadcasts/{id}) until every
 *    speaker is playing, then reads the broadcast log once: the server's own
 *    transition times give "start → all accepted" and "start → all playing"
 *    (start = just before the POST was sent).
 * 3. Jitter: K one-off schedules 200 ms apart (each on its own speaker, so
 *    they do not overlap), then GET /api/v1/scheduler → jitter p50/p99 of
 *    the real scheduler in the real server (also on /metrics as
 *    keng_scheduler_jitter_seconds).
 * Targets: all accepted within 2 s; jitter p99 under 250 ms.
 *
 * Options: --speakers 2000 --schedules 150 --spacing-ms 200 --media-sec 15 --sim-nice 10 --cluster (one cluster-mode node)
 */
import { installSignalHandlers, onCleanup, runCleanups } from '../tools/cleanup.js';
import { KengApi } from '../src/sim/api-client.js';
import { simDeviceIds } from '../src/sim/credentials.js';
import { runSpeakers } from '../src/sim/speaker/index.js';
import { registerSpeakers } from '../src/sim/speaker-fleet.js';
import {
  broadcastLog, log, lowerFleetPriority, monoMicros, niceArg, numArg, sleep, startSpeakerKeng, uploadTone, waitBroadcast, waitSpeakersOnline,
} from './lib/speaker-bench.js';

async function main(): Promise<void> {
  installSignalHandlers();
  const N = numArg('speakers', 2000);
  const K = numArg('schedules', 150);
  const spacing = numArg('spacing-ms', 200);
  const mediaSec = numArg('media-sec', 15);

  const keng = await startSpeakerKeng();
  lowerFleetPriority(niceArg('sim-nice', 10));
  const api = new KengApi(keng.httpUrl, keng.adminToken);
  await api.ensureArea({ code: 'bench', name: 'Tỉnh đo tải', level: 'province' });

  let t = Date.now();
  const creds = await registerSpeakers(api, simDeviceIds('bench-loa-', N), 'bench', { concurrency: 32 });
  log(`registered ${N} speakers in ${((Date.now() - t) / 1000).toFixed(1)} s`);

  t = Date.now();
  const sim = await runSpeakers({ url: keng.mqttUrl, credentials: creds, speed: 1, telemetryIntervalMs: 600_000, connectConcurrency: 100 });
  onCleanup('speakers', () => sim.stop());
  log(`${N} speakers connected in ${((Date.now() - t) / 1000).toFixed(1)} s`);

  // A short, small MP3 (2,000 speakers download it).
  const media = await uploadTone(keng, { seconds: mediaSec, frequency: 550, name: 'ban-tin.mp3' });
  log(`media ${media.id}: ${media.size} bytes, ${mediaSec} s`);
  await waitSpeakersOnline(api, N);

  // ---- one broadcast to all speakers
  const t0 = Date.now();
  const mono0 = monoMicros();
  const post = await api.request<{ id: string }>('POST', '/api/v1/broadcasts', { target: { areas: ['bench'] }, content: { mediaId: media.id }, volume: 60 });
  const postMs = Date.now() - t0;
  if (post.status !== 201) throw new Error(`POST /api/v1/broadcasts: HTTP ${post.status} ${JSON.stringify(post.body).slice(0, 300)}`);
  const id = post.body.id;
  await waitBroadcast(api, id, (c) => (c.playing ?? 0) + (c.completed ?? 0) >= N);
  const lines = await broadcastLog(api, id);
  const lastAt = (state: string): { n: number; ms: number } => {
    const ts = lines.filter((l) => l.state === state).map((l) => Date.parse(l.at));
    return { n: ts.length, ms: ts.length ? Math.max(...ts) - t0 : NaN };
  };
  const final = (await api.request<{ counts: Record<string, number>; targets: Array<{ state: string; detail?: string }> }>('GET', `/api/v1/broadcasts/${encodeURIComponent(id)}`)).body;
  const details = new Map<string, number>();
  for (const x of final.targets) if (x.detail && x.state !== 'playing' && x.state !== 'completed') details.set(`${x.state}: ${x.detail}`, (details.get(`${x.state}: ${x.detail}`) ?? 0) + 1);
  log(`states: ${JSON.stringify(final.counts)}${details.size ? `; ${[...details].slice(0, 3).map(([k, n]) => `${n}× ${k}`).join('; ')}` : ''}`);
  const accepted = lastAt('accepted');
  const playing = lastAt('playing');
  log(`profile window (monotonic µs): start ${mono0}, all accepted ${mono0 + BigInt(Math.round((accepted.ms || 0) * 1000))}, all playing ${mono0 + BigInt(Math.round((playing.ms || 0) * 1000))}`);
  log(`broadcast to ${N}: POST answered in ${postMs} ms; all accepted after ${accepted.ms} ms (${accepted.n}/${N}); all playing after ${playing.ms} ms (${playing.n}/${N})`);

  // ---- scheduler start jitter: K one-offs `spacing` ms apart, each on its own speaker
  const first = Date.now() + 5000 + K * 30;
  for (let i = 0; i < K; i++) {
    const r = await api.request('POST', '/api/v1/schedules', {
      name: `Jitter ${i}`, target: { devices: [creds[i % N]!.id] }, content: { mediaId: media.id }, at: first + i * spacing,
    });
    if (r.status !== 201) throw new Error(`POST /api/v1/schedules: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
  }
  const wait = first + K * spacing + 1500 - Date.now();
  log(`${K} schedules ${spacing} ms apart created; waiting ${(wait / 1000).toFixed(1)} s for them to fire`);
  await sleep(Math.max(0, wait));
  const st = (await api.request<{ jitterMs: { count: number; p50: number; p99: number; max: number; mean: number } }>('GET', '/api/v1/scheduler')).body.jitterMs;
  log(`scheduler start jitter over ${st.count} occurrences: p50 ${st.p50} ms, p99 ${st.p99} ms, max ${st.max} ms`);

  const result = {
    speakers: N, postMs, acceptedMs: accepted.ms, playingMs: playing.ms, accepted: accepted.n, playing: playing.n,
    jitter: { count: st.count, p50Ms: st.p50, p99Ms: st.p99, maxMs: st.max },
    targets: { acceptedWithin2s: accepted.n === N && accepted.ms <= 2000, jitterP99Under250ms: st.count > 0 && st.p99 < 250 },
  };
  log(`BENCH_RESULT ${JSON.stringify(result)}`);
}

main().then(
  async () => { await runCleanups(); process.exit(0); },
  async (err: unknown) => { process.stderr.write(`bench:broadcast failed: ${(err as Error).stack ?? String(err)}\n`); await runCleanups(); process.exit(1); },
);

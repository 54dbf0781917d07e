/**
 * `npm run bench:alert` (docs/benchmarks.md): how fast an approved emergency alert reaches 2,000
 * loudspeakers that verify signed commands, 500 of them busy with a normal broadcast.
 *
 * 1. Starts Keng as a child process, registers N speakers in the villages of one commune and runs
 *    them with the reference simulator (this process, lower CPU priority) requiring signed
 *    commands, with the installation's keys from GET /api/v1/command-keys. Two operators of the
 *    commune are created with the admin token and log in: an alert needs two people.
 * 2. A normal broadcast of a long tone (60 s at play speed 1) to P of them, waited for until those
 *    P are `playing`.
 * 3. Operator 1 raises an Actual alert over the commune (its text-to-speech is rendered then, not
 *    timed). Keng asks the speakers to fetch the announcement ahead (`media.prefetch`, device
 *    protocol §12.7): timed from the raise until every speaker has it cached (each speaker downloads
 *    it on its own connection, as before, only earlier). Then, after a short settle, operator 2
 *    approves it: t0 = just before that request is sent. With --no-prefetch the speakers imitate
 *    firmware without media.prefetch: they download the announcement after the approval; with
 *    --alternate, odd rounds with media.prefetch and even rounds without (the speakers publish the
 *    changed capabilities before the round), to compare both under the same load.
 * 4. Per speaker, from t0: (a) it received the signed broadcast.play and verified it (the
 *    simulator's 'command' event), (b) it reported `started` (the simulator's send time of the
 *    playback event); and the server's own times in the alert broadcast's log (`accepted`,
 *    `playing`). p50 / p99 / max of each, the approve request's latency, the CPU time Keng and the
 *    fleet used meanwhile; checks: every target playing, the P interrupted ones `preempted`, no
 *    command refused by a speaker.
 * With --rounds R, steps 2-4 again (a new normal broadcast, a new alert with another text, so
 * every speaker downloads a new announcement) once the previous alert has played to its end.
 * Target: every speaker has the command and has reported `started` within 1 s.
 * Exit 1 when a speaker misses the alert (or a check fails); a missed target is only reported.
 *
 * Options: --speakers 2000 --playing 500 --villages 4 --normal-sec 60 --settle-ms 5000 --rounds 1 --sim-nice 10 --no-prefetch --alternate
 * --cluster (Keng as one cluster-mode node on a throw-away PostgreSQL and Redis)
 */
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { installSignalHandlers, onCleanup, runCleanups } from '../tools/cleanup.js';
import { KengApi } from '../src/sim/api-client.js';
import { simDeviceIds } from '../src/sim/credentials.js';
import { runSpeakers, type SpeakerCommand, type SpeakerCredential, type SpeakerEvent, type SpeakerSim } from '../src/sim/speaker/index.js';
import { registerSpeakers } from '../src/sim/speaker-fleet.js';
import type { KengProcess } from './lib/keng-server.js';
import { readCpuMs } from './lib/proc.js';
import { fmt, table, type Row } from './lib/report.js';
import {
  broadcastLog, log, lowerFleetPriority, monoMicros, niceArg, numArg, sleep, spread, startSpeakerKeng, uploadTone, waitBroadcast,
  waitSpeakersOnline, waitUntil, type LogLine, type Spread,
} from './lib/speaker-bench.js';

const PROVINCE = { code: 'bench-tinh', name: 'Tỉnh đo tải', level: 'province' as const };
const COMMUNE = { code: 'bench-xa', name: 'Xã đo tải', level: 'commune' as const, parent: PROVINCE.code };
const TARGET_MS = 1000;
/** Where the alert of each round is (so each round's announcement is a new file). */
const STREAMS = ['Nậm Mu', 'Nậm Na', 'Nậm Pô', 'Nậm Sì', 'Nậm Ma', 'Nậm Be', 'Nậm Lay', 'Nậm Khao'];

interface Bench {
  keng: KengProcess;
  admin: KengApi;
  raiser: KengApi;
  approver: KengApi;
  sim: SpeakerSim;
  /** The speakers a normal broadcast plays on before the alert. */
  busy: string[];
  toneId: string;
  N: number;
  settleMs: number;
  /** The speakers support media.prefetch (§12.7). */
  prefetch: boolean;
}

/** What the fleet received and reported since `since` (set just before the approval). */
class FleetLog {
  since = Number.POSITIVE_INFINITY;
  readonly plays: Array<SpeakerCommand & { deviceId: string; broadcastId: string }> = [];
  readonly playback: Array<SpeakerEvent & { deviceId: string }> = [];
  /** Speaker → when it had the announcement cached (media.prefetch answered), since `prefetchSince`. */
  readonly prefetched = new Map<string, number>();
  prefetchSince = Number.POSITIVE_INFINITY;
  /** Speakers that received media.prefetch since `prefetchSince`. */
  readonly prefetchAsked = new Set<string>();

  constructor(sim: SpeakerSim) {
    for (const s of sim.speakers) {
      s.on('command', (c: SpeakerCommand) => {
        if (c.method === 'media.prefetch' && c.at >= this.prefetchSince) this.prefetchAsked.add(s.id);
        if (c.at < this.since || c.method !== 'broadcast.play') return;
        const b = (c.params as { broadcastId?: unknown } | undefined)?.broadcastId;
        this.plays.push({ ...c, deviceId: s.id, broadcastId: typeof b === 'string' ? b : '' });
      });
      s.on('playback', (e: SpeakerEvent) => { if (e.at >= this.since) this.playback.push({ ...e, deviceId: s.id }); });
      s.on('prefetched', (e: { at: number }) => { if (e.at >= this.prefetchSince && !this.prefetched.has(s.id)) this.prefetched.set(s.id, e.at); });
    }
  }

  reset(since: number): void {
    this.since = since;
    this.plays.length = 0;
    this.playback.length = 0;
  }

  resetPrefetch(since: number): void {
    this.prefetchSince = since;
    this.prefetched.clear();
    this.prefetchAsked.clear();
  }
}

async function main(): Promise<void> {
  installSignalHandlers();
  const N = numArg('speakers', 2000);
  const P = Math.min(N, numArg('playing', 500));
  const V = Math.min(N, numArg('villages', 4));
  const normalSec = numArg('normal-sec', 60);
  // 5 s: the raise's aftermath now includes the 2,000 prefetch downloads and their answers, which Keng may still be
  // handling when the last speaker has the file (with 2 s, the approval was answered 0.2-0.4 s later on a loaded
  // machine); a second person reading and approving an alert takes far longer than either.
  const settleMs = numArg('settle-ms', 5000);
  const rounds = numArg('rounds', 1);
  const prefetch = !process.argv.includes('--no-prefetch');
  const alternate = process.argv.includes('--alternate');
  if (!Number.isInteger(rounds) || rounds > STREAMS.length) throw new Error(`--rounds must be an integer 1-${STREAMS.length}`);

  const keng = await startSpeakerKeng();
  lowerFleetPriority(niceArg('sim-nice', 10));
  const admin = new KengApi(keng.httpUrl, keng.adminToken);
  await admin.ensureArea(PROVINCE);
  await admin.ensureArea(COMMUNE);
  const villages = Array.from({ length: V }, (_, i) => ({ code: `bench-ban-${i + 1}`, name: `Bản đo tải ${i + 1}`, level: 'village' as const, parent: COMMUNE.code }));
  for (const v of villages) await admin.ensureArea(v);

  let t = Date.now();
  const ids = simDeviceIds('bench-loa-', N);
  const creds: SpeakerCredential[] = [];
  for (let v = 0; v < V; v++) {
    const mine = ids.slice(Math.floor((v * N) / V), Math.floor(((v + 1) * N) / V));
    creds.push(...await registerSpeakers(admin, mine, villages[v]!.code, { concurrency: 32 }));
  }
  log(`registered ${N} speakers in ${V} villages of ${COMMUNE.code} in ${((Date.now() - t) / 1000).toFixed(1)} s`);

  const [raiser, approver] = await Promise.all([operator(keng.httpUrl, admin, 'can-bo-1'), operator(keng.httpUrl, admin, 'can-bo-2')]);

  const keys = await admin.commandKeys();
  t = Date.now();
  const sim = await runSpeakers({
    url: keng.mqttUrl, credentials: creds, speed: 1, telemetryIntervalMs: 600_000, connectConcurrency: 100,
    commandKeys: keys, requireSignedCommands: true, prefetch,
  });
  onCleanup('speakers', () => sim.stop());
  log(`${N} speakers connected in ${((Date.now() - t) / 1000).toFixed(1)} s; they require commands signed with ${keys.map((k) => k.kid).join(', ')}`);

  const tone = await uploadTone(keng, { seconds: normalSec, frequency: 440, name: 'nhac-nen.mp3' });
  await waitSpeakersOnline(admin, N);
  const b: Bench = {
    keng, admin, raiser, approver, sim, N, settleMs, prefetch, toneId: tone.id,
    busy: Array.from({ length: P }, (_, i) => ids[Math.floor((i * N) / P)]!),
  };
  const fleet = new FleetLog(sim);
  const results: RoundResult[] = [];
  for (let r = 1; r <= rounds; r++) {
    if (alternate) {
      const on = r % 2 === 1;
      if (on !== b.prefetch) {
        for (const s of sim.speakers) s.setPrefetch(on);
        b.prefetch = on;
        await waitCapabilities(admin, N, on);
      }
    }
    const res = await round(b, fleet, r);
    results.push(res);
    if (r < rounds) {
      // The next round starts on a quiet fleet: this alert has played to its end everywhere.
      await waitBroadcast(admin, res.broadcastId, (c) => (c.completed ?? 0) >= N, 120_000).catch(() => log('the alert did not complete everywhere'));
    }
  }

  for (const on of [true, false]) {
    const rs = results.filter((x) => x.prefetch === on);
    if (rs.length < 2) continue;
    const range = (f: (x: RoundResult) => number, digits = 0): string => {
      const v = rs.map(f);
      return `${fmt(Math.min(...v), digits)}–${fmt(Math.max(...v), digits)}`;
    };
    log('');
    log(table(`bench:alert, ${rs.length} rounds ${on ? 'with' : 'without'} media.prefetch (min–max)`, [
      ...(on ? [['announcement cached by every speaker, from the raise', `${range((x) => x.prefetchMs ?? NaN)} ms`] as Row] : []),
      ['load average before', range((x) => x.load1, 1)],
      ['approve request answered', `${range((x) => x.approveMs)} ms`],
      ['signed command verified p50 / max', `${range((x) => x.commandMs.p50)} / ${range((x) => x.commandMs.max)} ms`],
      ['`started` reported p50 / max', `${range((x) => x.startedMs.p50)} / ${range((x) => x.startedMs.max)} ms`],
      ['CPU until all started: Keng / fleet', `${range((x) => x.cpuMs.keng)} / ${range((x) => x.cpuMs.fleet)} ms`],
      ['rounds with every speaker within 1 s', `${rs.filter((x) => x.targets.allWithin1s).length}/${rs.length}`],
    ]));
  }
  log(`BENCH_RESULT ${JSON.stringify({ speakers: N, busy: P, rounds: results.map(({ broadcastId: _, ...x }) => x) })}`);
  if (results.some((x) => Object.values(x.checks).includes(false))) process.exitCode = 1;
}

interface RoundResult {
  broadcastId: string;
  prefetch: boolean; approveMs: number; raiseMs: number; prefetchMs: number | null; allStartedMs: number; load1: number; cpuMs: { keng: number; fleet: number };
  commandMs: Spread; startedMs: Spread; serverAcceptedMs: Spread; serverPlayingMs: Spread;
  refusals: Record<string, number>; failed: number; preempted: number;
  checks: Record<string, boolean>; targets: { allWithin1s: boolean };
}

/** Steps 2-4: a normal broadcast on the busy speakers, then an alert raised, approved and timed. */
async function round(b: Bench, fleet: FleetLog, r: number): Promise<RoundResult> {
  const { admin, N, busy } = b;
  const P = busy.length;
  const normal = await admin.request<{ id: string }>('POST', '/api/v1/broadcasts', { target: { devices: busy }, content: { mediaId: b.toneId }, volume: 50 });
  if (normal.status !== 201) throw new Error(`POST /api/v1/broadcasts: HTTP ${normal.status} ${JSON.stringify(normal.body).slice(0, 300)}`);
  const normalId = normal.body.id;
  const nc = await waitBroadcast(admin, normalId, (c) => (c.playing ?? 0) >= P, 60_000);
  if ((nc.playing ?? 0) < P) throw new Error(`the normal broadcast did not reach ${P} playing speakers: ${JSON.stringify(nc)}`);
  log(`round ${r}: normal broadcast ${normalId} playing on ${P} speakers`);

  // ---- operator 1 raises, operator 2 approves
  const t = Date.now();
  fleet.resetPrefetch(t);
  const raised = await b.raiser.request<{ id: string; state: string }>('POST', '/api/v1/alerts', {
    status: 'Actual', msgType: 'Alert', event: 'Lũ quét', severity: 'Extreme', urgency: 'Immediate', certainty: 'Likely',
    // Another stream each round: another announcement of about the same length, which every speaker downloads again.
    headline: `Cảnh báo lũ quét trên suối ${STREAMS[r - 1]!}`,
    description: 'Mưa lớn, nước suối dâng nhanh.', instruction: 'Di chuyển lên chỗ cao ngay.',
    areas: [COMMUNE.code], expires: new Date(Date.now() + 3600_000).toISOString(), repeat: 1,
  });
  if (raised.status !== 201 || raised.body.state !== 'pending_approval') throw new Error(`POST /api/v1/alerts: HTTP ${raised.status} ${JSON.stringify(raised.body).slice(0, 300)}`);
  const raiseMs = Date.now() - t;
  log(`round ${r}: alert ${raised.body.id} raised by can-bo-1 in ${raiseMs} ms (announcement rendered), pending approval`);
  // While it awaits approval, the speakers fetch the announcement (§12.7): how long until every one has it.
  let prefetchMs: number | null = null;
  if (b.prefetch) {
    await waitUntil(async () => fleet.prefetched.size >= N, 60_000, 20).catch(() => log(`only ${fleet.prefetched.size} of ${N} speakers cached the announcement within 60 s`));
    if (fleet.prefetched.size >= N) prefetchMs = Math.max(...fleet.prefetched.values()) - t;
    log(`round ${r}: ${fleet.prefetchAsked.size} speakers asked to prefetch, ${fleet.prefetched.size} cached the announcement, the last ${prefetchMs ?? 'n/a'} ms after the raise was sent`);
  }
  // Let the raise's aftermath (audit, live feed, the TTS children's exit) pass, so only the approval is timed.
  await sleep(b.settleMs);

  const refusedBefore = b.sim.speakers.map((s) => s.refused.length);
  const load = loadavg()[0]!;
  const cpu0 = { keng: readCpuMs(b.keng.pid), fleet: readCpuMs(process.pid) };
  const t0 = Date.now();
  fleet.reset(t0);
  const mono0 = monoMicros();
  const approved = await b.approver.request<{ state: string; broadcastId?: string }>('POST', `/api/v1/alerts/${encodeURIComponent(raised.body.id)}/approve`);
  const approveMs = Date.now() - t0;
  if (approved.status !== 200 || !approved.body.broadcastId) throw new Error(`approve: HTTP ${approved.status} ${JSON.stringify(approved.body).slice(0, 300)}`);
  const alertBc = approved.body.broadcastId;

  // Until every speaker has started the alert (or failed it), as the simulator saw it.
  const settled = (): boolean => {
    const done = new Set(fleet.playback.filter((e) => e.broadcastId === alertBc && (e.state === 'started' || e.state === 'failed')).map((e) => e.deviceId));
    return done.size >= N;
  };
  await waitUntil(async () => settled(), 60_000, 20).catch(() => log('not every speaker started the alert within 60 s'));
  const simDoneMs = Date.now() - t0;
  const monoEnd = monoMicros();
  // Who had the CPU meanwhile: the controller, or the fleet that stands in for 2,000 speakers' own CPUs.
  const cpu = { keng: (readCpuMs(b.keng.pid) ?? NaN) - (cpu0.keng ?? NaN), fleet: (readCpuMs(process.pid) ?? NaN) - (cpu0.fleet ?? NaN) };
  // Then the server's view: the alert playing everywhere, the busy ones preempted.
  const ac = await waitBroadcast(admin, alertBc, (c) => (c.playing ?? 0) + (c.completed ?? 0) >= N, 30_000).catch(() => ({} as Record<string, number>));
  const pc = await waitBroadcast(admin, normalId, (c) => (c.preempted ?? 0) >= P, 30_000).catch(() => ({} as Record<string, number>));
  const lines = await broadcastLog(admin, alertBc);

  // ---- figures
  const firstAt = <T extends { deviceId: string; at: number }>(xs: readonly T[]): Map<string, number> => {
    const m = new Map<string, number>();
    for (const x of xs) if (!m.has(x.deviceId) || m.get(x.deviceId)! > x.at) m.set(x.deviceId, x.at);
    return m;
  };
  const alertPlays = fleet.plays.filter((c) => c.broadcastId === alertBc);
  const cmd = firstAt(alertPlays);
  const started = firstAt(fleet.playback.filter((e) => e.broadcastId === alertBc && e.state === 'started'));
  const serverAt = (state: string): Map<string, number> => firstAt(lines.filter((l: LogLine) => l.state === state).map((l) => ({ deviceId: l.deviceId, at: Date.parse(l.at) })));
  const since = (m: Map<string, number>): Spread => spread([...m.values()].map((v) => v - t0));
  const f = { command: since(cmd), started: since(started), serverAccepted: since(serverAt('accepted')), serverPlaying: since(serverAt('playing')) };

  const refusals = new Map<string, number>();
  b.sim.speakers.forEach((s, i) => {
    for (const x of s.refused.slice(refusedBefore[i])) refusals.set(x.detail, (refusals.get(x.detail) ?? 0) + 1);
  });
  const failed = fleet.playback.filter((e) => e.broadcastId === alertBc && e.state === 'failed');
  const preemptedSim = new Set(fleet.playback.filter((e) => e.broadcastId === normalId && e.state === 'preempted').map((e) => e.deviceId)).size;
  const unsigned = alertPlays.filter((c) => !c.signed).length;
  const alertMedia = await alertMediaInfo(admin, alertBc);

  const checks = {
    everySpeakerGotTheSignedCommand: cmd.size === N && unsigned === 0,
    everySpeakerStarted: started.size === N,
    serverSeesAllPlaying: (ac.playing ?? 0) + (ac.completed ?? 0) === N,
    normalPreempted: (pc.preempted ?? 0) === P && preemptedSim === P,
    noRefusals: refusals.size === 0,
  };
  const within = f.command.max <= TARGET_MS && f.started.max <= TARGET_MS && checks.everySpeakerStarted;

  const ms = (s: Spread): string => `${fmt(s.p50)} / ${fmt(s.p99)} / ${fmt(s.max)} ms (first ${fmt(s.min)}; ${s.n}/${N})`;
  const rows: Row[] = [
    ['speakers (busy with a normal broadcast)', `${N} (${P})`],
    ['alert announcement', alertMedia],
    ['raise (TTS), not timed', `${fmt(raiseMs)} ms`],
    ['announcement cached by every speaker (media.prefetch), from the raise', prefetchMs === null ? (b.prefetch ? 'NOT all' : 'off (--no-prefetch)') : `${fmt(prefetchMs)} ms`],
    ['approve request answered', `${fmt(approveMs)} ms`],
    ['signed command verified, p50/p99/max', ms(f.command)],
    ['`started` reported, p50/p99/max', ms(f.started)],
    ['server log `accepted`, p50/p99/max', ms(f.serverAccepted)],
    ['server log `playing`, p50/p99/max', ms(f.serverPlaying)],
    ['CPU until all started: Keng / fleet', `${fmt(cpu.keng)} / ${fmt(cpu.fleet)} ms in ${fmt(simDoneMs)} ms (load average ${load.toFixed(1)} before)`],
    ['alert broadcast targets', JSON.stringify(ac)],
    ['normal broadcast targets', `${JSON.stringify(pc)}; preempted reported by ${preemptedSim} speakers`],
    ['commands refused by speakers', refusals.size ? [...refusals].map(([k, n]) => `${n}× ${k}`).join(', ') : '0'],
    ['alert playbacks failed', failed.length ? `${failed.length} (${failed.slice(0, 3).map((e) => e.detail).join('; ')})` : '0'],
    [`every speaker within ${TARGET_MS} ms`, within ? 'met' : 'NOT met'],
  ];
  log('');
  log(table(`bench:alert round ${r}, from just before the approve request (${new Date(t0).toISOString()})`, rows));
  log(`profile window (monotonic µs): approve ${mono0}, all started ${monoEnd} (${simDoneMs} ms)`);
  const failedChecks = Object.entries(checks).filter(([, ok]) => !ok).map(([k]) => k);
  if (failedChecks.length) log(`FAILED: ${failedChecks.join(', ')}`);
  return {
    broadcastId: alertBc, prefetch: b.prefetch, approveMs, raiseMs, prefetchMs, allStartedMs: simDoneMs, load1: Math.round(load * 10) / 10, cpuMs: cpu,
    commandMs: f.command, startedMs: f.started, serverAcceptedMs: f.serverAccepted, serverPlayingMs: f.serverPlaying,
    refusals: Object.fromEntries(refusals), failed: failed.length, preempted: pc.preempted ?? 0,
    checks, targets: { allWithin1s: within },
  };
}

/** Until Keng has the speakers' new capabilities (with or without media.prefetch): it asks only those that list it. */
async function waitCapabilities(api: KengApi, n: number, prefetch: boolean): Promise<void> {
  const t = Date.now();
  let count = 0;
  await waitUntil(async () => {
    const r = await api.request<Array<{ attributes?: { capabilities?: unknown } }>>('GET', '/api/v1/devices?kind=speaker');
    count = Array.isArray(r.body)
      ? r.body.filter((d) => { const c = d.attributes?.capabilities; return Array.isArray(c) && c.includes('media.prefetch') === prefetch; }).length
      : 0;
    return count >= n;
  }, 60_000, 500).catch(() => undefined);
  log(`${count} of ${n} speakers known ${prefetch ? 'with' : 'without'} media.prefetch after ${Date.now() - t} ms`);
}

/** Creates an operator of the commune with the admin token and logs in as them (a session token, as the web app has). */
async function operator(httpUrl: string, admin: KengApi, username: string): Promise<KengApi> {
  const password = randomBytes(18).toString('base64url');
  const u = await admin.request('POST', '/api/v1/users', { username, password, role: 'operator', areas: [COMMUNE.code] });
  if (u.status !== 201) throw new Error(`POST /api/v1/users ${username}: HTTP ${u.status} ${JSON.stringify(u.body).slice(0, 300)}`);
  const r = await fetch(`${httpUrl}/api/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }),
  });
  if (r.status !== 200) throw new Error(`login ${username}: HTTP ${r.status} ${await r.text()}`);
  return new KengApi(httpUrl, ((await r.json()) as { token: string }).token);
}

/** "N s, B bytes" of the alert broadcast's media (every speaker downloads it before it starts). */
async function alertMediaInfo(api: KengApi, broadcastId: string): Promise<string> {
  const b = await api.request<{ media?: { mediaId?: string } }>('GET', `/api/v1/broadcasts/${encodeURIComponent(broadcastId)}`);
  const id = b.body.media?.mediaId;
  if (!id) return 'n/a';
  const m = await api.request<{ durationSec?: number; size?: number }>('GET', `/api/v1/media/${encodeURIComponent(id)}`);
  return `${fmt(m.body.durationSec ?? NaN, 1)} s, ${fmt(m.body.size ?? NaN)} bytes (MP3)`;
}

main().then(
  async () => { const code = process.exitCode ?? 0; await runCleanups(); process.exit(code); },
  async (err: unknown) => { process.stderr.write(`bench:alert failed: ${(err as Error).stack ?? String(err)}\n`); await runCleanups(); process.exit(1); },
);

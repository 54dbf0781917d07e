/**
 * Live-feed benchmark (docs/benchmarks.md): Keng as a child process, N devices
 * publishing telemetry over MQTT at a total rate R (QoS 0, one connection per
 * device, in a worker thread), C socket.io clients (socket.io-client, in
 * worker threads). The devices are spread over K communes of one province;
 * W clients watch the whole province (an IOC wall), the others one commune
 * each (commune staff, farmers). `--watch-all C` makes every client watch
 * every device: the worst case. Each message carries its
 * send time as the reading `sent_at_ms`; clients record publish → receipt
 * latency. Prints p50/p99, delivery, server CPU and RSS over time.
 *
 *   npm run bench:live -- --clients 200 --rate 10000 --devices 200 --communes 20 --watch-all 2 --duration 20 [--mode batch|event]
 *
 * --mode batch (default): clients connect with `auth: {token, batch: true}`
 * and get `telemetry.batch` arrays (src/live/batch.ts); --mode event: one
 * `telemetry` event per reading and client.
 *
 * --farmers (`npm run bench:web`): every client is a farmer's web page: a
 * viewer account of its commune, logged in through POST /auth/login, one
 * `telemetry` event per reading (as the web app at `/` connects), no
 * province-wide clients.
 *
 * KENG_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/p" profiles the server.
 */
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { KengApi, registerSimDevices, simDeviceIds, type SimCredential } from '../src/sim/index.js';
import { installSignalHandlers, runCleanups } from '../tools/cleanup.js';
import { startKeng } from './lib/keng-server.js';
import { readCpuMs, readRssBytes, MiB } from './lib/proc.js';
import { promHistogramQuantile, promValue } from './lib/prom.js';
import { fmt, table, type Row } from './lib/report.js';

const SELF = fileURLToPath(import.meta.url);
const PROVINCE = { code: 'live-bench', name: 'Tỉnh đo tải', level: 'province' as const };
const communeCode = (i: number): string => `live-bench-x${String(i + 1).padStart(3, '0')}`;
const HIST_MS = 10_000;
const log = (s: string): void => { process.stderr.write(`[bench:live] ${s}\n`); };

type Mode = 'batch' | 'event';
interface Args { clients: number; rate: number; devices: number; communes: number; watchAll: number; duration: number; warmup: number; clientWorkers: number; fields: number; mode: Mode; farmers: boolean }

function parseArgs(argv: string[]): Args {
  const a: Args = { clients: 200, rate: 10_000, devices: 200, communes: 20, watchAll: 2, duration: 20, warmup: 3, clientWorkers: 2, fields: 3, mode: 'batch', farmers: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!.replace(/^--/, '');
    if (k === 'farmers') { a.farmers = true; continue; }
    if (k === 'mode') {
      const v = argv[++i];
      if (v !== 'batch' && v !== 'event') throw new Error('--mode is batch or event');
      a.mode = v;
      continue;
    }
    const key = ({ 'client-workers': 'clientWorkers', 'watch-all': 'watchAll' } as Record<string, string>)[k] ?? k;
    if (!(key in a)) throw new Error(`unknown option --${k} (options: --clients --rate --devices --communes --watch-all --duration --warmup --client-workers --fields --mode --farmers)`);
    const v = Number(argv[++i]);
    if (!Number.isFinite(v) || v < 0 || (v === 0 && key !== 'watchAll')) throw new Error(`--${k} needs a positive number`);
    (a as unknown as Record<string, number>)[key] = v;
  }
  if (a.farmers) a.watchAll = 0; // a farmer sees the commune of their fields, never the whole province
  if (a.watchAll > a.clients) throw new Error('--watch-all cannot exceed --clients');
  if (a.communes > a.devices) throw new Error('--communes cannot exceed --devices');
  return a;
}

// ---------------------------------------------------------------- workers --

/** areas: the one area each client of this worker subscribes to. */
/** tokens[i]: the bearer token of client i (the admin token, or a farmer's own session). */
type ClientsIn = { role: 'clients'; url: string; tokens: string[]; areas: string[]; mode: Mode };
type PublishersIn = { role: 'publishers'; mqttUrl: string; devices: SimCredential[]; rate: number; fields: number };
type ToWorker = { cmd: 'start' | 'reset' | 'report' | 'stop' };
/** hist: publish → receipt; inHist (every 16th reading): publish → the server's receipt time (the reading's ts, set by Keng). */
interface ClientReport { type: 'report'; received: number; hist: number[]; inHist: number[]; overflow: number; disconnected: number; perClientMin: number; perClientMax: number }

async function clientsWorker(d: ClientsIn): Promise<void> {
  const { io } = await import('socket.io-client');
  let hist = new Array<number>(HIST_MS).fill(0);
  let inHist = new Array<number>(HIST_MS).fill(0);
  let overflow = 0;
  let received = 0;
  let disconnected = 0;
  let perClient: number[] = new Array<number>(d.areas.length).fill(0);
  const open = (i: number): Promise<import('socket.io-client').Socket> => new Promise((resolve, reject) => {
    const token = d.tokens[i]!;
    const auth = d.mode === 'batch' ? { token, batch: true } : { token };
    const s = io(d.url, { transports: ['websocket'], reconnection: false, forceNew: true, auth });
    type Msg = { ts: string; values: { sent_at_ms?: number } };
    const one = (m: Msg, now: number): void => {
      const sent = m.values.sent_at_ms;
      if (typeof sent !== 'number') return;
      const ms = now - sent;
      if ((received & 15) === 0) {
        const inMs = Date.parse(m.ts) - sent;
        if (inMs >= 0 && inMs < HIST_MS) inHist[inMs]!++;
      }
      received++;
      perClient[i]!++;
      if (ms >= 0 && ms < HIST_MS) hist[ms]!++; else overflow++;
    };
    s.on('telemetry', (m: Msg) => one(m, Date.now()));
    s.on('telemetry.batch', (ms: Msg[]) => { const now = Date.now(); for (const m of ms) one(m, now); });
    s.on('disconnect', () => { disconnected++; });
    s.once('connect_error', reject);
    s.once('connect', () => {
      s.timeout(30_000).emitWithAck('subscribe', { areas: [d.areas[i]!] }).then((ack: { ok?: boolean }) => (ack.ok ? resolve(s) : reject(new Error(JSON.stringify(ack)))), reject);
    });
  });
  const sockets: import('socket.io-client').Socket[] = [];
  const n = d.areas.length;
  for (let i = 0; i < n; i += 25) sockets.push(...await Promise.all(Array.from({ length: Math.min(25, n - i) }, (_, k) => open(i + k))));
  parentPort!.postMessage({ type: 'ready' });
  parentPort!.on('message', (m: ToWorker) => {
    if (m.cmd === 'reset') { hist = new Array<number>(HIST_MS).fill(0); inHist = new Array<number>(HIST_MS).fill(0); overflow = 0; received = 0; perClient = new Array<number>(d.areas.length).fill(0); }
    if (m.cmd === 'report') {
      const r: ClientReport = { type: 'report', received, hist, inHist, overflow, disconnected, perClientMin: Math.min(...perClient), perClientMax: Math.max(...perClient) };
      parentPort!.postMessage(r);
    }
    if (m.cmd === 'stop') { for (const s of sockets) s.disconnect(); parentPort!.close(); }
  });
}

async function publishersWorker(d: PublishersIn): Promise<void> {
  const mqtt = (await import('mqtt')).default;
  const connect = (c: SimCredential): Promise<import('mqtt').MqttClient> => new Promise((resolve, reject) => {
    const m = mqtt.connect(d.mqttUrl, { username: c.id, password: c.secret, clientId: c.id, reconnectPeriod: 0, protocolVersion: 4, keepalive: 60, connectTimeout: 60_000 });
    m.once('connect', () => resolve(m));
    m.once('error', reject);
  });
  const conns: import('mqtt').MqttClient[] = [];
  for (let i = 0; i < d.devices.length; i += 50) conns.push(...await Promise.all(d.devices.slice(i, i + 50).map(connect)));
  const topics = d.devices.map((c) => `v1/devices/${c.id}/telemetry`);
  let sent = 0;
  let timer: NodeJS.Timeout | null = null;
  parentPort!.postMessage({ type: 'ready' });
  parentPort!.on('message', (m: ToWorker) => {
    if (m.cmd === 'start') {
      const t0 = performance.now();
      let k = 0;
      timer = setInterval(() => {
        const due = Math.floor(((performance.now() - t0) / 1000) * d.rate) - sent;
        for (let i = 0; i < due; i++, k++) {
          const j = k % conns.length;
          let body = `{"sent_at_ms":${Date.now()}`;
          for (let f = 1; f < d.fields; f++) body += `,"f${f}":${(k % 1000) / 10}`;
          conns[j]!.publish(topics[j]!, `${body}}`, { qos: 0 });
        }
        sent += Math.max(0, due);
      }, 5);
    }
    if (m.cmd === 'report') parentPort!.postMessage({ type: 'report', sent });
    if (m.cmd === 'stop') {
      if (timer) clearInterval(timer);
      for (const c of conns) c.end(true);
      parentPort!.close();
    }
  });
}

// ------------------------------------------------------------------ main --

/** One viewer account per commune, then one login (session token) per client, as a farmer's page does. */
async function farmerSessions(url: string, adminToken: string, areas: string[]): Promise<string[]> {
  const call = async (route: string, body: unknown, token?: string): Promise<Record<string, unknown>> => {
    const r = await fetch(url + route, {
      method: 'POST', body: JSON.stringify(body),
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    });
    const text = await r.text();
    if (r.status >= 300) throw new Error(`POST ${route}: ${r.status} ${text}`);
    return JSON.parse(text) as Record<string, unknown>;
  };
  const password = 'ruộng lúa bench 2026';
  const username = (area: string): string => `nong-dan-${area}`;
  for (const area of new Set(areas)) await call('/api/v1/users', { username: username(area), password, role: 'viewer', areas: [area] }, adminToken);
  // One at a time: the login guard counts an attempt as a failure until its password proves right,
  // so parallel logins of one account would be refused as guessing.
  const tokens: string[] = [];
  for (const area of areas) tokens.push(String((await call('/api/v1/auth/login', { username: username(area), password })).token));
  return tokens;
}

function worker<T>(data: ClientsIn | PublishersIn): { w: Worker; ready: Promise<void>; ask: (cmd: ToWorker['cmd']) => Promise<T> } {
  const w = new Worker(SELF, { workerData: data });
  const ready = new Promise<void>((resolve, reject) => {
    w.once('error', reject);
    w.once('message', (m: { type: string }) => (m.type === 'ready' ? resolve() : reject(new Error(`unexpected ${m.type}`))));
  });
  const ask = (cmd: ToWorker['cmd']): Promise<T> => new Promise((resolve) => {
    if (cmd === 'report') w.once('message', (m: T) => resolve(m)); else resolve(undefined as T);
    w.postMessage({ cmd });
  });
  return { w, ready, ask };
}

const fmtSec = (v: number | null): string => (v === null ? '?' : (v * 1000).toFixed(1));

function percentile(hist: number[], total: number, p: number): number {
  const want = Math.ceil((p / 100) * total);
  let acc = 0;
  for (let ms = 0; ms < hist.length; ms++) { acc += hist[ms]!; if (acc >= want) return ms; }
  return Infinity;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  log(`${a.clients} socket.io clients, ${a.rate} msgs/s from ${a.devices} devices (${a.fields} readings each), ${a.duration} s (+${a.warmup} s warm-up), mode ${a.mode}; ${cpus().length} cores`);
  installSignalHandlers();
  const server = await startKeng({
    env: {
      // Default settings (embedded store, synchronous=full) but for the per-device rate limit: 50 msgs/s per device here.
      KENG_MQTT_RATE_LIMIT_PER_SEC: '1000000', KENG_MQTT_RATE_LIMIT_BURST: '1000000', KENG_TELEMETRY_STORE: 'embedded',
    },
  });
  const stopAll: Array<() => Promise<unknown>> = [];
  try {
    const api = new KengApi(server.httpUrl, server.adminToken);
    await api.ensureArea(PROVINCE);
    // Devices round-robin over the communes; every device publishes at rate/devices.
    const ids = simDeviceIds('lb-', a.devices);
    const devices: SimCredential[] = [];
    const perCommune = new Array<number>(a.communes).fill(0);
    for (let c = 0; c < a.communes; c++) {
      await api.ensureArea({ code: communeCode(c), name: `Xã ${c + 1}`, level: 'commune', parent: PROVINCE.code });
      const mine = ids.filter((_, i) => i % a.communes === c);
      perCommune[c] = mine.length;
      devices.push(...(await registerSimDevices(api, mine, { area: communeCode(c), profileOf: () => 'soil', concurrency: 32 })).devices);
    }
    log(`registered ${devices.length} devices in ${a.communes} communes`);
    // Clients: the first watchAll watch the province, the others one commune each, round-robin.
    const clientAreas = Array.from({ length: a.clients }, (_, i) => (i < a.watchAll ? PROVINCE.code : communeCode((i - a.watchAll) % a.communes)));
    // Readings each client may see, as a share of all published: 1 for the province, its commune's share otherwise.
    const share = clientAreas.reduce((sum, code) => sum + (code === PROVINCE.code ? 1 : perCommune[Number(code.slice(-3)) - 1]! / a.devices), 0);

    // --farmers: each client logs in as a viewer of its commune, as the web app does (POST /auth/login).
    const tokens = a.farmers ? await farmerSessions(server.httpUrl, server.adminToken, clientAreas) : clientAreas.map(() => server.adminToken);
    if (a.farmers) log(`${tokens.length} farmers logged in (one viewer account per commune)`);
    const per = Math.ceil(a.clients / a.clientWorkers);
    const cw = Array.from({ length: a.clientWorkers }, (_, i) => worker<ClientReport>({
      role: 'clients', url: server.httpUrl, tokens: tokens.slice(i * per, (i + 1) * per), areas: clientAreas.slice(i * per, (i + 1) * per), mode: a.mode,
    }));
    const pw = worker<{ sent: number }>({ role: 'publishers', mqttUrl: server.mqttUrl, devices, rate: a.rate, fields: a.fields });
    stopAll.unshift(async () => { for (const x of [...cw, pw]) { x.w.postMessage({ cmd: 'stop' }); await x.w.terminate(); } });
    await Promise.all([...cw.map((x) => x.ready), pw.ready]);
    log(`${a.clients} clients subscribed, ${a.devices} MQTT publishers connected`);

    const rss0 = readRssBytes(server.pid)!;
    await pw.ask('start');
    await new Promise((r) => setTimeout(r, a.warmup * 1000));
    await Promise.all(cw.map((x) => x.ask('reset')));
    const sent0 = (await pw.ask('report')).sent;
    const cpu0 = readCpuMs(server.pid)!;
    const benchCpu0 = process.cpuUsage();
    const t0 = performance.now();
    const rssSeries: number[] = [];
    let lastRecv = 0;
    for (let s = 1; s <= a.duration; s++) {
      await new Promise((r) => setTimeout(r, 1000));
      const rss = readRssBytes(server.pid)!;
      rssSeries.push(rss);
      const reps = await Promise.all(cw.map((x) => x.ask('report')));
      const recv = reps.reduce((n, r) => n + r.received, 0);
      log(`t=${String(s).padStart(3)} s  delivered ${fmt(recv - lastRecv)}/s  server RSS ${fmt(rss / MiB)} MiB`);
      lastRecv = recv;
    }
    const elapsed = (performance.now() - t0) / 1000;
    const cpuPct = ((readCpuMs(server.pid)! - cpu0) / 1000 / elapsed) * 100;
    const benchCpu = process.cpuUsage(benchCpu0);
    const benchCpuPct = ((benchCpu.user + benchCpu.system) / 1e6 / elapsed) * 100;
    const sent = (await pw.ask('report')).sent - sent0;
    await pw.ask('stop');
    await new Promise((r) => setTimeout(r, 1500));
    const reps = await Promise.all(cw.map((x) => x.ask('report')));
    const hist = new Array<number>(HIST_MS).fill(0);
    const inHist = new Array<number>(HIST_MS).fill(0);
    let received = 0, overflow = 0, disconnected = 0, minPer = Infinity, maxPer = 0;
    for (const r of reps) {
      r.hist.forEach((v, i) => { hist[i]! += v; });
      r.inHist.forEach((v, i) => { inHist[i]! += v; });
      received += r.received; overflow += r.overflow; disconnected += r.disconnected;
      minPer = Math.min(minPer, r.perClientMin); maxPer = Math.max(maxPer, r.perClientMax);
    }
    const metrics = await (await fetch(`${server.httpUrl}/metrics`, { headers: { authorization: `Bearer ${server.adminToken}` } })).text();
    const p50 = percentile(hist, received, 50), p90 = percentile(hist, received, 90), p99 = percentile(hist, received, 99);
    const inN = inHist.reduce((a, b) => a + b, 0);
    const third = rssSeries[Math.floor(rssSeries.length / 3)] ?? rss0;
    const rssEnd = rssSeries[rssSeries.length - 1] ?? rss0;
    const rssMax = Math.max(...rssSeries);
    const growth = (rssEnd - third) / MiB;
    const failures: string[] = [];
    if (!(p99 < 100)) failures.push(`p99 ${p99} ms >= 100 ms`);
    if (growth > 64) failures.push(`RSS grew ${growth.toFixed(0)} MiB in the last two thirds of the run`);
    const expected = sent * share;
    const rows: Row[] = [
      ['server', 'dist/src/main.js (child process)'],
      ['clients x rate', `${a.clients} x ${fmt(a.rate)} msgs/s (${a.devices} devices, QoS 0)`],
      ['who watches what', `${a.watchAll} client(s) the whole province, ${a.clients - a.watchAll} one of ${a.communes} communes each`],
      ['delivery mode', a.mode === 'batch' ? 'batch (auth.batch: telemetry.batch arrays)' : 'event (one telemetry event per reading)'],
      ['published during measurement', `${fmt(sent)} msgs in ${elapsed.toFixed(1)} s (${fmt(sent / elapsed)} msgs/s)`],
      ['readings received by clients', `${fmt(received)} = ${((received / Math.max(1, expected)) * 100).toFixed(1)}% of the ${fmt(expected)} in their scope (${fmt(received / elapsed)}/s; per client ${fmt(minPer)}..${fmt(maxPer)})`],
      ['latency publish → receipt p50 / p90 / p99', `${p50} / ${p90} / ${p99} ms${overflow ? ` (${fmt(overflow)} beyond ${HIST_MS} ms)` : ''}`],
      ['of which publish → Keng receipt p50 / p99', `${percentile(inHist, inN, 50)} / ${percentile(inHist, inN, 99)} ms (reading ts set by Keng; 1 in 16 sampled)`],
      ['server: group commit p50 / p99 (histogram)', `${fmtSec(promHistogramQuantile(metrics, 'keng_commit_seconds', 0.5))} / ${fmtSec(promHistogramQuantile(metrics, 'keng_commit_seconds', 0.99))} ms`],
      ['server: batch buffer wait p50 / p99 (histogram)', `${fmtSec(promHistogramQuantile(metrics, 'keng_live_batch_wait_seconds', 0.5))} / ${fmtSec(promHistogramQuantile(metrics, 'keng_live_batch_wait_seconds', 0.99))} ms`],
      ['coalesced updates (server)', fmt(promValue(metrics, 'keng_live_coalesced_total') ?? 0)],
      ['dropped / disconnected clients', `${fmt(promValue(metrics, 'keng_live_dropped_total') ?? 0)} / ${disconnected}`],
      ['CPU: server / this benchmark (devices + clients)', `${fmt(cpuPct)}% / ${fmt(benchCpuPct)}% of one core (${cpus().length} cores)`],
      ['server event-loop lag p50 / p99 (whole run)', `${fmtSec(promValue(metrics, 'keng_nodejs_eventloop_lag_p50_seconds'))} / ${fmtSec(promValue(metrics, 'keng_nodejs_eventloop_lag_p99_seconds'))} ms`],
      ['server RSS start / max / end', `${fmt(rss0 / MiB)} / ${fmt(rssMax / MiB)} / ${fmt(rssEnd / MiB)} MiB (growth over last 2/3: ${growth.toFixed(1)} MiB)`],
      ['result', failures.length ? `FAIL: ${failures.join('; ')}` : 'PASS (p99 < 100 ms, RSS growth bounded)'],
    ];
    process.stdout.write(`${table('Live feed benchmark', rows)}\n`);
    process.exitCode = failures.length ? 1 : 0;
  } finally {
    for (const f of stopAll) await f().catch(() => undefined);
    await runCleanups();
  }
}

if (!isMainThread) {
  const d = workerData as ClientsIn | PublishersIn;
  void (d.role === 'clients' ? clientsWorker(d) : publishersWorker(d));
} else {
  main().catch((err) => { log(`failed: ${(err as Error).stack ?? err}`); process.exit(1); });
}

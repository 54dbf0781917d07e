/**
 * `keng simulate`: register (or load) simulated sensors, connect them and run
 * them, printing a one-line summary every 5 s.
 */
import { KengApi } from './api-client.js';
import { mergeCredentials, readCredentials, selectCredentials, simDeviceIds, writeCredentials, type SimCredential } from './credentials.js';
import type { StoreForwardOptions } from './device.js';
import { profileForIndex, type ProfileName } from './profiles.js';
import { SIM_AREA, registerSimDevices } from './register.js';
import { SensorSim, formatCounters } from './sensor-sim.js';

export interface SimulationSettings {
  sensors: number;
  url: string;
  api?: string;
  token?: string;
  area?: string;
  intervalMs: number;
  qos: 0 | 1;
  prefix: string;
  durationMs?: number;
  credentialsPath: string;
  profile: ProfileName | 'mixed';
  rampPerSec: number;
  window: number;
  useToken: boolean;
  storeForward?: StoreForwardOptions;
  seed: number;
  out?: (line: string) => void;
}

export async function runSimulation(s: SimulationSettings): Promise<number> {
  const out = s.out ?? ((line: string) => process.stdout.write(line + '\n'));
  const ids = simDeviceIds(s.prefix, s.sensors);
  const profileOf = (_id: string, i: number): ProfileName => (s.profile === 'mixed' ? profileForIndex(i) : s.profile);
  const existing = readCredentials(s.credentialsPath);
  let devices: SimCredential[];

  if (s.api && s.token) {
    const api = new KengApi(s.api, s.token);
    const area = await resolveArea(api, s.area, out);
    const known = new Map((existing?.devices ?? []).map((d) => [d.id, d] as const));
    const reg = await registerSimDevices(api, ids, { area, profileOf, known, concurrency: 16 });
    devices = reg.devices;
    writeCredentials(s.credentialsPath, mergeCredentials(existing, devices, { api: s.api, area }));
    out(`registered ${ids.length} devices in area "${area}" (${reg.created} new, ${reg.reused} reused, ${reg.recreated} re-created); credentials in ${s.credentialsPath}`);
  } else if (s.api || s.token) {
    throw new Error('--api and --token go together (registration needs both)');
  } else {
    if (!existing) throw new Error(`no credentials file ${s.credentialsPath}: register the devices first with --api and --token`);
    devices = selectCredentials(existing, ids);
  }

  const sim = new SensorSim({
    url: s.url, devices, qos: s.qos, intervalMs: s.intervalMs, window: s.window,
    rampPerSec: s.rampPerSec, maxPendingConnects: 100, keepaliveSec: 60, reconnectPeriodMs: 5000,
    useToken: s.useToken, sendAttributes: true, seed: s.seed,
    ...(s.storeForward ? { storeForward: s.storeForward } : {}),
  });
  const errorsSeen = new Set<string>();
  sim.options.onError = (id, err) => {
    // Show each distinct error once (e.g. "Not authorized" for stale credentials).
    if (errorsSeen.size < 10 && !errorsSeen.has(err.message)) { errorsSeen.add(err.message); out(`${id}: ${err.message}`); }
  };

  const t0 = Date.now();
  let prev = { sent: 0, acked: 0, atMs: 0 };
  const report = (): void => {
    const el = Date.now() - t0;
    out(formatCounters(sim.counters, devices.length, el, prev));
    prev = { sent: sim.counters.sent, acked: sim.counters.acked, atMs: el };
  };
  const ticker = setInterval(report, 5000);

  let stop!: () => void;
  const stopped = new Promise<void>((r) => { stop = r; });
  const onSignal = (): void => stop();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const timer = s.durationMs ? setTimeout(stop, s.durationMs) : null;

  sim.startTelemetry();
  const ramp = sim.connectAll();
  void ramp.then((r) => out(`connection ramp done in ${(r.elapsedMs / 1000).toFixed(1)}s: ${r.ok} connected, ${r.failed} failed at first attempt (retrying)`));
  await stopped;

  clearInterval(ticker);
  if (timer) clearTimeout(timer);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  sim.stopTelemetry();
  await sim.drain(5000);
  await sim.stop();
  report();
  return sim.counters.errors > 0 && sim.counters.acked === 0 ? 1 : 0;
}

async function resolveArea(api: KengApi, area: string | undefined, out: (l: string) => void): Promise<string> {
  if (area) {
    const codes = await api.listAreaCodes();
    if (!codes.includes(area)) throw new Error(`area "${area}" does not exist; create it first (POST /api/v1/areas) or leave out --area to use "${SIM_AREA.code}"`);
    return area;
  }
  if ((await api.ensureArea(SIM_AREA)) === 'created') out(`created area "${SIM_AREA.code}" (province)`);
  return SIM_AREA.code;
}

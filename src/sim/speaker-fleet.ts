/**
 * Simulated loudspeakers for `keng simulate --speakers N` and the broadcast
 * benchmark: register kind=speaker devices through the REST API (like the
 * sensor simulator, register.ts), keep their credentials in a file, and run
 * them with the reference speaker (speaker/).
 */
import { KengApi } from './api-client.js';
import { mergeCredentials, readCredentials, selectCredentials, simDeviceIds, writeCredentials, type SimCredential } from './credentials.js';
import { mapLimit } from './pool.js';
import { SIM_AREA } from './register.js';
import { runSpeakers, type CommandKey, type SpeakerCredential, type SpeakerFaults } from './speaker/index.js';

/**
 * Registers speakers `ids` in `area`. A speaker that already exists keeps the
 * credentials we hold for it; one we hold none for is deleted and registered
 * again (secrets are shown only at registration).
 */
export async function registerSpeakers(api: KengApi, ids: string[], area: string, o: {
  known?: ReadonlyMap<string, SpeakerCredential>; concurrency?: number;
} = {}): Promise<SpeakerCredential[]> {
  return mapLimit(ids, o.concurrency ?? 16, async (id, i) => {
    const body = { id, kind: 'speaker' as const, name: `Cụm loa mô phỏng ${i + 1}`, area, model: 'keng-sim-loa' };
    let cred = await api.createDevice(body);
    if (!cred) {
      const known = o.known?.get(id);
      if (known) return known;
      await api.deleteDevice(id);
      cred = await api.createDevice(body);
      if (!cred) throw new Error(`speaker ${id} still exists after deleting it`);
    }
    return { id, ...cred };
  });
}

export interface SpeakerSimulationSettings {
  speakers: number;
  url: string;
  api?: string;
  token?: string;
  area?: string;
  prefix: string;
  credentialsPath: string;
  speed: number;
  faults: SpeakerFaults;
  useToken: boolean;
  /** Fetch the command keys (needs api + token) and refuse unsigned or badly signed play/stop (device protocol §11.6). */
  verifyCommands?: boolean;
  durationMs?: number;
  seed: number;
  out?: (line: string) => void;
}

/** Registers (with api + token) or loads the speakers, runs them until the duration or a signal, prints stats every 5 s. */
export async function runSpeakerSimulation(s: SpeakerSimulationSettings): Promise<number> {
  const out = s.out ?? ((line: string) => process.stdout.write(line + '\n'));
  const ids = simDeviceIds(s.prefix, s.speakers);
  const existing = readCredentials(s.credentialsPath);
  let creds: SpeakerCredential[];
  if (s.api && s.token) {
    const api = new KengApi(s.api, s.token);
    const area = s.area ?? SIM_AREA.code;
    if (!s.area) await api.ensureArea(SIM_AREA);
    else if (!(await api.listAreaCodes()).includes(area)) throw new Error(`area "${area}" does not exist; create it first (POST /api/v1/areas)`);
    const known = new Map((existing?.devices ?? []).map((d) => [d.id, d] as const));
    creds = await registerSpeakers(api, ids, area, { known });
    const asSim: SimCredential[] = creds.map((c) => ({ ...c, profile: 'soil' }));
    writeCredentials(s.credentialsPath, mergeCredentials(existing, asSim, { api: s.api, area }));
    out(`registered ${ids.length} speakers in area "${area}"; credentials in ${s.credentialsPath}`);
  } else if (s.api || s.token) {
    throw new Error('--api and --token go together (registration needs both)');
  } else {
    if (!existing) throw new Error(`no credentials file ${s.credentialsPath}: register the speakers first with --api and --token`);
    creds = selectCredentials(existing, ids);
  }

  let commandKeys: CommandKey[] | undefined;
  if (s.verifyCommands) {
    if (!s.api || !s.token) throw new Error('--verify-commands needs --api and --token (the speakers fetch GET /api/v1/command-keys)');
    commandKeys = await new KengApi(s.api, s.token).commandKeys();
    out(`speakers verify signed commands with key(s) ${commandKeys.map((k) => k.kid).join(', ')}`);
  }

  const errors = new Set<string>();
  const t0 = Date.now();
  const sim = await runSpeakers({
    url: s.url, credentials: creds, speed: s.speed, faults: s.faults, useToken: s.useToken, seed: s.seed,
    ...(commandKeys ? { commandKeys, requireSignedCommands: true } : {}),
    onError: (id, err) => { if (errors.size < 10 && !errors.has(err.message)) { errors.add(err.message); out(`${id}: ${err.message}`); } },
  });
  out(`${creds.length} speakers connected in ${((Date.now() - t0) / 1000).toFixed(1)}s (speed ×${s.speed})`);
  const report = (): void => {
    const st = sim.stats();
    const ev = Object.entries(st.events).map(([k, v]) => `${k}=${v}`).join(' ') || 'no playback yet';
    const refused = commandKeys ? `; signed commands refused: ${sim.speakers.reduce((n, sp) => n + sp.refused.length, 0)}` : '';
    out(`speakers ${st.connected}/${st.speakers} connected; playback events: ${ev}${refused}`);
  };
  const ticker = setInterval(report, 5000);
  let stop!: () => void;
  const stopped = new Promise<void>((r) => { stop = r; });
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const timer = s.durationMs ? setTimeout(stop, s.durationMs) : null;
  await stopped;
  clearInterval(ticker);
  if (timer) clearTimeout(timer);
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  report();
  await sim.stop();
  return 0;
}

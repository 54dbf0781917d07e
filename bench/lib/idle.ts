/** Idle-connections mode: N registered devices connected (ramped) and idle; server RSS and time to connect. */
import { SensorSim } from '../../src/sim/index.js';
import { MiB, RssSampler, readRssBytes } from './proc.js';
import { fetchMetrics, promValue } from './prom.js';
import { setUp, tearDown } from './setup.js';

export const IDLE_RSS_TARGET_MIB = 500;

export interface IdleResult {
  devices: number;
  connected: number;
  connectSec: number;
  rampPerSec: number;
  rssBaselineMiB: number;
  rssIdleMiB: number;
  rssMaxMiB: number;
  kibPerConnection: number;
  serverConnections: number | null;
  registerSec: number;
  stopMs: number;
  failures: string[];
}

export async function runIdle(o: { devices: number; rampPerSec: number; keep: boolean; log: (s: string) => void }): Promise<IdleResult> {
  const s = await setUp({ store: 'embedded', devices: o.devices, keep: o.keep, rateLimit: 50, log: o.log });
  const failures: string[] = [];
  await new Promise((r) => setTimeout(r, 2000));
  const baseline = readRssBytes(s.keng.pid) ?? 0;
  const rss = new RssSampler(s.keng.pid, 500).start();
  const sim = new SensorSim({
    url: s.keng.mqttUrl, devices: s.devices, qos: 1, intervalMs: 60_000, rampPerSec: o.rampPerSec, maxPendingConnects: 200,
    keepaliveSec: 60, reconnectPeriodMs: 0, connectTimeoutMs: 60_000, sendAttributes: true,
  });
  o.log(`connecting ${o.devices} devices, ramp ${o.rampPerSec}/s...`);
  const ramp = await sim.connectAll();
  o.log(`connected ${ramp.ok}/${o.devices} in ${(ramp.elapsedMs / 1000).toFixed(1)} s${ramp.failed ? `; ${ramp.failed} failed: ${ramp.errors[0]?.message}` : ''}`);
  if (ramp.ok < o.devices) failures.push(`${o.devices - ramp.ok} devices failed to connect (${ramp.errors[0]?.message ?? '?'})`);
  // Let the connect-time work (status, attributes, presence writes) settle, then measure idle.
  await new Promise((r) => setTimeout(r, 5000));
  const samples: number[] = [];
  for (let i = 0; i < 10; i++) { samples.push(rss.sample()); await new Promise((r) => setTimeout(r, 500)); }
  const idle = samples.reduce((a, b) => a + b, 0) / samples.length;
  const serverConnections = promValue(await fetchMetrics(s.keng.httpUrl, s.keng.adminToken).catch(() => ''), 'keng_mqtt_connections');
  if (serverConnections !== null && serverConnections < ramp.ok) failures.push(`server reports ${serverConnections} connections, ${ramp.ok} expected`);
  if (sim.counters.connected < ramp.ok) failures.push(`${ramp.ok - sim.counters.connected} clients were disconnected while idle`);
  rss.stop();
  if (idle / MiB >= IDLE_RSS_TARGET_MIB) failures.push(`idle RSS ${(idle / MiB).toFixed(0)} MiB is over the ${IDLE_RSS_TARGET_MIB} MiB target`);
  await sim.stop({ announceOffline: false, concurrency: 500 });
  const { stopMs } = await tearDown(s);
  return {
    devices: o.devices, connected: ramp.ok, connectSec: ramp.elapsedMs / 1000, rampPerSec: o.rampPerSec,
    rssBaselineMiB: baseline / MiB, rssIdleMiB: idle / MiB, rssMaxMiB: rss.max / MiB,
    kibPerConnection: ramp.ok ? (idle - baseline) / 1024 / ramp.ok : 0,
    serverConnections, registerSec: s.registerMs / 1000, stopMs, failures,
  };
}

/**
 * The throughput phase: devices in max-throughput mode (a window of in-flight
 * QoS 1 telemetry messages per client, 4 readings each, unique increasing ts
 * per device), a warm-up, then a fixed measurement window. Runs on the main
 * thread or in a worker thread on a slice of the devices.
 */
import { SensorSim, type SimCredential } from '../../src/sim/index.js';
import { LatencyRecorder } from '../../src/sim/stats.js';
import { RawFleet } from './raw-device.js';

/** `raw`: lean pipelining client (raw-device.ts, default); `mqttjs`: the mqtt.js SensorSim. */
export type GeneratorKind = 'raw' | 'mqttjs';

export interface LoadSliceOptions {
  mqttUrl: string;
  devices: SimCredential[];
  window: number;
  drainTimeoutMs: number;
  rampPerSec: number;
  generator: GeneratorKind;
}

export interface LoadSliceResult {
  connected: number;
  connectFailed: number;
  connectErrors: string[];
  sent: number;
  acked: number;
  errors: number;
  ackedInWindow: number;
  readingsInWindow: number;
  /** Acknowledgements per whole second of the measurement window (shows dips, e.g. compaction). */
  ackedPerSecond: number[];
  latencies: Float64Array;
  /** Per device (same order as `devices`), the ts of every acknowledged message. */
  ackedTs: number[][];
  /** Messages still unacknowledged when the drain timed out. */
  inflightAtEnd: number;
  /** When the last client of this slice had connected (absolute time). */
  connectedAt: number;
}

export const now = (): number => performance.timeOrigin + performance.now();
const sleepUntil = (t: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, t - now())));

/** Absolute times (performance.timeOrigin + performance.now()) of the measurement window. */
export interface Schedule { measureFrom: number; measureTo: number }

/**
 * Connects the slice's clients, then asks `ready()` for the schedule (the
 * coordinator answers once every slice is connected) and runs the load:
 * telemetry starts at once (warm-up), acknowledgements are counted between
 * measureFrom and measureTo.
 */
export async function runLoadSlice(o: LoadSliceOptions, ready: () => Promise<Schedule>): Promise<LoadSliceResult> {
  const latency = new LatencyRecorder(1 << 18);
  const ackedTs: number[][] = o.devices.map(() => []);
  let win: Schedule = { measureFrom: Infinity, measureTo: Infinity };
  let ackedInWindow = 0;
  let readingsInWindow = 0;
  const ackedPerSecond: number[] = [];
  const onAck = (i: number, ts: number, latencyMs: number, readings: number): void => {
    ackedTs[i]!.push(ts);
    const t = now();
    if (t >= win.measureFrom && t < win.measureTo) {
      ackedInWindow++;
      readingsInWindow += readings;
      const sec = Math.floor((t - win.measureFrom) / 1000);
      ackedPerSecond[sec] = (ackedPerSecond[sec] ?? 0) + 1;
      latency.record(latencyMs);
    }
  };
  const url = new URL(o.mqttUrl);
  const sim = o.generator === 'raw'
    ? new RawFleet({
      host: url.hostname, port: Number(url.port), devices: o.devices, window: o.window, rampPerSec: o.rampPerSec,
      maxPendingConnects: 100, keepaliveSec: 60, connectTimeoutMs: 30_000, onAck,
    })
    : new SensorSim({
      url: o.mqttUrl,
      devices: o.devices.map((d) => ({ ...d, profile: 'soil' })), // soil: exactly 4 fields per message
      qos: 1,
      window: o.window,
      rampPerSec: o.rampPerSec,
      maxPendingConnects: 100,
      keepaliveSec: 60,
      reconnectPeriodMs: 0,
      sendAttributes: false,
      onAck,
    });
  const ramp = await sim.connectAll();
  const connectedAt = now();
  win = await ready();
  sim.startTelemetry();
  await sleepUntil(win.measureTo);
  sim.stopTelemetry();
  await sim.drain(o.drainTimeoutMs);
  const inflightAtEnd = sim.inFlight();
  await (sim instanceof RawFleet ? sim.stop() : sim.stop({ announceOffline: false }));
  return {
    connected: ramp.ok,
    connectFailed: ramp.failed,
    connectErrors: ramp.errors.map((e) => e.message),
    sent: sim.counters.sent,
    acked: sim.counters.acked,
    errors: sim.counters.errors,
    ackedInWindow,
    readingsInWindow,
    ackedPerSecond: Array.from(ackedPerSecond, (n) => n ?? 0),
    latencies: latency.samples(),
    ackedTs,
    inflightAtEnd,
    connectedAt,
  };
}

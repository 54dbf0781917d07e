/**
 * SensorSim: a fleet of simulated sensors. Connects them through a ramp,
 * starts and stops their telemetry, and keeps shared counters and PUBACK
 * latencies.
 */
import { SimDevice, type StoreForwardOptions } from './device.js';
import type { SimCredential } from './credentials.js';
import { createRng, hashSeed } from './random.js';
import { drainInFlight, runRamp, type RampResult } from './ramp.js';
import { LatencyRecorder, emptyCounters, type SimCounters } from './stats.js';

export interface SensorSimOptions {
  url: string;
  devices: SimCredential[];
  qos?: 0 | 1;
  intervalMs?: number;
  /** >0: max-throughput mode with this many in-flight QoS 1 messages per client. */
  window?: number;
  /** Connection ramp: attempts started per second, and at most this many awaiting CONNACK. */
  rampPerSec?: number;
  maxPendingConnects?: number;
  keepaliveSec?: number;
  reconnectPeriodMs?: number;
  connectTimeoutMs?: number;
  useToken?: boolean;
  storeForward?: StoreForwardOptions;
  sendAttributes?: boolean;
  seed?: number;
  /** Record PUBACK latencies (ms) into `latency`. */
  recordLatency?: boolean;
  onAck?: (deviceIndex: number, ts: number, latencyMs: number, readings: number) => void;
  onError?: (deviceId: string, err: Error) => void;
}

export class SensorSim {
  readonly counters: SimCounters = emptyCounters();
  readonly latency = new LatencyRecorder();
  readonly devices: SimDevice[];
  private telemetryOn = false;
  private stopping = false;

  constructor(readonly options: SensorSimOptions) {
    const o = options;
    const qos = o.qos ?? 1;
    const window = o.window ?? 0;
    if (window > 0 && qos !== 1) throw new Error('window mode needs QoS 1 (the window counts unacknowledged messages)');
    this.devices = o.devices.map((cred, i) => new SimDevice({
      id: cred.id,
      ...(cred.secret !== undefined ? { secret: cred.secret } : {}),
      ...(cred.accessToken !== undefined ? { accessToken: cred.accessToken } : {}),
      useToken: o.useToken ?? false,
      url: o.url,
      profile: cred.profile,
      qos,
      intervalMs: o.intervalMs ?? 5000,
      window,
      keepaliveSec: o.keepaliveSec ?? 60,
      reconnectPeriodMs: o.reconnectPeriodMs ?? 5000,
      connectTimeoutMs: o.connectTimeoutMs ?? 30_000,
      ...(o.storeForward ? { storeForward: o.storeForward } : {}),
      sendAttributes: o.sendAttributes ?? true,
      rng: createRng((o.seed ?? 1) ^ hashSeed(cred.id)),
      counters: this.counters,
      onAck: (ts, latencyMs, readings) => {
        if (o.recordLatency) this.latency.record(latencyMs);
        o.onAck?.(i, ts, latencyMs, readings);
      },
      onError: (err) => o.onError?.(cred.id, err),
    }));
  }

  /** Connects every device through the ramp. With reconnects on, failed first attempts keep retrying in the background. */
  async connectAll(): Promise<RampResult> {
    return runRamp(
      this.devices,
      { ratePerSec: this.options.rampPerSec ?? 50, maxPending: this.options.maxPendingConnects ?? 100 },
      async (d) => {
        await d.start();
        if (this.telemetryOn) d.startTelemetry();
      },
      () => this.stopping,
    );
  }

  startTelemetry(): void {
    this.telemetryOn = true;
    for (const d of this.devices) d.startTelemetry();
  }

  stopTelemetry(): void {
    this.telemetryOn = false;
    for (const d of this.devices) d.stopTelemetry();
  }

  inFlight(): number {
    let n = 0;
    for (const d of this.devices) n += d.inFlight;
    return n;
  }

  /** Waits for in-flight messages to be acknowledged; false on timeout. */
  drain(timeoutMs: number): Promise<boolean> {
    return drainInFlight(() => this.inFlight(), timeoutMs);
  }

  async stop(opts: { announceOffline?: boolean; concurrency?: number } = {}): Promise<void> {
    this.stopping = true;
    this.stopTelemetry();
    const limit = opts.concurrency ?? 200;
    for (let i = 0; i < this.devices.length; i += limit) {
      await Promise.all(this.devices.slice(i, i + limit).map((d) => d.stop(opts)));
    }
  }
}

/** One-line progress summary. */
export function formatCounters(c: SimCounters, total: number, elapsedMs: number, prev?: { sent: number; acked: number; atMs: number }): string {
  const secs = Math.round(elapsedMs / 1000);
  let rate = '';
  if (prev) {
    const dt = (elapsedMs - prev.atMs) / 1000;
    if (dt > 0) rate = `  ${Math.round((c.acked - prev.acked) / dt)} acked/s`;
  }
  const extra = [
    c.backlogged ? `backlogged ${c.backlogged}` : '',
    c.rpcAnswered ? `rpc ${c.rpcAnswered}` : '',
    c.reconnects ? `reconnects ${c.reconnects}` : '',
  ].filter(Boolean).join('  ');
  return `[${String(secs).padStart(4)}s] connected ${c.connected}/${total}  sent ${c.sent}  acked ${c.acked}  errors ${c.errors}${rate}${extra ? '  ' + extra : ''}`;
}

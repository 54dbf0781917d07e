/**
 * Starts bench/bare-aedes.ts as a child process (the baseline broker) and runs
 * the same load against it as against Keng: same generator, same devices
 * shape, no storage to verify (it stores nothing).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { simDeviceIds } from '../../src/sim/index.js';
import { percentiles } from '../../src/sim/stats.js';
import { onCleanup, trackChild } from '../../tools/cleanup.js';
import { brokerUsPerMsg, runLoad } from './load-run.js';
import type { GeneratorKind } from './load.js';

const BARE_JS = fileURLToPath(new URL('../bare-aedes.js', import.meta.url));

export interface BareProcess { pid: number; mqttUrl: string; stop(): Promise<number | null> }

export async function startBareAedes(timeoutMs = 15_000): Promise<BareProcess> {
  if (!existsSync(BARE_JS)) throw new Error(`${BARE_JS} not found: run "npm run build" first`);
  const child = spawn(process.execPath, [...(process.env.KENG_BENCH_BARE_NODE_ARGS ?? '').split(/\s+/).filter(Boolean), BARE_JS], { stdio: ['ignore', 'pipe', 'inherit'] });
  trackChild(child);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const stop = async (): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    return child.exitCode;
  };
  const unregister = onCleanup(`bare aedes ${child.pid}`, async () => { await stop(); });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error('bare aedes did not start')), timeoutMs);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening (\d+)/.exec(out);
      if (m) { clearTimeout(t); resolve(Number(m[1])); }
    });
    void exited.then((code) => { clearTimeout(t); reject(new Error(`bare aedes exited (${code}) during start`)); });
  });
  return {
    pid: child.pid!, mqttUrl: `mqtt://127.0.0.1:${port}`,
    stop: async () => { const c = await stop(); unregister(); return c; },
  };
}

export interface BareResult {
  devices: number;
  window: number;
  msgsPerSec: number;
  latencyMs: { p50: number; p90: number; p99: number };
  serverCpuPct: number | null;
  /** Its main (only) thread's CPU per acknowledged message, µs (load-run.ts brokerUsPerMsg). */
  brokerUsPerMsg: number | null;
  /** Machine CPU taken by the hypervisor during the window, % of all cores (proc.ts stealPct). */
  stealPct: number | null;
  clientErrors: number;
}

/** One measured run of the load generator against a fresh bare aedes. */
export async function runBare(o: {
  devices: number; window: number; durationSec: number; warmupSec: number; rampPerSec: number; generator: GeneratorKind; log: (s: string) => void;
}): Promise<BareResult> {
  const bare = await startBareAedes();
  try {
    o.log(`bare aedes pid ${bare.pid}: ${bare.mqttUrl}; ${o.devices} clients x window ${o.window}`);
    // aedes without an authenticate hook accepts any credentials: ids shaped like Keng's, any secret.
    const devices = simDeviceIds('bench-', o.devices).map((id) => ({ id, secret: 'bare', profile: 'soil' as const }));
    const load = await runLoad({
      mqttUrl: bare.mqttUrl, devices, window: o.window, warmupMs: o.warmupSec * 1000, durationMs: o.durationSec * 1000,
      workers: 1, rampPerSec: o.rampPerSec, serverPid: bare.pid, generator: o.generator,
    });
    const [p50, p90, p99] = percentiles(load.latencies, [50, 90, 99]) as [number, number, number];
    return {
      devices: o.devices, window: o.window, msgsPerSec: load.ackedInWindow / (load.measuredMs / 1000),
      latencyMs: { p50, p90, p99 },
      serverCpuPct: load.serverCpuMs === null ? null : (load.serverCpuMs / load.measuredMs) * 100,
      brokerUsPerMsg: brokerUsPerMsg(load),
      stealPct: load.stealPct,
      clientErrors: load.errors,
    };
  } finally {
    await bare.stop();
  }
}

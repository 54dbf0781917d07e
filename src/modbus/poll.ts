/**
 * One poll of a Modbus device, and when its next one is due. The poller
 * (poller.ts) owns which devices are polled, their lines and their timers;
 * this file owns what happens from the moment a poll's timer fires.
 *
 * A poll is ONE job on the device's line (line.ts): its read blocks
 * (plan.ts, the fewest requests its map allows) go out back to back, so
 * devices sharing a gateway or serial line take turns. A block that times
 * out ends the poll at once (the device is most likely gone; it must not
 * hold the line for every remaining block).
 *
 * Schedule: fixed rate, anchored to when each poll was due, so a poll that
 * waited for the line does not push the next ones later. A device whose
 * polls fail is polled at its interval, then 2, 4, 8 … times as far apart,
 * up to modbus.maxBackoffSec (or its interval, if longer): a dead sensor
 * costs its line one timeout now and then, not one per interval.
 *
 * Presence follows the polls: online after a successful poll (lastSeen =
 * then), offline after modbus.offlineAfterFailures failed polls in a row
 * (the 'status' event carries the last successful poll's time, which stays
 * lastSeen). A poll succeeds when at least one block was answered.
 *
 * Readings: each value is checked (finite; inside the map's min..max);
 * refused ones are counted in keng_rejected_total{reason: out_of_range |
 * bad_value} and the rest of the poll is kept. What the pipeline refuses is
 * counted there too, by its reason.
 *
 * Cluster mode (a `gate`, leases.ts): a poll starts only while the gate
 * says so, and every request of it asks again, so a line whose lease is lost
 * stops between two requests. A poll skipped because the line is another
 * node's changes nothing: no failure, no presence.
 */
import type { Clock } from '../core/clock.js';
import type { Scalar } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import { readingProblem } from './codec.js';
import type { LineGate } from './leases.js';
import { ModbusError, type ModbusLine } from './line.js';
import type { ModbusMetrics } from './metrics.js';
import { blockReadings, type ReadBlock } from './plan.js';
import type { ModbusSettings } from './types.js';

/** One finished poll, for observers (benchmarks, tests): when it was due, when it got the line, its outcome. */
export interface PollRecord { deviceId: string; due: number; started: number; ok: boolean }

/** Hands one poll's readings to the telemetry pipeline (IngestService.submitReadings). */
export type ReadingSink = (deviceId: string, ts: number, values: Record<string, Scalar>) => Promise<{ ok: true } | { ok: false; reason: string; detail?: string }>;

/** What a poll reads and updates of its device; the poller keeps one per polled device. */
export interface PollState {
  settings: ModbusSettings;
  blocks: ReadBlock[];
  line: ModbusLine;
  /** The line's key (types.ts lineKey): what leases are held for. */
  leaseKey: string;
  /** When the next poll is (or was) due (epoch ms). */
  due: number;
  failures: number;
  lastSuccess: number | null;
  running: boolean;
  /** Set by the poller when the device stops being polled (deleted, disabled, changed). */
  gone: boolean;
}

/** What a poll needs of Keng (the poller hands over its own deps). */
export interface PollCycleDeps {
  registry: Pick<DeviceRegistryApi, 'setOnline' | 'isOnline'>;
  sink: ReadingSink;
  logger: Logger;
  metrics: Pick<Metrics, 'rejectedTotal'>;
  clock: Clock;
  options: { offlineAfterFailures: number; maxBackoffSec: number };
  gate?: LineGate;
}

export class PollCycle<P extends PollState> {
  private readonly observers = new Set<(r: PollRecord) => void>();

  /**
   * `schedule` sets the device's timer for its next poll: the poller's, as it owns the timers and knows
   * whether it still runs. `m`: the poller's Modbus instruments (made once per registry).
   */
  constructor(
    private readonly deps: PollCycleDeps,
    private readonly m: Pick<ModbusMetrics, 'polls' | 'pollLateness'>,
    private readonly schedule: (p: P, delayMs: number) => void,
  ) {}

  /** Calls `fn` after every poll; returns the unsubscribe. */
  onPoll(fn: (r: PollRecord) => void): () => void {
    this.observers.add(fn);
    return () => { this.observers.delete(fn); };
  }

  /** One poll: read every block on the line, then submit what was read and plan the next poll. */
  async run(p: P): Promise<void> {
    if (p.running || p.gone) return;
    p.running = true;
    const { deviceId, transport } = p.settings;
    let at = 0;
    const values: Record<string, Scalar> = {};
    let answered = 0;
    let failure: ModbusError | null = null;
    let started = 0;
    const gate = this.deps.gate;
    let skipped = false;
    try {
      await p.line.exclusive(async (io) => {
        if (gate && !gate.mayStart(p.leaseKey)) { skipped = true; return; }
        started = this.deps.clock.now();
        for (const b of p.blocks) {
          if (gate && !gate.mayContinue(p.leaseKey)) { skipped = answered === 0; break; } // the lease could expire: not one more request
          try {
            const data = await io.read({ fn: b.function, unitId: transport.unitId, address: b.start, count: b.count });
            if (answered++ === 0) at = this.deps.clock.now();
            for (const [r, v] of blockReadings(b, data)) {
              const problem = readingProblem(r, v);
              if (problem) this.reject(deviceId, problem, `${r.field} = ${String(v)}`);
              else values[r.field] = v;
            }
          } catch (err) {
            failure = err instanceof ModbusError ? err : new ModbusError('error', String(err));
            this.deps.logger.debug({ deviceId, block: `${b.function} ${b.start}+${b.count}`, err: failure.message }, 'modbus read failed');
            if (failure.kind !== 'exception') break; // timeout or no connection: the rest would fail the same way
          }
        }
      });
    } catch (err) {
      failure = err instanceof ModbusError ? err : new ModbusError('error', String(err)); // the line is closed
    } finally {
      p.running = false;
    }
    // The lease was lost under way: its failure is the connection closed on purpose, not the device's.
    if (gate && answered === 0 && !gate.mayContinue(p.leaseKey)) skipped = true;
    if (p.gone) return; // deleted, disabled or changed meanwhile: its replacement (if any) polls from now on
    if (skipped) { this.next(p); return; } // another node's line (or no longer ours): no outcome to count
    if (answered > 0) this.succeeded(p, at); else this.failed(p, failure);
    if (started > 0) this.m.pollLateness.observe(Math.max(0, started - p.due) / 1000);
    for (const fn of this.observers) fn({ deviceId, due: p.due, started, ok: answered > 0 });
    this.next(p);
    if (answered > 0 && Object.keys(values).length > 0) await this.submit(deviceId, at, values);
  }

  private succeeded(p: P, at: number): void {
    this.m.polls.labels('ok').inc();
    if (p.failures >= this.deps.options.offlineAfterFailures) this.deps.logger.info({ deviceId: p.settings.deviceId }, 'modbus device answers again');
    p.failures = 0;
    p.lastSuccess = at;
    this.deps.registry.setOnline(p.settings.deviceId, true, at);
  }

  private failed(p: P, err: ModbusError | null): void {
    this.m.polls.labels('failed').inc();
    p.failures++;
    const { deviceId } = p.settings;
    if (p.failures === this.deps.options.offlineAfterFailures) {
      this.deps.logger.warn({ deviceId, line: p.line.name, failures: p.failures, err: err?.message }, 'modbus device does not answer; offline');
      if (this.deps.registry.isOnline(deviceId)) this.deps.registry.setOnline(deviceId, false, p.lastSuccess ?? this.deps.clock.now());
    }
  }

  /** Fixed rate from the due time; a failing device backs off (interval × 2^(failures−1), capped). */
  private next(p: P): void {
    const intervalMs = p.settings.pollIntervalSec * 1000;
    const cap = Math.max(intervalMs, this.deps.options.maxBackoffSec * 1000);
    const step = p.failures === 0 ? intervalMs : Math.min(cap, intervalMs * 2 ** Math.min(30, p.failures - 1));
    const now = this.deps.clock.now();
    p.due = Math.max(p.due + step, now); // late: go now, do not catch up with a burst
    this.schedule(p, p.due - now);
  }

  private async submit(deviceId: string, ts: number, values: Record<string, Scalar>): Promise<void> {
    try {
      const res = await this.deps.sink(deviceId, ts, values);
      if (!res.ok) this.reject(deviceId, res.reason, res.detail ?? '');
    } catch (err) {
      // The store could not make them durable; a Modbus sensor keeps no backlog, so this poll's readings are lost.
      this.deps.logger.warn({ err, deviceId }, 'modbus readings not stored (telemetry store unavailable)');
    }
  }

  private reject(deviceId: string, reason: string, detail: string): void {
    this.deps.metrics.rejectedTotal.labels(reason).inc();
    this.deps.logger.debug({ deviceId, reason, detail }, 'modbus reading refused');
  }
}

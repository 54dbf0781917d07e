/**
 * The Modbus poller: reads every enabled Modbus device at its interval and
 * hands its readings to the telemetry pipeline (ingest), like an MQTT
 * telemetry message of that device.
 *
 * Per device, a poll is ONE job on its line (line.ts): the device's read
 * blocks (plan.ts, the fewest requests its map allows) go out back to back,
 * so devices sharing a gateway or serial line take turns. A block that times
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
 * Devices are (re)read from the side table at start, on every device change
 * in this process, and every few seconds (the `keng` CLI may change them
 * from another process; in cluster mode another node may, in PostgreSQL).
 * Reloads never overlap: one asked for while another runs runs after it.
 *
 * Cluster mode (a `gate`, leases.ts): every node knows every device, but
 * polls only the lines whose lease it holds. A poll starts only while the
 * gate says so, and every request of it asks again, so a line whose lease is
 * lost stops between two requests (and its connection is closed at once). A
 * poll skipped because the line is another node's changes nothing: no
 * failure, no presence. A line gained is polled at once.
 */
import { performance } from 'node:perf_hooks';
import type { Clock } from '../core/clock.js';
import type { EventBus, Scalar } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import { Errors } from '../core/errors.js';
import { readingProblem } from './codec.js';
import type { ModbusDevices } from './devices.js';
import { ModbusError, ModbusLine } from './line.js';
import { modbusMetrics, type ModbusMetrics } from './metrics.js';
import { blockReadings, planReads, type ReadBlock } from './plan.js';
import type { LineGate } from './leases.js';
import { lineKey, type ModbusSettings, type ModbusTransport } from './types.js';
import { prepareWrite, writeField, type PreparedWrite, type WriteResult } from './write.js';

/** One finished poll, for observers (benchmarks, tests): when it was due, when it got the line, its outcome. */
export interface PollRecord { deviceId: string; due: number; started: number; ok: boolean }

/** Hands one poll's readings to the telemetry pipeline (IngestService.submitReadings). */
export type ReadingSink = (deviceId: string, ts: number, values: Record<string, Scalar>) => Promise<{ ok: true } | { ok: false; reason: string; detail?: string }>;

export interface PollerOptions {
  requestTimeoutMs: number;
  offlineAfterFailures: number;
  maxBackoffSec: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /** How often the side table is re-read for changes made by other processes (default 5000 ms). */
  reloadIntervalMs?: number;
}

export interface PollerDeps {
  devices: Pick<ModbusDevices, 'all' | 'get' | 'registers' | 'fingerprint' | 'onChange' | 'catalog' | 'removed'>;
  registry: Pick<DeviceRegistryApi, 'getDevice' | 'setOnline' | 'isOnline'>;
  sink: ReadingSink;
  bus: Pick<EventBus, 'on'>;
  logger: Logger;
  metrics: Pick<Metrics, 'registry' | 'rejectedTotal'>;
  clock: Clock;
  options: PollerOptions;
  /** Cluster mode: which lines this node may poll (leases.ts). Absent: every line. */
  gate?: LineGate;
}

interface Polled {
  settings: ModbusSettings;
  fingerprint: string;
  blocks: ReadBlock[];
  line: ModbusLine;
  lineId: string;
  /** The line's key (types.ts lineKey): what leases are held for. */
  leaseKey: string;
  timer: NodeJS.Timeout | undefined;
  /** When the next poll is (or was) due (epoch ms). */
  due: number;
  failures: number;
  lastSuccess: number | null;
  running: boolean;
  gone: boolean;
}

export class ModbusPoller implements Component {
  readonly name = 'modbus';
  private readonly polled = new Map<string, Polled>();
  private readonly lines = new Map<string, ModbusLine>();
  private readonly m: ModbusMetrics;
  private readonly log: Logger;
  private readonly off: Array<() => void> = [];
  /** Devices (with their settings) whose map could not be resolved, already reported. */
  private readonly unresolved = new Set<string>();
  private reloadTimer: NodeJS.Timeout | undefined;
  /** The reload under way, and whether another was asked for meanwhile. */
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;
  private running = false;
  /** Polls under way (stop() waits for them). */
  private readonly inFlight = new Set<Promise<void>>();
  private readonly observers = new Set<(r: PollRecord) => void>();

  constructor(private readonly deps: PollerDeps) {
    this.m = modbusMetrics(deps.metrics.registry);
    this.log = deps.logger;
  }

  async start(): Promise<void> {
    this.deps.devices.catalog.list(); // load (and check) the shipped maps now: a broken one stops the start
    this.running = true;
    this.deps.gate?.attach({ gained: (k) => this.gained(k), lost: (k) => this.lost(k), drain: (k) => this.drain(k) });
    this.off.push(this.deps.devices.onChange(() => { void this.reload(); }));
    this.off.push(this.deps.bus.on('device.changed', (e) => {
      if (e.change === 'deleted') this.forgetDeleted(e.deviceId);
      else void this.reload();
    }));
    await this.reload();
    this.reloadTimer = setInterval(() => { void this.reload(); }, this.deps.options.reloadIntervalMs ?? 5000);
    this.reloadTimer.unref();
    this.log.info({ devices: this.polled.size, lines: this.lines.size }, 'modbus poller started');
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const off of this.off.splice(0)) off();
    if (this.reloadTimer) clearInterval(this.reloadTimer);
    await this.reloading?.catch(() => undefined);
    for (const p of this.polled.values()) this.forget(p);
    this.polled.clear();
    await Promise.allSettled([...this.inFlight]);
    await Promise.allSettled([...this.lines.values()].map((l) => l.close()));
    this.lines.clear();
    this.m.devices.set(0);
  }

  /** Calls `fn` after every poll; returns the unsubscribe. */
  onPoll(fn: (r: PollRecord) => void): () => void {
    this.observers.add(fn);
    return () => { this.observers.delete(fn); };
  }

  /**
   * Writes one value of a device's map (write.ts), on the device's line in
   * turn with the polls; resolves with the device's confirmation. `startBy`
   * (performance.now() time): a write that has not got the line by then is
   * refused unsent (a forwarded write whose caller would stop waiting before
   * it could finish: writes.ts).
   */
  write(deviceId: string, field: string, value: number | boolean, opts: { startBy?: number } = {}): Promise<WriteResult> {
    if (!this.running) return Promise.reject(Errors.NOT_READY('the Modbus poller is not running'));
    const gate = this.deps.gate;
    let key = '';
    return writeField({
      devices: this.deps.devices,
      isEnabled: (id) => this.isEnabled(id),
      lineFor: (s) => {
        key = lineKey(s.transport);
        // Another node polls this line: a second connection would fight over a gateway that takes one (docs/cluster.md).
        if (gate && !gate.mayStart(key)) throw new ModbusError('not_connected', NOT_OURS);
        return this.polled.get(s.deviceId)?.line ?? this.line(lineIdOf(s.transport), s.transport);
      },
      beforeSend: () => {
        // Asked again once the write has the line: the lease may have gone while it waited its turn.
        if (gate && !gate.mayStart(key)) throw new ModbusError('not_connected', NOT_OURS);
        if (opts.startBy !== undefined && performance.now() > opts.startBy) {
          throw new ModbusError('not_connected', 'not written: the line stayed busy with polls too long for the write to finish before the node that asked stops waiting; try again');
        }
      },
      metrics: this.m,
    }, deviceId, field, value);
  }

  /** The checks of a write (write.ts prepareWrite), without sending it: the node asked runs them before forwarding. */
  prepareWrite(deviceId: string, field: string, value: number | boolean): Promise<PreparedWrite> {
    return prepareWrite({ devices: this.deps.devices, isEnabled: (id) => this.isEnabled(id) }, deviceId, field, value);
  }

  /** Whether this node may write on the line now (always, in embedded mode). */
  mayWriteOn(key: string): boolean {
    return this.deps.gate?.mayStart(key) ?? true;
  }

  private isEnabled(deviceId: string): boolean {
    return this.deps.registry.getDevice(deviceId)?.enabled === true;
  }

  /**
   * Brings the polled set in line with the side table and the registry
   * (enabled devices only). Resolves when a reload that started after this
   * call has finished.
   */
  reload(): Promise<void> {
    if (!this.running) return Promise.resolve();
    if (this.reloading) {
      this.reloadAgain = true; // the loop below runs once more before it resolves
      return this.reloading;
    }
    const run = async (): Promise<void> => {
      do {
        this.reloadAgain = false;
        await this.reloadOnce();
      } while (this.reloadAgain && this.running);
    };
    this.reloading = run().finally(() => { this.reloading = null; });
    return this.reloading;
  }

  private async reloadOnce(): Promise<void> {
    let rows: ModbusSettings[];
    try {
      rows = await this.deps.devices.all();
    } catch (err) {
      this.log.warn({ err }, 'could not read the Modbus devices; keeping the current set');
      return;
    }
    if (!this.running) return;
    const seen = new Set<string>();
    for (const s of rows) {
      const device = this.deps.registry.getDevice(s.deviceId);
      if (!device || !device.enabled) continue;
      seen.add(s.deviceId);
      const fp = this.deps.devices.fingerprint(s);
      const cur = this.polled.get(s.deviceId);
      if (cur && cur.fingerprint === fp) continue;
      if (cur) this.forget(cur);
      this.add(s, fp);
    }
    for (const [id, p] of this.polled) {
      if (seen.has(id)) continue;
      this.forget(p);
      this.polled.delete(id);
      // A disabled device is not polled: it is offline from now on (a deleted one left the registry already).
      if (this.deps.registry.isOnline(id)) this.deps.registry.setOnline(id, false, p.lastSuccess ?? this.deps.clock.now());
    }
    this.closeIdleLines();
    this.deps.gate?.want(new Map([...this.polled.values()].map((p) => [p.leaseKey, p.settings.transport])));
    this.countPolled();
  }

  /** Devices this node polls: all, or (cluster mode) those on lines it holds. */
  private countPolled(): void {
    const gate = this.deps.gate;
    this.m.devices.set(gate ? [...this.polled.values()].filter((p) => gate.mayStart(p.leaseKey)).length : this.polled.size);
  }

  /** A line became this node's: its devices are polled now (spread over up to a second), not at their next interval. */
  private gained(key: string): void {
    if (!this.running) return;
    for (const p of this.polled.values()) {
      if (p.leaseKey !== key || p.running || p.gone) continue;
      if (p.timer) clearTimeout(p.timer);
      const delay = Math.floor(Math.random() * Math.min(1000, p.settings.pollIntervalSec * 1000));
      p.due = this.deps.clock.now() + delay;
      this.schedule(p, delay);
    }
    this.countPolled();
  }

  /** The line's lease is lost: its connection closes now (a request under way fails; no other goes out). */
  private lost(key: string): void {
    for (const l of this.linesOf(key)) void l.disconnect('lease lost');
    this.countPolled();
  }

  /** The line is given up: the poll under way finishes (no new one starts), then its connection closes. */
  private async drain(key: string): Promise<void> {
    await Promise.all(this.linesOf(key).map(async (l) => {
      await l.exclusive(async () => undefined).catch(() => undefined); // after the job under way (or at once when the line is closed)
      await l.disconnect();
    }));
    this.countPolled();
  }

  private linesOf(key: string): ModbusLine[] {
    return [...new Set([...this.polled.values()].filter((p) => p.leaseKey === key).map((p) => p.line))];
  }

  /** A deleted device: its settings go too (PostgreSQL has no foreign key to remove them), then the polled set follows. */
  private forgetDeleted(deviceId: string): void {
    this.deps.devices.removed(deviceId)
      .catch((err: unknown) => this.log.warn({ err, deviceId }, 'could not remove a deleted device\'s Modbus settings'))
      .finally(() => { void this.reload(); });
  }

  private add(settings: ModbusSettings, fingerprint: string): void {
    let blocks: ReadBlock[];
    try {
      blocks = planReads(this.deps.devices.registers(settings).registers);
    } catch (err) {
      const key = `${settings.deviceId}\u0000${fingerprint}`;
      if (!this.unresolved.has(key)) this.log.error({ err, deviceId: settings.deviceId }, 'Modbus device has a register map this release does not ship; not polled');
      this.unresolved.add(key); // said once, not at every reload
      return;
    }
    const lineId = lineIdOf(settings.transport);
    // The first poll soon, spread over up to a second so that devices loaded together do not queue at once.
    const delay = Math.floor(Math.random() * Math.min(1000, settings.pollIntervalSec * 1000));
    const p: Polled = {
      settings, fingerprint, blocks, line: this.line(lineId, settings.transport), lineId, leaseKey: lineKey(settings.transport), timer: undefined,
      due: this.deps.clock.now() + delay, failures: 0, lastSuccess: null, running: false, gone: false,
    };
    this.polled.set(settings.deviceId, p);
    this.schedule(p, delay);
  }

  private forget(p: Polled): void {
    p.gone = true;
    if (p.timer) clearTimeout(p.timer);
    p.timer = undefined;
  }

  private line(id: string, t: ModbusTransport): ModbusLine {
    let l = this.lines.get(id);
    if (!l) {
      const o = this.deps.options;
      l = new ModbusLine({
        transport: t, requestTimeoutMs: o.requestTimeoutMs, reconnectMinMs: o.reconnectMinMs, reconnectMaxMs: o.reconnectMaxMs,
        logger: this.log, metrics: this.m,
      });
      this.lines.set(id, l);
    }
    return l;
  }

  private closeIdleLines(): void {
    const used = new Set([...this.polled.values()].map((p) => p.lineId));
    for (const [id, l] of this.lines) {
      if (used.has(id)) continue;
      this.lines.delete(id);
      l.close().catch((err: unknown) => this.log.warn({ err, line: l.name }, 'closing an unused modbus line failed'));
    }
  }

  private schedule(p: Polled, delayMs: number): void {
    if (p.gone || !this.running) return;
    p.timer = setTimeout(() => {
      p.timer = undefined;
      const run = this.poll(p).finally(() => this.inFlight.delete(run));
      this.inFlight.add(run);
    }, Math.max(0, delayMs));
  }

  /** One poll: read every block on the line, then submit what was read and plan the next poll. */
  private async poll(p: Polled): Promise<void> {
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
            this.log.debug({ deviceId, block: `${b.function} ${b.start}+${b.count}`, err: failure.message }, 'modbus read failed');
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

  private succeeded(p: Polled, at: number): void {
    this.m.polls.labels('ok').inc();
    if (p.failures >= this.deps.options.offlineAfterFailures) this.log.info({ deviceId: p.settings.deviceId }, 'modbus device answers again');
    p.failures = 0;
    p.lastSuccess = at;
    this.deps.registry.setOnline(p.settings.deviceId, true, at);
  }

  private failed(p: Polled, err: ModbusError | null): void {
    this.m.polls.labels('failed').inc();
    p.failures++;
    const { deviceId } = p.settings;
    if (p.failures === this.deps.options.offlineAfterFailures) {
      this.log.warn({ deviceId, line: p.line.name, failures: p.failures, err: err?.message }, 'modbus device does not answer; offline');
      if (this.deps.registry.isOnline(deviceId)) this.deps.registry.setOnline(deviceId, false, p.lastSuccess ?? this.deps.clock.now());
    }
  }

  /** Fixed rate from the due time; a failing device backs off (interval × 2^(failures−1), capped). */
  private next(p: Polled): void {
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
      this.log.warn({ err, deviceId }, 'modbus readings not stored (telemetry store unavailable)');
    }
  }

  private reject(deviceId: string, reason: string, detail: string): void {
    this.deps.metrics.rejectedTotal.labels(reason).inc();
    this.log.debug({ deviceId, reason, detail }, 'modbus reading refused');
  }
}

const NOT_OURS = 'its line is not polled by this node now (another node polls it, or it is changing hands): not written; try again in a few seconds';

/** One line per TCP gateway; per serial port and its settings (the registry keeps one setting per port). */
function lineIdOf(t: ModbusTransport): string {
  return t.type === 'modbus-tcp' ? lineKey(t) : `${lineKey(t)}@${t.baudRate}/${t.parity}`;
}

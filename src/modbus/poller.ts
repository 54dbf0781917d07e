/**
 * The Modbus poller: reads every enabled Modbus device at its interval and
 * hands its readings to the telemetry pipeline (ingest), like an MQTT
 * telemetry message of that device. What one poll does, how its outcome is
 * counted and when the next one is due: poll.ts. This file owns which
 * devices are polled, their lines, their timers, and line ownership.
 *
 * Devices are (re)read from the side table at start, on every device change
 * in this process, and every few seconds (the `keng` CLI may change them
 * from another process; in cluster mode another node may, in PostgreSQL).
 * Reloads never overlap: one asked for while another runs runs after it.
 *
 * Cluster mode (a `gate`, leases.ts): every node knows every device, but
 * polls only the lines whose lease it holds (each poll asks the gate:
 * poll.ts). A line whose lease is lost has its connection closed at once;
 * a line gained is polled at once.
 */
import { performance } from 'node:perf_hooks';
import type { Clock } from '../core/clock.js';
import type { EventBus } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import { Errors } from '../core/errors.js';
import type { ModbusDevices } from './devices.js';
import { ModbusError, ModbusLine } from './line.js';
import { modbusMetrics, type ModbusMetrics } from './metrics.js';
import { planReads, type ReadBlock } from './plan.js';
import { PollCycle, type PollRecord, type PollState, type ReadingSink } from './poll.js';
import type { LineGate } from './leases.js';
import { lineKey, type ModbusSettings, type ModbusTransport } from './types.js';
import { prepareWrite, writeField, type PreparedWrite, type WriteResult } from './write.js';

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

interface Polled extends PollState {
  fingerprint: string;
  lineId: string;
  timer: NodeJS.Timeout | undefined;
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
  private readonly cycle: PollCycle<Polled>;

  constructor(private readonly deps: PollerDeps) {
    this.m = modbusMetrics(deps.metrics.registry);
    this.log = deps.logger;
    this.cycle = new PollCycle<Polled>(deps, this.m, (p, delayMs) => this.schedule(p, delayMs));
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
    return this.cycle.onPoll(fn);
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
      const run = this.cycle.run(p).finally(() => this.inFlight.delete(run));
      this.inFlight.add(run);
    }, Math.max(0, delayMs));
  }
}

const NOT_OURS = 'its line is not polled by this node now (another node polls it, or it is changing hands): not written; try again in a few seconds';

/** One line per TCP gateway; per serial port and its settings (the registry keeps one setting per port). */
function lineIdOf(t: ModbusTransport): string {
  return t.type === 'modbus-tcp' ? lineKey(t) : `${lineKey(t)}@${t.baudRate}/${t.parity}`;
}

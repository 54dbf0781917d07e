/**
 * The server's purger (telemetry.onDeviceDelete = 'purge', `keng devices purge`): runs the purges
 * recorded in `device_purges` (purge-jobs.ts) against the telemetry store, one at a time, in the
 * background: the deletion itself answers at once.
 *
 * A purge runs PURGE_SETTLE_MS after the deletion, in two stages kept in its row: 'local' (embedded
 * store, InfluxDB queue, dead letters) then 'remote' (InfluxDB). The stores work in bounded chunks
 * (types.ts TelemetryPurge), so ingest keeps committing meanwhile. A stage that fails (InfluxDB
 * down, the store stopping) is retried with back-off, also after a restart; each stage is
 * idempotent, so a purge cut short by a crash simply runs again. Until it is done the tombstone
 * keeps the readings out of sight anyway (a device registered again under the id starts its
 * history after the deletion).
 *
 * Which readings: with no device of that id registered, every reading stored under the id (also
 * ones dated after the deletion by a clock running ahead); with a device registered again, only
 * those from before the deletion, so the new device keeps what it stored.
 *
 * The end is audited (`device.purge`, actor `system`: who asked, what was removed where). What is
 * kept on purpose, as records of what the commune did rather than the device's data: broadcast
 * targets, the broadcast log (proof of play, append-only) and missed-broadcast rows, alerts (their
 * list of speakers) and the audit log itself. Latest values, attributes, presence (device_state),
 * pending RPCs and Modbus settings go with the device row in both modes (ON DELETE CASCADE).
 */
import type { AuditRecorder } from '../audit/index.js';
import type { Clock, Component, EventBus, Logger } from '../core/index.js';
import type { Db } from '../storage/sql/index.js';
import type { PurgeCounts, TelemetryPurge } from '../storage/telemetry/index.js';
import { PURGE_SETTLE_MS, PurgeJobs, type PurgeJob } from './purge-jobs.js';
import type { Device } from './types.js';

export interface DevicePurgerDeps {
  /** The state store through the port (PostgreSQL in cluster mode: any node may run a purge, one at a time). */
  db: Db<unknown>;
  store: TelemetryPurge;
  registry: { getDevice(id: string): Device | undefined };
  audit: AuditRecorder;
  bus: EventBus;
  logger: Logger;
  clock: Clock;
  /** How often the table is looked at for purges asked by another process (`keng devices purge`). */
  pollMs?: number;
}

/** Retry back-off of a failed stage (a store down): doubles from the first to the last. */
export const PURGE_RETRY_MIN_MS = 5_000;
export const PURGE_RETRY_MAX_MS = 300_000;
const POLL_MS = 10_000;

export class DevicePurger implements Component {
  readonly name = 'device-purger';
  private jobs: PurgeJobs | null = null;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private running: Promise<void> | null = null;
  private again = false;
  private abort = new AbortController();
  private off: (() => void) | null = null;

  constructor(private readonly d: DevicePurgerDeps) {}

  async start(): Promise<void> {
    this.jobs = new PurgeJobs(this.d.db);
    this.abort = new AbortController();
    this.off = this.d.bus.on('device.changed', (e) => { if (e.change === 'deleted') this.wakeIn(PURGE_SETTLE_MS + 50); });
    const pending = (await this.jobs.list()).length;
    if (pending) this.d.logger.info({ pending }, 'device purges to finish');
    this.wakeIn(0);
  }

  async stop(): Promise<void> {
    this.off?.(); this.off = null;
    this.abort.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null; this.timerAt = Infinity;
    await this.running?.catch(() => undefined);
    this.jobs = null;
  }

  /** Purges still to do (or retrying), oldest first. */
  pending(): Promise<PurgeJob[]> { return this.jobs?.list() ?? Promise.resolve([]); }

  /** Run the due purges now (tests, and after an explicit request in this process). */
  runNow(): Promise<void> {
    if (this.running) { this.again = true; return this.running; }
    this.running = (async () => {
      do { this.again = false; await this.runDue(); } while (this.again && !this.abort.signal.aborted);
    })().catch((err: unknown) => { this.d.logger.error({ err }, 'device purges failed'); })
      .finally(() => {
        this.running = null;
        this.rearm().catch((err: unknown) => { this.d.logger.warn({ err }, 'device purges: could not look for the next one'); this.wakeIn(this.d.pollMs ?? POLL_MS); });
      });
    return this.running;
  }

  private wakeIn(ms: number): void {
    if (this.abort.signal.aborted) return;
    const at = Date.now() + ms;
    if (this.timer && at >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => { this.timer = null; this.timerAt = Infinity; void this.runNow(); }, ms);
    this.timer.unref();
  }

  /** Next look: when the earliest purge is due, or the poll period for purges asked elsewhere. */
  private async rearm(): Promise<void> {
    const jobs = this.jobs;
    if (!jobs || this.abort.signal.aborted) return;
    const next = await jobs.nextAt();
    const poll = this.d.pollMs ?? POLL_MS;
    this.wakeIn(next === null ? poll : Math.max(50, Math.min(poll, next - this.d.clock.now())));
  }

  private async runDue(): Promise<void> {
    for (;;) {
      const jobs = this.jobs;
      if (!jobs || this.abort.signal.aborted) return;
      const job = await jobs.due(this.d.clock.now());
      if (!job) return;
      await this.run(jobs, job);
    }
  }

  private async run(jobs: PurgeJobs, job: PurgeJob): Promise<void> {
    const { store, logger, clock } = this.d;
    const signal = this.abort.signal;
    const removed: PurgeCounts = { ...job.removed };
    const id = job.deviceId;
    // Registered again since: its own readings stay (see the top of this file).
    const before = this.d.registry.getDevice(id) ? job.deletedAt + 1 : null;
    let stage = job.stage;
    try {
      if (stage === 'local') {
        await store.purgeLocal(id, before, removed, signal);
        await jobs.advance(job, removed);
        stage = 'remote';
      }
      await store.purgeRemote(id, before, removed, signal);
    } catch (err) {
      if (signal.aborted) return; // stopping: resumed at the next start
      const delay = Math.min(PURGE_RETRY_MAX_MS, PURGE_RETRY_MIN_MS * 2 ** Math.min(job.attempts, 16));
      const message = (err as Error).message ?? String(err);
      await jobs.fail(job, removed, message, clock.now() + delay);
      logger.warn({ deviceId: id, stage, attempts: job.attempts + 1, retryInMs: delay, error: message, removed },
        'purging a deleted device\'s readings failed; retried later (they stay hidden meanwhile)');
      return;
    }
    const finished = await this.d.db.write(async (trx) => {
      if (!await PurgeJobs.finish(trx, job)) return false; // asked again meanwhile: that request runs next
      await this.d.audit.record({
        actor: 'system', action: 'device.purge', target: `device:${id}`,
        after: { requestedBy: job.requestedBy, deletedAt: job.deletedAt, before, removed, attempts: job.attempts + 1 },
      }, trx);
      return true;
    });
    if (finished) logger.info({ deviceId: id, removed, before }, 'deleted device\'s readings purged');
  }
}

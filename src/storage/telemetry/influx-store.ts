/**
 * InfluxDB telemetry store (docs/telemetry-storage.md): `writeBatch` commits the batch as
 * line protocol into the on-disk queue `<dataDir>/influx-queue.db` (worker
 * thread, durable before it resolves); the Forwarder drains the queue to the
 * server. Readings therefore survive an outage of any length and a controller
 * restart. Queries go to the server: readings still queued are not visible
 * until forwarded (they are not lost).
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../../config/index.js';
import { Errors } from '../../core/errors.js';
import { Backoff } from './backoff.js';
import { withTimeout } from '../../core/async.js';
import { Forwarder } from './forwarder.js';
import type { InfluxBackend } from './influx-backend.js';
import { FIELD_TYPE_CONFLICT } from './field-types.js';
import type { EnqueueResult, LearnResult, QueueTotals } from './outbox-db.js';
import { realTimers } from './timers.js';
import type { HistoryPoint, HistoryQuery, PurgeCounts, TelemetryPurge, TelemetryRecord, TelemetryStore, TelemetryStoreDeps, WriteResult } from './types.js';
import type { QueuePurgeChunk } from './outbox-purge.js';
import { normaliseQuery } from './windows.js';
import { packRecords } from './record-pack.js';
import { WorkerClient } from './worker-client.js';

/** What the InfluxDB store needs: the factory's deps (timers and random drive the retry back-off in tests). */
export type InfluxStoreDeps = TelemetryStoreDeps;

/** Repeat the "queue is filling up" warning this often while above the threshold. */
export const QUEUE_WARN_REPEAT_MS = 5 * 60_000;
/**
 * A purge step of the queue stops after this many rows or this much work, whichever comes first:
 * the queue's worker (and every enqueue, so every PUBACK) waits for the step.
 */
export const PURGE_QUEUE_ROWS = 64;
export const PURGE_QUEUE_BUDGET_MS = 20;
/** Dead-letter rows deleted per purge step. */
export const PURGE_DEAD_ROWS = 5_000;

export class InfluxTelemetryStore implements TelemetryStore, TelemetryPurge {
  readonly name = 'telemetry-store';
  readonly kind: 'influxdb-v1' | 'influxdb-v2';
  readonly file: string;
  private outbox: WorkerClient | null = null;
  private forwarder: Forwarder | null = null;
  private totals: QueueTotals = { rows: 0, readings: 0, bytes: 0, dead: 0 };
  private warnActive = false;
  private lastWarnAt = 0;
  private drainWaiters: (() => void)[] = [];
  private learning: Promise<void> | null = null;

  constructor(private readonly config: Readonly<Config>, private readonly backend: InfluxBackend, private readonly deps: InfluxStoreDeps) {
    this.kind = backend.kind;
    this.file = path.join(deps.dataDir, 'influx-queue.db');
  }

  private get cfg(): Readonly<Config['influx']> { return this.config.influx; }

  async start(): Promise<void> {
    mkdirSync(this.deps.dataDir, { recursive: true });
    const outbox = new WorkerClient('influx-queue', {
      role: 'outbox', path: this.file, sync: this.config.telemetry.sync,
      measurement: this.cfg.measurement, batchLines: this.cfg.batchLines, capBytes: this.cfg.queueCapBytes,
    }, this.deps.logger);
    await outbox.start();
    this.outbox = outbox;
    this.deps.metrics.queueCapBytes.set(this.cfg.queueCapBytes);
    this.setTotals(await outbox.call<QueueTotals>('stats'));
    try {
      await this.backend.init();
      await this.learnFieldTypes();
    } catch (err) {
      this.deps.logger.warn({ err: (err as Error).message, url: this.cfg.url }, 'InfluxDB not reachable at start; readings are queued on disk meanwhile');
    }
    const fw = new Forwarder({
      outbox, backend: this.backend, logger: this.deps.logger, metrics: this.deps.metrics, clock: this.deps.clock,
      timers: this.deps.timers ?? realTimers,
      backoff: new Backoff(this.cfg.retryMinMs, this.cfg.retryMaxMs, this.deps.random),
      batchLines: this.cfg.batchLines,
      onTotals: (t) => this.setTotals(t),
      // Again after an outage: the server may have been replaced or changed meanwhile.
      onServerUp: () => { this.learnFieldTypes().catch((err: unknown) => this.deps.logger.debug({ err }, 'reading InfluxDB field types failed')); },
    });
    this.forwarder = fw;
    fw.start(this.totals.rows);
    this.deps.logger.info({ url: this.cfg.url, api: this.cfg.api, queue: this.file, queuedReadings: this.totals.readings, deadLettered: this.totals.dead },
      'InfluxDB telemetry store started');
  }

  /**
   * Read the field types the server already holds into the queue's type
   * table (field-types.ts), so a fresh Keng on an existing database sets
   * conflicting values aside instead of sending them. Best effort: while the
   * server is down this waits for the forwarder's first successful write.
   */
  private learnFieldTypes(): Promise<void> {
    if (!this.backend.fieldTypes) return Promise.resolve();
    this.learning ??= (async () => {
      try {
        const pairs = await this.backend.fieldTypes!();
        const outbox = this.outbox;
        if (!outbox) return;
        const r = await outbox.call<LearnResult>('learnTypes', pairs);
        if (r.replaced.length) {
          this.deps.logger.warn({ fields: r.replaced }, 'InfluxDB holds other types for these fields than Keng had seen; using the server\'s');
        }
      } finally { this.learning = null; }
    })();
    return this.learning;
  }

  settleFinished(): void { this.outbox?.poll(); }

  async writeBatch(records: TelemetryRecord[]): Promise<WriteResult> {
    const outbox = this.outbox;
    if (!outbox) throw Errors.STORE_UNAVAILABLE('InfluxDB queue is not started');
    if (!records.length) return { written: 0, duplicates: 0 };
    let res: EnqueueResult;
    try {
      const packed = packRecords(records); // compact hand-off to the queue's worker (record-pack.ts)
      res = await outbox.callTransfer<EnqueueResult>('enqueue', [packed, this.deps.clock.now()], [packed.nums.buffer as ArrayBuffer]);
    } catch (err) {
      this.deps.metrics.storeErrorsTotal.inc({ store: this.kind, kind: 'queue' });
      this.deps.logger.error({ err }, 'writing to the InfluxDB queue failed');
      throw Errors.STORE_UNAVAILABLE((err as Error).message);
    }
    this.setTotals(res);
    if (res.full) {
      this.deps.metrics.storeErrorsTotal.inc({ store: this.kind, kind: 'queue_full' });
      this.deps.logger.warn({ queuedBytes: res.bytes, capBytes: this.cfg.queueCapBytes, refusedBytes: res.needed }, 'InfluxDB queue is full; refusing readings');
      throw Errors.QUEUE_FULL(res.bytes);
    }
    this.forwarder?.wake(res.rows);
    if (!res.setAside) return { written: res.addedReadings, duplicates: 0 };
    this.deps.metrics.readingsDeadLetteredTotal.inc({ store: this.kind, reason: FIELD_TYPE_CONFLICT }, res.setAside.length);
    this.deps.logger.warn({ readings: res.setAside.length, first: res.setAside[0] }, 'readings whose type differs from their field\'s were moved to the dead-letter table');
    return { written: res.addedReadings, duplicates: 0, setAside: res.setAside };
  }

  private setTotals(t: QueueTotals): void {
    this.totals = { rows: t.rows, readings: t.readings, bytes: t.bytes, dead: t.dead };
    const m = this.deps.metrics;
    m.queueDepth.set(t.readings);
    m.queueBytes.set(t.bytes);
    this.checkWarn();
    if (t.rows === 0 && this.drainWaiters.length) {
      const w = this.drainWaiters; this.drainWaiters = [];
      for (const f of w) f();
    }
  }

  /** Brief §3: warn once when usage crosses `queueWarnRatio` of the cap, then every few minutes while above. */
  private checkWarn(): void {
    const cap = this.cfg.queueCapBytes;
    const above = this.totals.bytes >= this.cfg.queueWarnRatio * cap;
    const now = this.deps.clock.now();
    if (above && (!this.warnActive || now - this.lastWarnAt >= QUEUE_WARN_REPEAT_MS)) {
      this.warnActive = true;
      this.lastWarnAt = now;
      this.deps.logger.warn({ queuedBytes: this.totals.bytes, capBytes: cap, ratio: +(this.totals.bytes / cap).toFixed(3), queuedReadings: this.totals.readings, server: this.forwarder?.server, lastError: this.forwarder?.lastError },
        'InfluxDB queue is filling up; readings will be refused when the cap is reached');
    } else if (!above && this.warnActive) {
      this.warnActive = false;
      this.deps.logger.info({ queuedBytes: this.totals.bytes, capBytes: cap }, 'InfluxDB queue back below the warning threshold');
    }
  }

  /** One purge step at a time between two forwarder writes (Forwarder.exclusive); directly when it is not running. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.forwarder ? this.forwarder.exclusive(fn) : fn();
  }

  /** The queue, chunk by chunk, then the dead letters: the device's readings not yet in InfluxDB. */
  async purgeLocal(deviceId: string, before: number | null, removed: PurgeCounts, signal: AbortSignal): Promise<void> {
    const outbox = (): WorkerClient => {
      signal.throwIfAborted();
      if (!this.outbox) throw Errors.STORE_UNAVAILABLE('InfluxDB queue is not started');
      return this.outbox;
    };
    let afterId = 0;
    for (;;) {
      const c = await this.exclusive(() => outbox().call<QueuePurgeChunk & { totals: QueueTotals }>('purgeQueue', deviceId, before, PURGE_QUEUE_ROWS, afterId, PURGE_QUEUE_BUDGET_MS));
      removed.queuedReadings = (removed.queuedReadings ?? 0) + c.readings;
      this.setTotals(c.totals);
      this.forwarder?.wake(c.totals.rows);
      if (c.done) break;
      afterId = c.lastId;
    }
    for (;;) {
      const c = await this.exclusive(() => outbox().call<{ dead: number; done: boolean; totals: QueueTotals }>('purgeDead', deviceId, before, PURGE_DEAD_ROWS));
      removed.deadReadings = (removed.deadReadings ?? 0) + c.dead;
      this.setTotals(c.totals);
      if (c.done) break;
    }
  }

  /**
   * InfluxDB itself, once the queue holds nothing of the device: between two forwarder writes, so
   * no write that left before the queue was purged can land after this.
   */
  async purgeRemote(deviceId: string, before: number | null, removed: PurgeCounts, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    const n = await this.exclusive(() => this.backend.deleteDevice(deviceId, before, signal));
    if (n !== null) removed.influxReadings = (removed.influxReadings ?? 0) + n;
  }

  async query(q: HistoryQuery): Promise<HistoryPoint[]> {
    try { normaliseQuery(q); } catch (err) { throw Errors.VALIDATION((err as Error).message); }
    return this.backend.query(q);
  }

  /** ok = the on-disk queue is usable; InfluxDB being down is reported in detail only (the queue covers it). */
  async health(): Promise<{ ok: boolean; detail: Record<string, unknown> }> {
    let ok = false;
    let queueError: string | undefined;
    try { ok = !!this.outbox && await withTimeout(this.outbox.call<boolean>('ping'), 5_000) === true; } catch (err) { queueError = (err as Error).message; }
    const up = await this.backend.ping(Math.min(this.cfg.timeoutMs, 2_000));
    const detail: Record<string, unknown> = {
      kind: this.kind,
      server: up ? 'up' : 'down',
      queued: this.totals.readings,
      queuedBytes: this.totals.bytes,
      queueCapBytes: this.cfg.queueCapBytes,
      deadLettered: this.totals.dead,
      lastError: this.forwarder?.lastError ?? null,
    };
    if (queueError) detail.queueError = queueError;
    return { ok, detail };
  }

  /** Current queue totals (readings, bytes, rows, dead-lettered rows). */
  queueStats(): QueueTotals { return { ...this.totals }; }

  async drain(timeoutMs: number): Promise<boolean> {
    if (this.totals.rows === 0) return true;
    let t: NodeJS.Timeout | undefined;
    let waiter: (() => void) | undefined;
    const done = await Promise.race([
      new Promise<boolean>((resolve) => { waiter = () => resolve(true); this.drainWaiters.push(waiter); }),
      new Promise<boolean>((resolve) => { t = setTimeout(() => resolve(false), timeoutMs); }),
    ]);
    clearTimeout(t);
    this.drainWaiters = this.drainWaiters.filter((w) => w !== waiter);
    return done;
  }

  async stop(): Promise<void> {
    const fw = this.forwarder; const outbox = this.outbox;
    this.forwarder = null; this.outbox = null;
    await fw?.stop(this.cfg.timeoutMs + 5_000);
    await outbox?.close();
    await this.backend.close();
    if (this.totals.rows) this.deps.logger.info({ queuedReadings: this.totals.readings, queuedBytes: this.totals.bytes }, 'InfluxDB queue kept on disk for the next start');
  }
}

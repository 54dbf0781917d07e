/**
 * Group commit: many telemetry messages share one durable store write.
 *
 * Spec device-protocol.md "Telemetry payload", delivery guarantee: "when the
 * server sends PUBACK for a QoS 1 telemetry message, its readings are on disk".
 * The broker awaits the ingest handler before PUBACK, and the handler awaits
 * submit(), which resolves only after store.writeBatch (durable on disk) has
 * resolved for the batch holding those records.
 *
 * Batching: submissions gather for `intervalMs` after the first one (or until
 * `maxReadings` readings are queued), then go to the store in ONE writeBatch.
 * At most one writeBatch is in flight; what arrives meanwhile accumulates and
 * is written when the current write finishes and its own timer has expired:
 * under load the batches grow instead of the number of writes (back-pressure).
 * A failed write rejects every submitter of that batch; later batches still run.
 */
import { Errors } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { TelemetryRecord, TelemetryStore, WriteResult } from '../storage/telemetry/types.js';

/** What one submitter gets back once its records are durable. */
export interface CommitShare {
  /** Readings (device, ts, field) this submission contributed. */
  readings: number;
  /** Readings in the whole batch written with it. */
  batchReadings: number;
  /** The store's result for the whole batch (written/duplicates are not attributable per submitter). */
  batch: WriteResult;
}

export interface GroupCommitOptions {
  store: Pick<TelemetryStore, 'writeBatch'>;
  /** config.telemetry.commitIntervalMs: longest wait to gather a batch (0 = next turn of the event loop). */
  intervalMs: number;
  /** config.telemetry.commitMaxReadings: write as soon as this many readings are queued. */
  maxReadings: number;
  /** config.telemetry.commitMaxInFlight: batch writes that may overlap (default 2): the next batch is handed to the store while one commits. */
  maxInFlight?: number;
  /** commitLatency only: the store counts written readings and duplicates itself. */
  metrics?: Pick<Metrics, 'commitLatency'>;
  logger?: Pick<Logger, 'warn' | 'error'>;
  /** Monotonic ms for latency (default performance.now). */
  now?: () => number;
}

interface Pending {
  records: TelemetryRecord[];
  readings: number;
  at: number;
  resolve: (share: CommitShare) => void;
  reject: (err: unknown) => void;
}

export class GroupCommitter {
  private readonly store: Pick<TelemetryStore, 'writeBatch'>;
  private readonly intervalMs: number;
  private readonly maxReadings: number;
  private readonly now: () => number;
  private queue: Pending[] = [];
  private queuedReadings = 0;
  /** The queue's timer has expired (or a flush was asked): write as soon as nothing is in flight. */
  private due = false;
  private cancelTimer: (() => void) | null = null;
  /** Writes under way; at most maxInFlight (the store's worker commits overlapping writes together). */
  private readonly inFlight = new Set<Promise<void>>();
  private readonly maxInFlight: number;
  private closed = false;
  /** Batches written (tests, diagnostics). */
  batches = 0;

  constructor(private readonly opts: GroupCommitOptions) {
    this.store = opts.store;
    this.intervalMs = opts.intervalMs;
    this.maxReadings = Math.max(1, opts.maxReadings);
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 2);
    this.now = opts.now ?? (() => performance.now());
  }

  /** Readings waiting for a write (not counting the one in flight). */
  get pendingReadings(): number { return this.queuedReadings; }

  /**
   * Queue records for the next batch; resolves when they are durable, rejects
   * with the store's error if the batch write failed (or NOT_READY once closed).
   * `readings` = number of (ts, field) readings, counted from records if omitted.
   */
  submit(records: TelemetryRecord[], readings: number = countReadings(records)): Promise<CommitShare> {
    if (this.closed) return Promise.reject(Errors.NOT_READY('ingest is stopping'));
    return new Promise<CommitShare>((resolve, reject) => {
      this.queue.push({ records, readings, at: this.now(), resolve, reject });
      this.queuedReadings += readings;
      this.schedule();
    });
  }

  /** Write everything queued now and wait until nothing is pending or in flight. Never rejects. */
  async flush(): Promise<void> {
    while (this.queue.length > 0 || this.inFlight.size > 0) {
      if (this.queue.length > 0) {
        this.due = true;
        this.schedule();
      }
      if (this.inFlight.size > 0) await Promise.race(this.inFlight);
    }
  }

  /** Refuse new submissions, then flush (stop()). */
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
  }

  /** Accept submissions again (start() after stop()). */
  open(): void { this.closed = false; }

  private schedule(): void {
    if (this.queue.length === 0) return;
    if (this.queuedReadings >= this.maxReadings) this.due = true;
    if (this.due) {
      this.clearTimer();
      if (this.inFlight.size < this.maxInFlight) this.writeNext();
      return;
    }
    if (!this.cancelTimer) this.startTimer();
  }

  private startTimer(): void {
    const fire = (): void => {
      this.cancelTimer = null;
      this.due = true;
      this.schedule();
    };
    if (this.intervalMs > 0) {
      const t = setTimeout(fire, this.intervalMs);
      this.cancelTimer = () => clearTimeout(t);
    } else {
      const t = setImmediate(fire);
      this.cancelTimer = () => clearImmediate(t);
    }
  }

  private clearTimer(): void {
    if (this.cancelTimer) {
      this.cancelTimer();
      this.cancelTimer = null;
    }
  }

  /** Takes whole submissions (never splits one) until maxReadings is reached, and writes them. */
  private writeNext(): void {
    let take = 0;
    let readings = 0;
    while (take < this.queue.length && readings < this.maxReadings) readings += this.queue[take++]!.readings;
    const batch = take === this.queue.length ? this.queue : this.queue.slice(0, take);
    this.queue = take === this.queue.length ? [] : this.queue.slice(take);
    this.queuedReadings -= readings;
    // What stays queued was already due: it goes right after this write.
    this.due = this.queue.length > 0;

    let records: TelemetryRecord[];
    if (batch.length === 1) {
      records = batch[0]!.records;
    } else {
      records = [];
      for (const p of batch) for (const r of p.records) records.push(r);
    }
    const startedAt = batch[0]!.at;
    this.batches++;
    // `write` is read in `finally`, which runs after the first await, when it holds this very promise.
    let write: Promise<void> = Promise.resolve();
    write = (async () => {
      try {
        // Deferred call: a synchronous throw must not settle before inFlight is assigned.
        const result = await Promise.resolve().then(() => this.store.writeBatch(records));
        this.opts.metrics?.commitLatency.observe((this.now() - startedAt) / 1000);
        for (const p of batch) p.resolve({ readings: p.readings, batchReadings: readings, batch: result });
      } catch (err) {
        // One log line per failed batch (not per message).
        this.opts.logger?.warn({ err, readings, messages: batch.length }, 'telemetry batch write failed; messages are not acknowledged');
        for (const p of batch) p.reject(err);
      } finally {
        this.inFlight.delete(write);
        this.schedule();
      }
    })();
    this.inFlight.add(write);
  }
}

export function countReadings(records: TelemetryRecord[]): number {
  let n = 0;
  for (const r of records) for (const _ in r.values) n++;
  return n;
}

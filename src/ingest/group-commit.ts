/**
 * Group commit: many telemetry messages share one durable store write.
 *
 * Spec device-protocol.md "Telemetry payload", delivery guarantee: "when the
 * server sends PUBACK for a QoS 1 telemetry message, its readings are on disk".
 * The broker awaits the ingest handler before PUBACK, and the handler awaits
 * submit() / join(), which resolve only after store.writeBatch (durable on
 * disk) has resolved for the batch holding those records.
 *
 * Batching adapts to the writer; nothing waits for a timer while the writer
 * could take it (group commit as PostgreSQL and InnoDB do it: whatever queued
 * during one disk sync goes in the next):
 * - a write slot free: the open batch goes at the next turn of the event loop
 *   (setImmediate), so the messages parsed from the same socket reads share
 *   it; a lone message waits for nothing but its own write. With writes
 *   already under way, `intervalMs` (default 0) may hold it back a little
 *   longer to gather more;
 * - with one write in flight (`maxInFlight` 1, the default), whatever
 *   gathers while a commit runs goes in the next one, which starts the moment
 *   this thread sees the commit finish: the store settles finished commits
 *   between two messages (`settleFinished`, polled in join()), not only at
 *   the next turn of the event loop. Measured on 2 cores, 20 devices × 20 in
 *   flight: 1 slot ~95k msg/s, 2 slots ~76-83k, 8 slots ~72-97k (fewer, larger
 *   transactions cost the writer thread less CPU, and it shares the cores
 *   with the broker). With more slots the store's writer thread commits every
 *   write queued behind the one it is committing in ONE transaction
 *   (sqlite-worker.ts);
 * - all `maxInFlight` slots busy: submissions gather, and the batch goes the
 *   moment a write completes;
 * - `maxReadings` readings queued: the batch goes as soon as a slot is free;
 * - commit spacing (`spacingMs`): once commits carry more than one message,
 *   the next one starts no sooner than `spacingMs` after the last one
 *   started, so under load the batches grow instead of the commits per
 *   second (MySQL's binlog_group_commit_sync_delay and PostgreSQL's
 *   commit_delay do the same). On the 2-core bench machine each commit costs
 *   the writer ~0.4 ms of CPU and the broker thread a hand-off and a wake-up
 *   whatever its size, and the load generator, the broker and the writer
 *   share the cores: at 200 devices × 1 in flight (commits of ~30 messages)
 *   2-4 ms gave 3-14 % more acknowledged messages per second in alternating
 *   runs, at 20 × 20 between nothing and ~10 %, at 100 × 64 (commits of
 *   ~1,000) no change (docs/benchmarks.md). After a commit of a single
 *   message (one device, nothing else arriving) nothing is held, so a lone
 *   device's messages are not slowed.
 * At most `maxInFlight` writeBatch calls are under way; what arrives meanwhile
 * accumulates: under load the batches grow instead of the number of writes
 * (back-pressure). A submission is never split across batches.
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
  store: Pick<TelemetryStore, 'writeBatch' | 'settleFinished'>;
  /**
   * config.telemetry.commitIntervalMs: while a write is under way and another may
   * start (maxInFlight), the longest a batch gathers before it goes too
   * (0 = at the next turn of the event loop). An idle writer never waits for it.
   */
  intervalMs: number;
  /** config.telemetry.commitMaxReadings: write as soon as this many readings are queued. */
  maxReadings: number;
  /** config.telemetry.commitMaxInFlight: batch writes that may be under way at once (default 1). */
  maxInFlight?: number;
  /**
   * config.telemetry.commitSpacingMs: after a commit of more than one message, the next one
   * starts no sooner than this after it started (default 0: at once).
   */
  spacingMs?: number;
  /** commitLatency only: the store counts written readings and duplicates itself. */
  metrics?: Pick<Metrics, 'commitLatency'>;
  logger?: Pick<Logger, 'warn' | 'error'>;
  /** Monotonic ms for latency (default performance.now). */
  now?: () => number;
}

/** What every submitter of one batch shares once it is durable. */
export interface BatchResult {
  /** Readings in the whole batch. */
  batchReadings: number;
  /** The store's result for the whole batch. */
  batch: WriteResult;
}

/**
 * One group commit. Submissions join the open batch; it closes when it holds
 * maxReadings or when it is written. All its submitters share ONE promise
 * (`durable`): per message that saves a Promise, its resolve/reject closures
 * and a queue entry, which at ~20,000 messages/s held in flight for a commit
 * (~100-200 ms) were a large part of the broker thread's GC work.
 */
interface Batch {
  records: TelemetryRecord[];
  readings: number;
  submitters: number;
  /** First submission (monotonic ms): commit latency is measured from here. */
  at: number;
  durable: Promise<BatchResult>;
  resolve: (r: BatchResult) => void;
  reject: (err: unknown) => void;
}

export class GroupCommitter {
  private readonly store: Pick<TelemetryStore, 'writeBatch' | 'settleFinished'>;
  private readonly intervalMs: number;
  private readonly maxReadings: number;
  private readonly now: () => number;
  /** The open batch, gathering submissions (null until the next submission). */
  private gathering: Batch | null = null;
  /** Full batches waiting for a write slot, oldest first. */
  private readonly full: Batch[] = [];
  private queuedReadings = 0;
  /** The open batch may go as soon as a write slot is free (writer idle at the next turn, a write completed, its time is up, or a flush). */
  private due = false;
  /** Cancels the pending setImmediate / setTimeout that will make the open batch due. */
  private cancelTimer: (() => void) | null = null;
  /** The pending timer is the idle writer's (the next turn, or the end of the spacing), not the busy writer's intervalMs bound. */
  private timerIsIdle = false;
  private readonly spacingMs: number;
  /** When the last write started (monotonic ms) if it carried more than one message, else -Infinity: the spacing counts from it. */
  private spacedFrom = -Infinity;
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
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 1);
    this.spacingMs = Math.max(0, opts.spacingMs ?? 0);
    this.now = opts.now ?? (() => performance.now());
  }

  /** Readings waiting for a write (not counting those in flight). */
  get pendingReadings(): number { return this.queuedReadings; }

  /**
   * Queue records for the next batch; resolves when they are durable, rejects
   * with the store's error if the batch write failed (or NOT_READY once closed).
   * `readings` = number of (ts, field) readings, counted from records if omitted.
   */
  submit(records: TelemetryRecord[], readings: number = countReadings(records)): Promise<CommitShare> {
    return this.join(records, readings).then((b) => ({ readings, batchReadings: b.batchReadings, batch: b.batch }));
  }

  /**
   * Like submit(), but returns the batch's shared promise: the SAME object for
   * every submission of one batch (callers can tell batches apart by it, see
   * handlers/telemetry.ts). No allocation per call beyond the records.
   */
  join(records: TelemetryRecord[], readings: number = countReadings(records)): Promise<BatchResult> {
    if (this.closed) return Promise.reject(Errors.NOT_READY('ingest is stopping'));
    // Between two messages, take the commits that finished meanwhile: their PUBACKs go out
    // after this socket read instead of at the end of the event loop's turn.
    if (this.inFlight.size > 0) this.store.settleFinished?.();
    let b = this.gathering;
    if (b === null) {
      b = newBatch(this.now());
      this.gathering = b;
      // Opened behind full batches (a backlog): already due, no timer; it goes after them.
      this.due = this.full.length > 0;
      this.timerIsIdle = false;
    }
    const out = b.records;
    for (let i = 0; i < records.length; i++) out.push(records[i]!);
    b.readings += readings;
    b.submitters++;
    this.queuedReadings += readings;
    if (b.readings >= this.maxReadings) {
      // Full: it goes as soon as a slot is free; the next submission opens a new batch (and timer).
      this.full.push(b);
      this.gathering = null;
      this.due = false;
      this.clearTimer();
    }
    this.schedule();
    return b.durable;
  }

  /** Write everything queued now and wait until nothing is pending or in flight. Never rejects. */
  async flush(): Promise<void> {
    while (this.gathering !== null || this.full.length > 0 || this.inFlight.size > 0) {
      if (this.gathering !== null) this.due = true;
      this.schedule();
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
    while (this.inFlight.size < this.maxInFlight) {
      let b = this.full.shift();
      if (b === undefined) {
        if (this.gathering === null || !this.due) break;
        b = this.gathering;
        this.gathering = null;
        this.due = false;
        this.clearTimer();
      }
      this.write(b);
    }
    const g = this.gathering;
    if (g === null || this.due) return;
    if (this.inFlight.size === 0) {
      // Idle writer: write at the next turn (what the same socket reads still hold joins it),
      // or once the spacing since the last commit has passed.
      if (this.cancelTimer && !this.timerIsIdle) this.clearTimer();
      if (!this.cancelTimer) this.startTimer(Math.max(0, this.spacedUntil() - this.now()), true);
    } else if (!this.cancelTimer && this.inFlight.size < this.maxInFlight) {
      // Busy writer with a free slot: the batch goes when a write completes, or when its time is up.
      const now = this.now();
      this.startTimer(Math.max(0, this.intervalMs - (now - g.at), this.spacedUntil() - now), false);
    }
  }

  /** Monotonic ms before which the next commit should not start (see spacingMs). */
  private spacedUntil(): number {
    return this.spacedFrom + this.spacingMs;
  }

  private startTimer(ms: number, idle: boolean): void {
    const fire = (): void => {
      this.cancelTimer = null;
      this.due = true;
      this.schedule();
    };
    this.timerIsIdle = idle;
    if (ms > 0) {
      const t = setTimeout(fire, ms);
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

  private write(b: Batch): void {
    this.queuedReadings -= b.readings;
    this.batches++;
    this.spacedFrom = b.submitters > 1 ? this.now() : -Infinity;
    // `write` is read in `finally`, which runs after the first await, when it holds this very promise.
    let write: Promise<void> = Promise.resolve();
    write = (async () => {
      try {
        // Deferred call: a synchronous throw must not settle before inFlight is assigned.
        const result = await Promise.resolve().then(() => this.store.writeBatch(b.records));
        this.opts.metrics?.commitLatency.observe((this.now() - b.at) / 1000);
        b.resolve({ batchReadings: b.readings, batch: result });
      } catch (err) {
        // One log line per failed batch (not per message).
        this.opts.logger?.warn({ err, readings: b.readings, messages: b.submitters }, 'telemetry batch write failed; messages are not acknowledged');
        b.reject(err);
      } finally {
        this.inFlight.delete(write);
        // Natural batching: what gathered while this write ran goes now (or when the spacing
        // has passed), before this batch's submitters are resumed (their continuations run
        // after this synchronous block).
        if (this.gathering !== null && this.now() >= this.spacedUntil()) this.due = true;
        this.schedule();
      }
    })();
    this.inFlight.add(write);
  }
}

function newBatch(at: number): Batch {
  let resolve!: (r: BatchResult) => void;
  let reject!: (err: unknown) => void;
  const durable = new Promise<BatchResult>((res, rej) => { resolve = res; reject = rej; });
  // Every submitter handles the outcome; this keeps a batch whose submitters all went away from
  // surfacing as an unhandled rejection.
  durable.catch(() => undefined);
  return { records: [], readings: 0, submitters: 0, at, durable, resolve, reject };
}

export function countReadings(records: TelemetryRecord[]): number {
  let n = 0;
  for (const r of records) for (const _ in r.values) n++;
  return n;
}

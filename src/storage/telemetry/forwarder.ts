/**
 * Drains the on-disk queue to InfluxDB: oldest rows first, up to
 * `batchLines` lines per HTTP write, one write in flight (order is kept).
 *  - 2xx: rows deleted, back-off reset.
 *  - retryable (network, timeout, 5xx, ...): rows stay; wait the back-off
 *    delay (injected timer) and try again, forever.
 *  - rejected (4xx): if the write combined several rows, they are re-sent one
 *    row per write to find the bad one(s) (re-sending is idempotent: InfluxDB
 *    overwrites identical points). For a single rejected row the bad readings
 *    are found by halving: each half is re-sent, a rejected half is halved
 *    again, a rejected line is re-sent as one line per field, and only a
 *    rejected single-field line goes to the dead-letter table (`settle`), so
 *    one field's conflict (say another writer made `rssi` a string) cannot
 *    take the other fields of its line, or other lines, with it. Each such
 *    reading is counted and logged with the server's message.
 */
import type { Clock } from '../../core/clock.js';
import type { Logger } from '../../core/logger.js';
import type { Metrics } from '../../core/metrics.js';
import { type Backoff } from './backoff.js';
import type { InfluxBackend, WriteOutcome } from './influx-backend.js';
import { FIELD_TYPE_CONFLICT } from './field-types.js';
import { findRejected } from './line-isolate.js';
import { splitLines } from './line-split.js';
import type { PeekResult, QueueTotals, RejectedLine } from './outbox-db.js';
import type { Timers } from './timers.js';
import type { WorkerClient } from './worker-client.js';

/** What every InfluxDB forwarder needs, whichever outbox it reads (this one: the embedded worker's; pg-outbox.ts: PostgreSQL's). */
export interface ForwardingDeps {
  backend: InfluxBackend;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  timers: Timers;
  backoff: Backoff;
  batchLines: number;
  /** Called when a write succeeds after the server was not known to be up (start, end of an outage). */
  onServerUp?(): void;
}

export interface ForwarderDeps extends ForwardingDeps {
  outbox: WorkerClient;
  /** Called with the queue totals after every change. */
  onTotals(t: QueueTotals): void;
}

export type ServerState = 'unknown' | 'up' | 'down';

export class Forwarder {
  readonly name = 'influx-forwarder';
  server: ServerState = 'unknown';
  lastError: string | null = null;
  lastErrorAt: number | null = null;
  /** Rows known to be queued (kept in step with the worker's answers). */
  rows = 0;
  private loop: Promise<void> | null = null;
  private stopping = false;
  private wakeFn: (() => void) | null = null;
  private sleepHandle: unknown = null;
  private isolate = 0;
  private readonly inflight = new AbortController();
  private outageStartedAt: number | null = null;
  /** The end of the last exclusive() turn: one forwarding attempt or one purge step at a time. */
  private turn: Promise<unknown> = Promise.resolve();

  constructor(private readonly d: ForwarderDeps) {}

  /**
   * Runs `fn` between two forwarding attempts (never while a write is in flight): a purge rewrites
   * queue rows the attempt may have read, and must not delete from InfluxDB while a write that
   * still carries the device's lines is on its way (influx-store.ts).
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.turn.then(fn, fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  start(initialRows: number): void {
    this.rows = initialRows;
    this.stopping = false;
    this.loop = this.run().catch((err: unknown) => {
      this.d.logger.error({ err }, 'influx forwarder stopped on an unexpected error');
    });
  }

  /** New rows were queued: wake up if idle (never cuts a back-off short). */
  wake(rows: number): void {
    this.rows = rows;
    if (this.wakeFn && this.sleepHandle === null) { const f = this.wakeFn; this.wakeFn = null; f(); }
  }

  private idle(): Promise<void> {
    return new Promise((resolve) => { this.wakeFn = resolve; });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => { this.sleepHandle = null; this.wakeFn = null; resolve(); };
      this.wakeFn = () => { if (this.sleepHandle !== null) this.d.timers.clearTimeout(this.sleepHandle); done(); };
      this.sleepHandle = this.d.timers.setTimeout(done, ms);
    });
  }

  private async run(): Promise<void> {
    let graceUntil = 0;
    while (true) {
      if (this.stopping) {
        // Shutdown: one last attempt, continuing only while writes succeed and the grace lasts.
        if (graceUntil === 0) graceUntil = Date.now() + this.stopGraceMs();
        else if (Date.now() >= graceUntil) return;
      }
      if (this.rows <= 0) {
        if (this.stopping) return;
        await this.idle();
        continue;
      }
      let ok: boolean;
      try {
        ok = await this.exclusive(() => this.attempt());
      } catch (err) {
        // The queue itself failed (worker gone, disk error): nothing is lost, try again later.
        if (this.stopping) return;
        this.d.logger.error({ err }, 'influx forwarder: queue access failed');
        ok = false;
      }
      if (this.stopping && !ok) return;
      if (!ok && !this.stopping) await this.sleep(this.d.backoff.next());
    }
  }

  private stopGraceMs(): number { return 5_000; }

  /** One HTTP write of the oldest rows. True when progress was made. */
  private async attempt(): Promise<boolean> {
    const { outbox, backend, metrics, logger } = this.d;
    const batch = await outbox.call<PeekResult | null>('peek', this.d.batchLines, this.isolate > 0 ? 1 : 1_000_000);
    if (!batch) { this.rows = 0; return true; }
    const end = metrics.storeWriteLatency.startTimer({ store: backend.kind });
    const out: WriteOutcome = await backend.write(batch.body, batch.lines, this.inflight.signal);
    if (out.ok) {
      end();
      const t = await outbox.call<QueueTotals>('ack', batch.ids);
      this.totals(t);
      metrics.readingsStoredTotal.inc({ store: backend.kind }, batch.readings);
      if (this.isolate > 0) this.isolate--;
      if (this.server !== 'up') {
        if (this.outageStartedAt !== null) {
          logger.info({ downForMs: this.d.clock.now() - this.outageStartedAt, queued: t.readings }, 'InfluxDB reachable again; draining the queue');
        }
        this.server = 'up';
        this.outageStartedAt = null;
        this.d.onServerUp?.();
      }
      this.d.backoff.reset();
      return true;
    }
    this.noteFailure(out);
    if (out.retry) return false;
    // Rejected by the server: data problem, not an outage.
    if (this.server !== 'up') { this.server = 'up'; this.outageStartedAt = null; this.d.onServerUp?.(); }
    this.d.backoff.reset();
    if (batch.ids.length > 1) {
      this.isolate = batch.ids.length;
      logger.warn({ status: out.status, error: out.message, rows: batch.ids.length }, 'InfluxDB rejected a write; re-sending its batches one by one');
      return true;
    }
    metrics.storeErrorsTotal.inc({ store: backend.kind, kind: 'rejected' }, 1);
    logger.warn({ status: out.status, error: out.message, queueRow: batch.ids[0], lines: batch.lines },
      'InfluxDB rejected a batch; re-sending it in parts to find the rejected readings');
    const rejected: RejectedLine[] = [];
    if (!await this.resend(splitLines(batch.body), out, rejected)) return false;
    const t = await outbox.call<QueueTotals>('settle', batch.ids, rejected, this.d.clock.now());
    this.totals(t);
    if (this.isolate > 0) this.isolate--;
    reportSettled(this.d, batch.readings, rejected, 'the dead-letter table (dead_readings)');
    return true;
  }

  /** Re-send the rejected lines in parts until each rejected reading is alone (line-isolate.ts). */
  private resend(lines: string[], out: WriteOutcome & { ok: false }, rejected: RejectedLine[]): Promise<boolean> {
    return findRejected({
      backend: this.d.backend, signal: this.inflight.signal,
      keepGoing: () => !this.stopping, onFailure: (o) => this.noteFailure(o),
    }, lines, out, rejected);
  }

  private noteFailure(out: WriteOutcome & { ok: false }): void {
    const { metrics, backend, logger } = this.d;
    this.lastError = out.status !== null ? `HTTP ${out.status}: ${out.message}` : out.message;
    this.lastErrorAt = this.d.clock.now();
    if (out.retry) {
      metrics.storeErrorsTotal.inc({ store: backend.kind, kind: out.status === null ? 'unavailable' : `http_${out.status}` });
      if (this.server !== 'down') {
        this.server = 'down';
        this.outageStartedAt = this.d.clock.now();
        logger.warn({ error: this.lastError, queuedRows: this.rows }, 'InfluxDB write failed; readings stay in the on-disk queue and are retried');
      } else if (this.d.backoff.attempts % 20 === 0) {
        logger.warn({ error: this.lastError, attempts: this.d.backoff.attempts, queuedRows: this.rows }, 'InfluxDB still unreachable');
      }
    }
  }

  private totals(t: QueueTotals): void {
    this.rows = t.rows;
    this.d.onTotals(t);
  }

  /** Stop after one last attempt (bounded); the queue stays on disk. */
  async stop(boundMs: number): Promise<void> {
    this.stopping = true;
    if (this.wakeFn) { const f = this.wakeFn; this.wakeFn = null; f(); }
    if (this.sleepHandle !== null) this.d.timers.clearTimeout(this.sleepHandle);
    await endLoopWithin(this.loop, boundMs, this.inflight);
    this.loop = null;
  }
}

/**
 * Counts and logs a rejected batch once its rejected readings are in the dead-letter table (`table`
 * names it in the log): the rest of the batch is stored. Both outboxes settle a rejection this way;
 * `onRejected` sees each rejected reading after it is counted.
 */
export function reportSettled(
  d: Pick<ForwardingDeps, 'backend' | 'metrics' | 'logger'>, readings: number, rejected: readonly RejectedLine[], table: string,
  onRejected?: (r: RejectedLine) => void,
): void {
  const { backend, metrics, logger } = d;
  const stored = readings - rejected.length;
  if (stored > 0) metrics.readingsStoredTotal.inc({ store: backend.kind }, stored);
  for (const r of rejected) {
    metrics.readingsDeadLetteredTotal.inc({ store: backend.kind, reason: /field type conflict/i.test(r.error) ? FIELD_TYPE_CONFLICT : 'rejected' });
    onRejected?.(r);
  }
  if (rejected.length) {
    const first = rejected[0]!;
    logger.error({ readings: rejected.length, status: first.status, error: first.error, line: first.line.slice(0, 500) },
      `InfluxDB rejected readings; moved to ${table}, the rest of the batch is stored`);
  }
}

/**
 * Waits up to `boundMs` for a forwarder's loop to end, then aborts the write in flight and gives the
 * loop one more second to notice. Both outboxes stop this way: what was not sent stays queued.
 */
export async function endLoopWithin(loop: Promise<void> | null, boundMs: number, inflight: AbortController): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  const bounded = new Promise<'timeout'>((resolve) => { t = setTimeout(() => resolve('timeout'), boundMs); });
  const r = await Promise.race([loop ?? Promise.resolve(), bounded]);
  clearTimeout(t);
  if (r === 'timeout') { inflight.abort(); await Promise.race([loop, new Promise((res) => setTimeout(res, 1000))]); }
}

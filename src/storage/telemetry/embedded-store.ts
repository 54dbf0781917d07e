/**
 * Embedded telemetry store (docs/telemetry-storage.md): SQLite `<dataDir>/telemetry.db`, WAL,
 * `synchronous` from `telemetry.sync`.
 *
 * Writes: a dedicated worker thread runs one transaction per writeBatch and
 * replies after the commit, so `writeBatch` resolves only when the readings
 * are durable (firmware-protocols/device-protocol.md §8).
 *
 * Reads: a second worker thread with a read-only connection (WAL lets it read
 * while the writer commits). Not the main thread, because a history query over
 * months of data can take long enough to stall the MQTT broker's event loop
 * (keep-alives, PUBACKs); not the writer, because such a query would delay
 * every commit and therefore every PUBACK behind it.
 */
import { withTimeout } from '../../core/async.js';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../../config/index.js';
import type { Clock } from '../../core/clock.js';
import { Errors } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { Metrics } from '../../core/metrics.js';
import { reportWritten } from './field-types.js';
import type { HistoryPoint, HistoryQuery, PurgeCounts, TelemetryPurge, TelemetryRecord, TelemetryStore, WriteResult } from './types.js';
import { packRecords } from './record-pack.js';
import { WorkerClient } from './worker-client.js';
import { RetentionLoop } from './retention.js';
import { realTimers, type Timers } from './timers.js';
import { normaliseQuery } from './windows.js';

export interface EmbeddedDeps {
  dataDir: string;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  timers?: Timers;
}

/** Retention runs hourly (first run shortly after start), in chunks of this many rows. */
const PRUNE_CHUNK_ROWS = 5_000;
/** Rows deleted per purge step: one short writer transaction, like a retention step (commits queued behind it wait little). */
export const PURGE_CHUNK_ROWS = 5_000;

export class EmbeddedTelemetryStore implements TelemetryStore, TelemetryPurge {
  readonly name = 'telemetry-store';
  readonly kind = 'embedded' as const;
  readonly file: string;
  private writer: WorkerClient | null = null;
  private reader: WorkerClient | null = null;
  private stopping = false;
  private readonly retention: RetentionLoop;

  constructor(private readonly config: Readonly<Config>, private readonly deps: EmbeddedDeps) {
    this.file = path.join(deps.dataDir, 'telemetry.db');
    this.retention = new RetentionLoop({
      retentionDays: config.telemetry.retentionDays, clock: deps.clock, timers: deps.timers ?? realTimers, logger: deps.logger,
      step: async (cutoff, cursor) => {
        const w = this.writer;
        return w ? w.call<{ deleted: number; cursor: number; done: boolean }>('prune', cutoff, PRUNE_CHUNK_ROWS, cursor) : null;
      },
    });
  }

  async start(): Promise<void> {
    mkdirSync(this.deps.dataDir, { recursive: true });
    this.stopping = false;
    const writer = new WorkerClient('telemetry-writer', { role: 'writer', path: this.file, sync: this.config.telemetry.sync }, this.deps.logger);
    await writer.start();
    this.writer = writer;
    const reader = new WorkerClient('telemetry-reader', { role: 'reader', path: this.file }, this.deps.logger);
    try { await reader.start(); } catch (err) { await writer.close(); this.writer = null; throw err; }
    this.reader = reader;
    this.retention.start();
    this.deps.logger.info({ file: this.file, sync: this.config.telemetry.sync }, 'embedded telemetry store started');
  }

  settleFinished(): void { this.writer?.poll(); }

  async writeBatch(records: TelemetryRecord[]): Promise<WriteResult> {
    if (!records.length) return { written: 0, duplicates: 0 };
    const w = this.writer;
    if (!w) throw Errors.STORE_UNAVAILABLE('embedded store is not started');
    const end = this.deps.metrics.storeWriteLatency.startTimer({ store: this.kind });
    try {
      const packed = packRecords(records); // compact hand-off to the writer thread (record-pack.ts)
      const res = await w.callTransfer<WriteResult>('write', [packed], [packed.nums.buffer as ArrayBuffer]);
      end();
      reportWritten(this.deps, this.kind, res);
      return res;
    } catch (err) {
      this.deps.metrics.storeErrorsTotal.inc({ store: this.kind, kind: 'write' });
      this.deps.logger.error({ err }, 'telemetry write failed');
      throw Errors.STORE_UNAVAILABLE((err as Error).message);
    }
  }

  async query(q: HistoryQuery): Promise<HistoryPoint[]> {
    const r = this.reader;
    if (!r) throw Errors.STORE_UNAVAILABLE('embedded store is not started');
    let nq: HistoryQuery;
    try { nq = normaliseQuery(q); } catch (err) { throw Errors.VALIDATION((err as Error).message); }
    try {
      return await r.call<HistoryPoint[]>('query', nq);
    } catch (err) {
      throw Errors.STORE_UNAVAILABLE((err as Error).message);
    }
  }

  async health(): Promise<{ ok: boolean; detail: Record<string, unknown> }> {
    const detail: Record<string, unknown> = { kind: this.kind, file: this.file };
    try {
      const ok = !!this.writer && !!this.reader && await withTimeout(this.writer.call<boolean>('ping'), 5_000) === true
        && await withTimeout(this.reader.call<boolean>('ping'), 5_000) === true;
      return { ok, detail };
    } catch (err) {
      return { ok: false, detail: { ...detail, error: (err as Error).message } };
    }
  }

  /** Nothing is queued: every resolved writeBatch is already in the database. */
  async drain(_timeoutMs?: number): Promise<boolean> { return true; }

  /** Run one compaction step now (recent → readings, see embedded-db.ts); rows moved. For tests and tools. */
  async compactNow(): Promise<number> {
    const w = this.writer;
    if (!w) throw Errors.STORE_UNAVAILABLE('embedded store is not started');
    return w.call<number>('compact');
  }

  /** Delete readings older than `telemetry.retentionDays`, chunk by chunk. Returns rows deleted. */
  pruneNow(): Promise<number> { return this.retention.runNow(); }

  /** Deletes the device's readings and dead letters chunk by chunk, letting queued writes run between chunks. */
  async purgeLocal(deviceId: string, before: number | null, removed: PurgeCounts, signal: AbortSignal): Promise<void> {
    for (;;) {
      signal.throwIfAborted();
      const w = this.writer;
      if (!w || this.stopping) throw Errors.STORE_UNAVAILABLE('embedded store is not started');
      const r = await w.call<{ readings: number; dead: number; done: boolean }>('purgeDevice', deviceId, before, PURGE_CHUNK_ROWS);
      removed.readings = (removed.readings ?? 0) + r.readings;
      removed.deadReadings = (removed.deadReadings ?? 0) + r.dead;
      if (r.done) return;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Nothing remote: the embedded store is all there is. */
  async purgeRemote(): Promise<void> { /* nothing */ }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.retention.stop();
    const r = this.reader; const w = this.writer;
    this.reader = null; this.writer = null;
    await r?.close();
    await w?.close(); // queued writes finish first: requests are handled in order
  }
}

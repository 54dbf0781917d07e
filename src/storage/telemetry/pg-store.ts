/**
 * Telemetry in PostgreSQL, the cluster database (docs/cluster.md): the same
 * contract as the embedded store (test/helpers/telemetry-contract.ts runs the
 * same tests on both): one row per (device, field, ts), the last value wins, an
 * identical re-send is a duplicate, the field-type rule (field-types.ts) with
 * the dead-letter table written in the same transaction.
 *
 * writeBatch is one transaction; it resolves only after COMMIT returned, so the
 * PUBACKs that wait for it (ingest/group-commit.ts) follow a durable commit (on
 * the synchronous standby too when one is configured). A failed or unknown
 * commit rejects: no PUBACK, the device resends, and the unique key keeps the
 * resend from being stored twice. Deadlocks between nodes writing the same keys
 * are retried (rows are inserted in key order, so they are rare).
 *
 * Readings go in with one `INSERT ... SELECT FROM unnest(arrays)` per batch
 * (six parameters whatever the number of rows) and
 * `ON CONFLICT DO UPDATE ... WHERE old IS DISTINCT FROM new RETURNING`, counted on
 * the server: the rows returned are the readings written (new or changed); the
 * others were identical re-sends.
 * A statement may touch a key once, so a batch holding the same key several
 * times is written in rounds (the n-th occurrence of each key in round n), which
 * gives exactly the embedded store's sequential counts.
 */
import { sql, type Transaction } from 'kysely';
import type { Config } from '../../config/index.js';
import type { Clock } from '../../core/clock.js';
import { Errors } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { Metrics } from '../../core/metrics.js';
import { migrate, redactUrl, type Db } from '../sql/index.js';
import { FIELD_TYPE_CONFLICT, K_BOOLEAN, K_NUMBER, K_STRING, kindName, reportWritten, type SetAsideReading } from './field-types.js';
import { pgHistory } from './pg-reader.js';
import { TELEMETRY_MIGRATIONS } from './pg-schema.js';
import { RetentionLoop } from './retention.js';
import { realTimers, type Timers } from './timers.js';
import type { HistoryPoint, HistoryQuery, PurgeCounts, TelemetryPurge, TelemetryRecord, TelemetryStore, WriteResult } from './types.js';
import { normaliseQuery } from './windows.js';

export interface PgStoreDeps {
  db: Db<unknown>;
  /** For health details and logs; the password is redacted. */
  url: string;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  timers?: Timers;
}

const CHUNK_ROWS = 5_000;
/** Deadlock / serialization failure: the transaction did nothing, run it again. */
const RETRYABLE = new Set(['40P01', '40001']);
const ATTEMPTS = 3;

type Cell = { device: string; field: string; ts: number; k: number; num: number | null; txt: string | null };

export class PgTelemetryStore implements TelemetryStore, TelemetryPurge {
  readonly name = 'telemetry-store';
  readonly kind = 'postgres' as const;
  /** Committed field kinds (a field's kind never changes once stored, so this cache never goes stale). */
  private readonly kinds = new Map<string, number>();
  private readonly retention: RetentionLoop;

  constructor(private readonly config: Readonly<Config>, private readonly deps: PgStoreDeps) {
    this.retention = new RetentionLoop({
      retentionDays: config.telemetry.retentionDays, clock: deps.clock, timers: deps.timers ?? realTimers, logger: deps.logger,
      step: async (cutoff) => {
        const n = await this.deleteChunk('telemetry_readings', sql`ts < ${cutoff}`);
        return { deleted: n, cursor: 0, done: n < CHUNK_ROWS };
      },
    });
  }

  async start(): Promise<void> {
    try {
      await migrate(this.deps.db, 'telemetry', TELEMETRY_MIGRATIONS);
      const rows = await sql<{ name: string; k: number }>`SELECT name, k FROM telemetry_fields`.execute(this.deps.db.kysely);
      for (const r of rows.rows) this.kinds.set(r.name, r.k);
    } catch (err) {
      throw Errors.CONFIG(`KENG_DATABASE_URL (cluster.databaseUrl): PostgreSQL at ${redactUrl(this.deps.url)} is not usable: ${(err as Error).message}`);
    }
    this.retention.start();
    this.deps.logger.info({ database: redactUrl(this.deps.url) }, 'PostgreSQL telemetry store started');
  }

  async writeBatch(records: TelemetryRecord[]): Promise<WriteResult> {
    if (!records.length) return { written: 0, duplicates: 0 };
    const end = this.deps.metrics.storeWriteLatency.startTimer({ store: this.kind });
    for (let attempt = 1; ; attempt++) {
      const learned = new Map<string, number>();
      try {
        const res = await this.deps.db.write((trx) => this.writeIn(trx, records, learned));
        for (const [name, k] of learned) this.kinds.set(name, k); // only what is committed
        end();
        reportWritten(this.deps, this.kind, res);
        return res;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code && RETRYABLE.has(code) && attempt < ATTEMPTS) continue;
        this.deps.metrics.storeErrorsTotal.inc({ store: this.kind, kind: 'write' });
        this.deps.logger.error({ err }, 'telemetry write to PostgreSQL failed');
        throw Errors.STORE_UNAVAILABLE((err as Error).message);
      }
    }
  }

  private async writeIn(trx: Transaction<unknown>, records: TelemetryRecord[], learned: Map<string, number>): Promise<WriteResult> {
    const cells: (Cell & { value: Scalar; at: number })[] = [];
    const unknown = new Map<string, number>();
    for (const r of records) {
      const ts = Math.round(r.ts);
      for (const field in r.values) {
        const value = r.values[field]!;
        let c: Cell;
        if (typeof value === 'number') {
          if (!Number.isFinite(value)) continue;
          c = { device: r.deviceId, field, ts, k: K_NUMBER, num: value === 0 ? 0 : value, txt: null }; // -0 → 0, as the embedded store
        } else if (typeof value === 'boolean') c = { device: r.deviceId, field, ts, k: K_BOOLEAN, num: value ? 1 : 0, txt: null };
        else c = { device: r.deviceId, field, ts, k: K_STRING, num: null, txt: value };
        if (!this.kinds.has(field) && !unknown.has(field)) unknown.set(field, c.k); // the first value in the batch decides
        cells.push({ ...c, value, at: r.ts });
      }
    }
    if (unknown.size) {
      // Another node may be learning the same field right now: ON CONFLICT waits for it, and the
      // SELECT (a new snapshot under READ COMMITTED) then reads whichever kind was stored first.
      // Sorted, like the readings: two nodes learning the same fields lock them in the same order.
      const names = [...unknown.keys()].sort();
      await sql`INSERT INTO telemetry_fields (name, k) SELECT * FROM unnest(${names}::text[], ${names.map((n) => unknown.get(n)!)}::smallint[]) ON CONFLICT (name) DO NOTHING`.execute(trx);
      const rows = await sql<{ name: string; k: number }>`SELECT name, k FROM telemetry_fields WHERE name = ANY(${names}::text[])`.execute(trx);
      for (const r of rows.rows) learned.set(r.name, r.k);
    }
    const rounds: Cell[][] = [];
    const seen = new Map<string, number>();
    const dead: (Cell & { value: Scalar; detail: string })[] = [];
    let setAside: SetAsideReading[] | undefined;
    for (const c of cells) {
      const fk = this.kinds.get(c.field) ?? learned.get(c.field);
      if (fk !== c.k) {
        dead.push({ ...c, detail: `field is ${kindName(fk ?? 3)}, value is ${kindName(c.k)}` });
        (setAside ??= []).push({ deviceId: c.device, ts: c.at, field: c.field, value: c.value, reason: FIELD_TYPE_CONFLICT });
        continue;
      }
      const key = `${c.device}\u0000${c.field}\u0000${c.ts}`;
      const n = seen.get(key) ?? 0;
      seen.set(key, n + 1);
      (rounds[n] ??= []).push(c);
    }
    let total = 0;
    let written = 0;
    for (const round of rounds) {
      total += round.length;
      // Key order: two transactions locking the same keys take them in the same order (no deadlock).
      round.sort((a, b) => (a.device < b.device ? -1 : a.device > b.device ? 1 : a.field < b.field ? -1 : a.field > b.field ? 1 : a.ts - b.ts));
      const res = await sql<{ n: number }>`WITH w AS (INSERT INTO telemetry_readings AS r (device, field, ts, k, num, txt)
        SELECT * FROM unnest(${round.map((c) => c.device)}::text[], ${round.map((c) => c.field)}::text[], ${round.map((c) => c.ts)}::bigint[],
          ${round.map((c) => c.k)}::smallint[], ${round.map((c) => c.num)}::double precision[], ${round.map((c) => c.txt)}::text[])
        ON CONFLICT (device, field, ts) DO UPDATE SET k = EXCLUDED.k, num = EXCLUDED.num, txt = EXCLUDED.txt
        WHERE (r.k, r.num, r.txt) IS DISTINCT FROM (EXCLUDED.k, EXCLUDED.num, EXCLUDED.txt)
        RETURNING 1) SELECT COUNT(*)::int AS n FROM w`.execute(trx);
      written += res.rows[0]!.n;
    }
    if (dead.length) {
      const now = this.deps.clock.now();
      await sql`INSERT INTO telemetry_dead_readings (device, field, ts, value, type, reason, detail, at)
        SELECT d, f, t, v::jsonb, ty, ${FIELD_TYPE_CONFLICT}, de, ${now} FROM unnest(${dead.map((c) => c.device)}::text[], ${dead.map((c) => c.field)}::text[],
          ${dead.map((c) => c.ts)}::bigint[], ${dead.map((c) => JSON.stringify(c.value))}::text[], ${dead.map((c) => kindName(c.k))}::text[],
          ${dead.map((c) => c.detail)}::text[]) AS x(d, f, t, v, ty, de)
        ON CONFLICT (device, field, ts) DO NOTHING`.execute(trx);
    }
    return setAside ? { written, duplicates: total - written, setAside } : { written, duplicates: total - written };
  }

  async query(q: HistoryQuery): Promise<HistoryPoint[]> {
    try { normaliseQuery(q); } catch (err) { throw Errors.VALIDATION((err as Error).message); }
    try {
      return await pgHistory(this.deps.db, q);
    } catch (err) {
      throw Errors.STORE_UNAVAILABLE((err as Error).message);
    }
  }

  async health(): Promise<{ ok: boolean; detail: Record<string, unknown> }> {
    const detail: Record<string, unknown> = { kind: this.kind, database: redactUrl(this.deps.url) };
    try {
      await this.deps.db.ping(5_000);
      return { ok: true, detail };
    } catch (err) {
      return { ok: false, detail: { ...detail, error: (err as Error).message } };
    }
  }

  /** Nothing is queued: every resolved writeBatch is committed. */
  async drain(_timeoutMs?: number): Promise<boolean> { return true; }

  /** Delete readings older than `telemetry.retentionDays`, chunk by chunk (short transactions). Returns rows deleted. */
  pruneNow(): Promise<number> { return this.retention.runNow(); }


  /** One device's readings and dead letters (ts < before, or all), chunk by chunk; idempotent. */
  async purgeLocal(deviceId: string, before: number | null, removed: PurgeCounts, signal: AbortSignal): Promise<void> {
    const cond = sql`device = ${deviceId} AND ts < ${before ?? Number.MAX_SAFE_INTEGER}`;
    for (const [table, key] of [['telemetry_dead_readings', 'deadReadings'], ['telemetry_readings', 'readings']] as const) {
      for (;;) {
        signal.throwIfAborted();
        let n: number;
        try { n = await this.deleteChunk(table, cond); } catch (err) { throw Errors.STORE_UNAVAILABLE((err as Error).message); }
        removed[key] = (removed[key] ?? 0) + n;
        if (n < CHUNK_ROWS) break;
      }
    }
  }

  /** Nothing remote: PostgreSQL is the store. */
  async purgeRemote(): Promise<void> { /* nothing */ }

  private async deleteChunk(table: 'telemetry_readings' | 'telemetry_dead_readings', cond: ReturnType<typeof sql>): Promise<number> {
    const t = sql.table(table);
    const r = await sql`DELETE FROM ${t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${t} WHERE ${cond} LIMIT ${CHUNK_ROWS}))`.execute(this.deps.db.kysely);
    return Number(r.numAffectedRows ?? 0);
  }

  /** The Db is the wiring's (it closes it after this store stops). */
  async stop(): Promise<void> {
    await this.retention.stop();
  }
}

type Scalar = TelemetryRecord['values'][string];

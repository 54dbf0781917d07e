/**
 * InfluxDB behind a PostgreSQL outbox (cluster mode with `telemetry.store = influxdb`,
 * docs/cluster.md): the cluster-wide counterpart of influx-store.ts. `writeBatch` turns the
 * readings into line protocol (line-protocol.ts, as the on-disk queue does) and commits them to
 * `telemetry_influx_outbox` in one PostgreSQL transaction, together with any field learned
 * (`telemetry_fields`) and any reading set aside by the field-type rule (`telemetry_dead_readings`);
 * it resolves after COMMIT, so the PUBACK follows a durable commit. Every node forwards from the
 * shared outbox (pg-outbox.ts).
 *
 * Readings are not kept in `telemetry_readings`: as with the single-node InfluxDB store, InfluxDB is
 * the history (query() asks it), and readings still in the outbox show up once forwarded. So a
 * re-sent message is queued again (written, not counted as a duplicate): InfluxDB keeps one point.
 */
import { sql, type Transaction } from 'kysely';
import type { Config } from '../../config/index.js';
import { Errors } from '../../core/errors.js';
import type { Scalar } from '../../core/events.js';
import { migrate, redactUrl, type Db } from '../sql/index.js';
import { Backoff } from './backoff.js';
import { FIELD_TYPE_CONFLICT, kindName, kindOf, kindOfInfluxType, reportSetAside, type SetAsideReading } from './field-types.js';
import type { InfluxBackend } from './influx-backend.js';
import { escapeTag, PrefixCache, recordsToLines, type FieldGuard } from './line-protocol.js';
import { lineSummary, splitLines } from './line-split.js';
import { outboxTotals, PgOutboxForwarder, type OutboxTotals } from './pg-outbox.js';
import { TELEMETRY_MIGRATIONS } from './pg-schema.js';
import { realTimers } from './timers.js';
import type { HistoryPoint, HistoryQuery, PurgeCounts, TelemetryPurge, TelemetryRecord, TelemetryStore, TelemetryStoreDeps, WriteResult } from './types.js';
import { normaliseQuery } from './windows.js';

export interface PgInfluxStoreDeps extends TelemetryStoreDeps {
  db: Db<unknown>;
  url: string;
  nodeId: string;
  /** Claim lease; default max(30 s, 3 × influx.timeoutMs). Tests shorten it. */
  leaseMs?: number;
  /** How often an idle node looks at the shared outbox; default 1 s. */
  pollMs?: number;
}

/** The outbox totals are read at most this often (a COUNT over the table). */
const TOTALS_EVERY_MS = 1_000;
const PURGE_ROWS = 64;
const PURGE_DEAD_ROWS = 5_000;

interface Written { readings: number; bytes: number; rows: number; setAside?: SetAsideReading[]; learned: Map<string, number> }

export class PgInfluxTelemetryStore implements TelemetryStore, TelemetryPurge {
  readonly name = 'telemetry-store';
  readonly kind: 'influxdb-v1' | 'influxdb-v2';
  private readonly kinds = new Map<string, number>();
  private readonly prefixes: PrefixCache;
  private forwarder: PgOutboxForwarder | null = null;
  private totals: OutboxTotals = { rows: 0, readings: 0, bytes: 0, oldest: null };
  private totalsAt = 0;
  private totalsTimer: NodeJS.Timeout | null = null;

  constructor(private readonly config: Readonly<Config>, private readonly backend: InfluxBackend, private readonly deps: PgInfluxStoreDeps) {
    this.kind = backend.kind;
    this.prefixes = new PrefixCache(config.influx.measurement);
  }

  private get cfg(): Readonly<Config['influx']> { return this.config.influx; }

  async start(): Promise<void> {
    try {
      await migrate(this.deps.db, 'telemetry', TELEMETRY_MIGRATIONS);
      const rows = await sql<{ name: string; k: number }>`SELECT name, k FROM telemetry_fields`.execute(this.deps.db.kysely);
      for (const r of rows.rows) this.kinds.set(r.name, r.k);
      await this.refreshTotals();
    } catch (err) {
      throw Errors.CONFIG(`KENG_DATABASE_URL (cluster.databaseUrl): PostgreSQL at ${redactUrl(this.deps.url)} is not usable: ${(err as Error).message}`);
    }
    this.deps.metrics.queueCapBytes.set(this.cfg.queueCapBytes);
    try {
      await this.backend.init();
      await this.learnFieldTypes();
    } catch (err) {
      this.deps.logger.warn({ err: (err as Error).message, url: this.cfg.url }, 'InfluxDB not reachable at start; readings wait in the PostgreSQL outbox meanwhile');
    }
    this.forwarder = new PgOutboxForwarder({
      db: this.deps.db, backend: this.backend, logger: this.deps.logger, metrics: this.deps.metrics, clock: this.deps.clock,
      timers: this.deps.timers ?? realTimers, backoff: new Backoff(this.cfg.retryMinMs, this.cfg.retryMaxMs, this.deps.random),
      batchLines: this.cfg.batchLines, leaseMs: this.deps.leaseMs ?? Math.max(30_000, 3 * this.cfg.timeoutMs),
      pollMs: this.deps.pollMs ?? 1_000, nodeId: this.deps.nodeId,
      onServerUp: () => { this.learnFieldTypes().catch((err: unknown) => this.deps.logger.debug({ err }, 'reading InfluxDB field types failed')); },
      onConflict: (field, t) => { this.learn([[field, t]]).catch(() => undefined); },
    });
    this.forwarder.start();
    this.totalsTimer = setInterval(() => { this.refreshTotals().catch(() => undefined); }, TOTALS_EVERY_MS);
    this.totalsTimer.unref();
    this.deps.logger.info({ url: this.cfg.url, api: this.cfg.api, database: redactUrl(this.deps.url), queuedReadings: this.totals.readings },
      'InfluxDB telemetry store (PostgreSQL outbox) started');
  }

  /** The server's field types for fields this cluster has not typed yet (the first type wins, as for readings). */
  private async learnFieldTypes(): Promise<void> {
    if (!this.backend.fieldTypes) return;
    await this.learn(await this.backend.fieldTypes());
  }

  private async learn(pairs: readonly [string, string][]): Promise<void> {
    const fresh = pairs.filter(([f]) => !this.kinds.has(f));
    if (!fresh.length) return;
    const names = fresh.map(([f]) => f);
    await sql`INSERT INTO telemetry_fields (name, k) SELECT * FROM unnest(${names}::text[], ${fresh.map(([, t]) => kindOfInfluxType(t))}::smallint[])
      ON CONFLICT (name) DO NOTHING`.execute(this.deps.db.kysely);
    const rows = await sql<{ name: string; k: number }>`SELECT name, k FROM telemetry_fields WHERE name = ANY(${names}::text[])`.execute(this.deps.db.kysely);
    for (const r of rows.rows) this.kinds.set(r.name, r.k);
  }

  async writeBatch(records: TelemetryRecord[]): Promise<WriteResult> {
    if (!this.forwarder) throw Errors.STORE_UNAVAILABLE('InfluxDB outbox is not started');
    if (!records.length) return { written: 0, duplicates: 0 };
    // The cap is checked against the last totals read (at most a second old): it bounds an outage, not a byte.
    if (this.totals.bytes >= this.cfg.queueCapBytes) {
      this.deps.metrics.storeErrorsTotal.inc({ store: this.kind, kind: 'queue_full' });
      throw Errors.QUEUE_FULL(this.totals.bytes);
    }
    const end = this.deps.metrics.storeWriteLatency.startTimer({ store: 'postgres' });
    let res: Written;
    try {
      res = await this.deps.db.write((trx) => this.writeIn(trx, records));
    } catch (err) {
      this.deps.metrics.storeErrorsTotal.inc({ store: this.kind, kind: 'queue' });
      this.deps.logger.error({ err }, 'writing to the PostgreSQL InfluxDB outbox failed');
      throw Errors.STORE_UNAVAILABLE((err as Error).message);
    }
    end();
    for (const [name, k] of res.learned) this.kinds.set(name, k);
    this.totals = { ...this.totals, rows: this.totals.rows + res.rows, readings: this.totals.readings + res.readings, bytes: this.totals.bytes + res.bytes };
    this.publish();
    this.forwarder.wake();
    if (!res.setAside) return { written: res.readings, duplicates: 0 };
    reportSetAside(this.deps, this.kind, res.setAside);
    return { written: res.readings, duplicates: 0, setAside: res.setAside };
  }

  private async writeIn(trx: Transaction<unknown>, records: TelemetryRecord[]): Promise<Written> {
    // Fields no node has typed yet: typed by this batch's first value, or by whichever node commits first
    // (ON CONFLICT waits for it; the SELECT then reads the stored kind), as in pg-store.ts.
    const unknown = new Map<string, number>();
    for (const r of records) for (const f in r.values) if (!this.kinds.has(f) && !unknown.has(f)) unknown.set(f, kindOf(r.values[f]!));
    const learned = new Map<string, number>();
    if (unknown.size) {
      const names = [...unknown.keys()].sort();
      await sql`INSERT INTO telemetry_fields (name, k) SELECT * FROM unnest(${names}::text[], ${names.map((n) => unknown.get(n)!)}::smallint[]) ON CONFLICT (name) DO NOTHING`.execute(trx);
      const rows = await sql<{ name: string; k: number }>`SELECT name, k FROM telemetry_fields WHERE name = ANY(${names}::text[])`.execute(trx);
      for (const r of rows.rows) learned.set(r.name, r.k);
    }
    const aside: { r: TelemetryRecord; field: string; value: Scalar; k: number; known: number }[] = [];
    const guard: FieldGuard = {
      admit: (r, field, value) => {
        const k = kindOf(value);
        const known = this.kinds.get(field) ?? learned.get(field)!;
        if (known === k) return true;
        aside.push({ r, field, value, k, known });
        return false;
      },
    };
    const bodies: string[] = []; const lines: number[] = []; const readings: number[] = []; const bytes: number[] = [];
    for (let i = 0; i < records.length; i += this.cfg.batchLines) {
      const out: string[] = [];
      const st = recordsToLines(this.cfg.measurement, records.slice(i, i + this.cfg.batchLines), out, guard, this.prefixes);
      if (!st.lines) continue;
      bodies.push(out.join('\n')); lines.push(st.lines); readings.push(st.readings); bytes.push(st.bytes);
    }
    const now = this.deps.clock.now();
    if (bodies.length) {
      await sql`INSERT INTO telemetry_influx_outbox (body, lines, readings, bytes, created)
        SELECT b, l, r, y, ${now} FROM unnest(${bodies}::text[], ${lines}::int[], ${readings}::int[], ${bytes}::int[]) AS x(b, l, r, y)`.execute(trx);
    }
    if (aside.length) {
      await sql`INSERT INTO telemetry_dead_readings (device, field, ts, value, type, reason, detail, at)
        SELECT d, f, t, v::jsonb, ty, ${FIELD_TYPE_CONFLICT}, de, ${now} FROM unnest(${aside.map((a) => a.r.deviceId)}::text[], ${aside.map((a) => a.field)}::text[],
          ${aside.map((a) => Math.round(a.r.ts))}::bigint[], ${aside.map((a) => JSON.stringify(a.value))}::text[], ${aside.map((a) => kindName(a.k))}::text[],
          ${aside.map((a) => `field is ${kindName(a.known)}, value is ${kindName(a.k)}`)}::text[]) AS x(d, f, t, v, ty, de)
        ON CONFLICT (device, field, ts) DO NOTHING`.execute(trx);
    }
    const setAside: SetAsideReading[] | undefined = aside.length
      ? aside.map((a) => ({ deviceId: a.r.deviceId, ts: a.r.ts, field: a.field, value: a.value, reason: FIELD_TYPE_CONFLICT }))
      : undefined;
    return { readings: readings.reduce((a, b) => a + b, 0), bytes: bytes.reduce((a, b) => a + b, 0), rows: bodies.length, setAside, learned };
  }

  private async refreshTotals(): Promise<OutboxTotals> {
    this.totals = await outboxTotals(this.deps.db);
    this.totalsAt = Date.now();
    this.publish();
    return this.totals;
  }

  /** The shared outbox's size, as every node sees it (the gauges are the same on every node). */
  private publish(): void {
    const m = this.deps.metrics;
    m.queueDepth.set(this.totals.readings);
    m.queueBytes.set(this.totals.bytes);
    m.queueOldestAgeSeconds.set(this.totals.oldest === null ? 0 : Math.max(0, (this.deps.clock.now() - this.totals.oldest) / 1000));
  }

  /** The outbox's totals, read now (tests, diagnostics). */
  async outboxStats(): Promise<OutboxTotals> { return this.refreshTotals(); }

  async query(q: HistoryQuery): Promise<HistoryPoint[]> {
    try { normaliseQuery(q); } catch (err) { throw Errors.VALIDATION((err as Error).message); }
    return this.backend.query(q);
  }

  /** ok = PostgreSQL (the outbox) answers; InfluxDB being down is reported in detail only (the outbox covers it). */
  async health(): Promise<{ ok: boolean; detail: Record<string, unknown> }> {
    const detail: Record<string, unknown> = { kind: this.kind, database: redactUrl(this.deps.url) };
    let ok = true;
    // The totals are the timer's (at most a second old): /readyz is polled often, a COUNT over the outbox is not free.
    try { await this.deps.db.ping(5_000); } catch (err) { ok = false; detail.error = (err as Error).message; }
    const up = await this.backend.ping(Math.min(this.cfg.timeoutMs, 2_000));
    Object.assign(detail, {
      server: up ? 'up' : 'down', queued: this.totals.readings, queuedBytes: this.totals.bytes, queueCapBytes: this.cfg.queueCapBytes,
      oldestQueuedAt: this.totals.oldest, lastError: this.forwarder?.lastError ?? null,
    });
    return { ok, detail };
  }

  /** Wait until the shared outbox is empty (every node's readings delivered); false on timeout. */
  async drain(timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try { if ((await this.refreshTotals()).rows === 0) return true; } catch { /* PostgreSQL away: keep waiting */ }
      if (Date.now() >= until) return false;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * The device's lines still in the outbox (rows rewritten without them, chunk by chunk), then its
   * dead letters. A row another node is sending right now may still land in InfluxDB after the
   * purge (docs/cluster.md); purging again removes it.
   */
  async purgeLocal(deviceId: string, before: number | null, removed: PurgeCounts, signal: AbortSignal): Promise<void> {
    const needle = `device_id=${escapeTag(deviceId)}`;
    let after = '0';
    for (;;) {
      signal.throwIfAborted();
      const c = await this.deps.db.write(async (trx) => {
        const rows = await sql<{ id: string; body: string }>`SELECT id::text AS id, body FROM telemetry_influx_outbox
          WHERE id > ${after}::bigint AND strpos(body, ${needle}) > 0 ORDER BY id LIMIT ${PURGE_ROWS} FOR UPDATE`.execute(trx);
        let n = 0;
        for (const r of rows.rows) {
          const keep: string[] = []; let readings = 0; let gone = 0;
          for (const l of splitLines(r.body)) {
            const s = lineSummary(l);
            if (s && s.deviceId === deviceId && (before === null || s.ts < before)) { gone += s.fields; continue; }
            keep.push(l); readings += s?.fields ?? 0;
          }
          if (!gone) continue;
          n += gone;
          if (keep.length) {
            const body = keep.join('\n');
            await sql`UPDATE telemetry_influx_outbox SET body = ${body}, lines = ${keep.length}, readings = ${readings}, bytes = ${Buffer.byteLength(body) + keep.length} WHERE id = ${r.id}::bigint`.execute(trx);
          } else await sql`DELETE FROM telemetry_influx_outbox WHERE id = ${r.id}::bigint`.execute(trx);
        }
        return { n, last: rows.rows.at(-1)?.id, done: rows.rows.length < PURGE_ROWS };
      });
      removed.queuedReadings = (removed.queuedReadings ?? 0) + c.n;
      if (c.done || !c.last) break;
      after = c.last;
    }
    for (;;) {
      signal.throwIfAborted();
      const r = await sql`DELETE FROM telemetry_dead_readings WHERE ctid = ANY(ARRAY(SELECT ctid FROM telemetry_dead_readings
        WHERE device = ${deviceId} AND ts < ${before ?? Number.MAX_SAFE_INTEGER} LIMIT ${PURGE_DEAD_ROWS}))`.execute(this.deps.db.kysely);
      const n = Number(r.numAffectedRows ?? 0);
      removed.deadReadings = (removed.deadReadings ?? 0) + n;
      if (n < PURGE_DEAD_ROWS) break;
    }
    await this.refreshTotals().catch(() => undefined);
  }

  async purgeRemote(deviceId: string, before: number | null, removed: PurgeCounts, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    const n = await this.backend.deleteDevice(deviceId, before, signal);
    if (n !== null) removed.influxReadings = (removed.influxReadings ?? 0) + n;
  }

  /** The Db is the wiring's; rows left in the outbox are sent by the other nodes, or by this one after a restart. */
  async stop(): Promise<void> {
    if (this.totalsTimer) clearInterval(this.totalsTimer);
    this.totalsTimer = null;
    const fw = this.forwarder; this.forwarder = null;
    await fw?.stop(this.cfg.timeoutMs + 5_000);
    await this.backend.close();
  }
}

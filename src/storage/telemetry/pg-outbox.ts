/**
 * The InfluxDB outbox in PostgreSQL (cluster mode, `telemetry.store = influxdb`; docs/cluster.md):
 * `telemetry_influx_outbox` rows hold line protocol committed with the ingest transaction
 * (pg-influx-store.ts). Every node runs a PgOutboxForwarder on the same table:
 *
 *  - claim: the oldest unleased rows (or rows whose lease expired), up to `batchLines` lines, are
 *    taken with `FOR UPDATE SKIP LOCKED` and leased in the same statement (`lease_by` = a token
 *    new for each claim, `lease_until` on the database's clock, so nodes' clocks do not matter).
 *    No transaction stays open during the HTTP write.
 *  - 2xx: the rows are deleted `WHERE lease_by = token`: only while the claim is still ours.
 *  - retryable failure: the lease is released at once and the node backs off.
 *  - rejected (4xx): the readings InfluxDB refuses are found field by field (line-isolate.ts) and,
 *    in one transaction, go to `telemetry_dead_readings` while the rows are deleted.
 *
 * A node that dies mid-batch leaves its lease; after `leaseMs` another node claims the rows and
 * sends them again. If the first write had reached InfluxDB, the second overwrites the same points
 * (same measurement, tags and time): no duplicate, and no gap.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../sql/index.js';
import { FIELD_TYPE_CONFLICT, kindName, kindOf, parseConflictMessage } from './field-types.js';
import type { WriteOutcome } from './influx-backend.js';
import { findRejected } from './line-isolate.js';
import { parseReading, splitLines } from './line-split.js';
import type { RejectedLine } from './outbox-db.js';
import { endLoopWithin, reportSettled, type ForwardingDeps } from './forwarder.js';

/** Rows looked at per claim (each holds at most `batchLines` lines). */
const CLAIM_ROWS = 64;
const NOW_MS = sql`(extract(epoch FROM clock_timestamp()) * 1000)::bigint`;

export interface OutboxTotals { rows: number; readings: number; bytes: number; oldest: number | null }

export interface PgOutboxForwarderDeps extends ForwardingDeps {
  db: Db<unknown>;
  /** How long a claim lasts; another node takes the rows over after it. */
  leaseMs: number;
  /** How often an idle node looks for rows other nodes wrote, or leases that expired. */
  pollMs: number;
  nodeId: string;
  /** A field type InfluxDB reported in a conflict (field, InfluxDB type). */
  onConflict?(field: string, influxType: string): void;
}

interface Claim { token: string; ids: string[]; body: string; lines: number; readings: number }

export class PgOutboxForwarder {
  readonly name = 'influx-outbox-forwarder';
  server: 'unknown' | 'up' | 'down' = 'unknown';
  lastError: string | null = null;
  private loop: Promise<void> | null = null;
  private stopping = false;
  private wakeFn: (() => void) | null = null;
  private handle: unknown = null;
  private readonly inflight = new AbortController();

  constructor(private readonly d: PgOutboxForwarderDeps) {}

  start(): void {
    this.stopping = false;
    this.loop = this.run().catch((err: unknown) => { this.d.logger.error({ err }, 'influx outbox forwarder stopped on an unexpected error'); });
  }

  /** Rows were committed on this node: look now (does not cut a back-off short). */
  wake(): void {
    if (this.wakeFn && !this.backingOff) { const f = this.wakeFn; this.wakeFn = null; f(); }
  }

  private backingOff = false;

  private sleep(ms: number, backoff: boolean): Promise<void> {
    this.backingOff = backoff;
    return new Promise((resolve) => {
      const done = (): void => { this.handle = null; this.wakeFn = null; this.backingOff = false; resolve(); };
      this.wakeFn = () => { if (this.handle !== null) this.d.timers.clearTimeout(this.handle); done(); };
      this.handle = this.d.timers.setTimeout(done, ms);
    });
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      let progress: boolean | 'idle';
      try { progress = await this.attempt(); } catch (err) {
        if (this.stopping) return;
        this.d.logger.error({ err }, 'influx outbox forwarder: PostgreSQL access failed');
        progress = false;
      }
      if (this.stopping) return;
      if (progress === 'idle') await this.sleep(this.d.pollMs, false);
      else if (!progress) await this.sleep(this.d.backoff.next(), true);
    }
  }

  /** Claim the oldest free rows (a lease on the database's clock); null when there are none. */
  async claim(): Promise<Claim | null> {
    const token = `${this.d.nodeId}:${randomUUID()}`;
    const r = await sql<{ id: string; body: string; lines: number; readings: number }>`
      WITH c AS (SELECT id, lines FROM telemetry_influx_outbox WHERE lease_until IS NULL OR lease_until < ${NOW_MS}
                 ORDER BY id LIMIT ${CLAIM_ROWS} FOR UPDATE SKIP LOCKED),
      k AS (SELECT id FROM (SELECT id, sum(lines) OVER (ORDER BY id) AS cum, row_number() OVER (ORDER BY id) AS rn FROM c) x
            WHERE cum <= ${this.d.batchLines} OR rn = 1)
      UPDATE telemetry_influx_outbox o SET lease_by = ${token}, lease_until = ${NOW_MS} + ${this.d.leaseMs}
      FROM k WHERE o.id = k.id RETURNING o.id::text AS id, o.body, o.lines, o.readings`.execute(this.d.db.kysely);
    if (!r.rows.length) return null;
    const rows = r.rows.sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
    return {
      token, ids: rows.map((x) => x.id), body: rows.map((x) => x.body).join('\n'),
      lines: rows.reduce((n, x) => n + x.lines, 0), readings: rows.reduce((n, x) => n + x.readings, 0),
    };
  }

  /** Give the rows back at once (a failed write), if still ours. */
  private async release(c: Claim): Promise<void> {
    await sql`UPDATE telemetry_influx_outbox SET lease_by = NULL, lease_until = NULL WHERE lease_by = ${c.token}`.execute(this.d.db.kysely);
  }

  /** Extend the lease (long isolation of rejected readings); false when it was lost to another node. */
  private async renew(c: Claim): Promise<boolean> {
    const r = await sql`UPDATE telemetry_influx_outbox SET lease_until = ${NOW_MS} + ${this.d.leaseMs} WHERE lease_by = ${c.token}`.execute(this.d.db.kysely);
    return Number(r.numAffectedRows ?? 0) > 0;
  }

  /**
   * Delivered (all but `rejected`): delete the rows if the claim is still ours and keep the
   * rejected readings, in one transaction. Returns how many rows were ours.
   */
  private async finish(c: Claim, rejected: readonly RejectedLine[]): Promise<number> {
    const now = this.d.clock.now();
    return this.d.db.write(async (trx) => {
      const del = await sql`DELETE FROM telemetry_influx_outbox WHERE id = ANY(${c.ids}::bigint[]) AND lease_by = ${c.token}`.execute(trx);
      const mine = Number(del.numAffectedRows ?? 0);
      if (mine && rejected.length) {
        const rows = rejected.map((r) => {
          const p = parseReading(r.line);
          const v = p?.value;
          return {
            device: p?.tags.device_id ?? '', field: p?.field ?? '', ts: p?.ts ?? 0, value: JSON.stringify(v ?? null),
            type: v === undefined ? 'unknown' : kindName(kindOf(v)),
            reason: /field type conflict/i.test(r.error) ? FIELD_TYPE_CONFLICT : 'rejected', detail: r.error.slice(0, 2000), status: r.status, line: r.line,
          };
        });
        // A device re-sending a message (lost PUBACK) is rejected again: kept once.
        await sql`INSERT INTO telemetry_dead_readings (device, field, ts, value, type, reason, detail, at, status, line)
          SELECT d, f, t, v::jsonb, ty, re, de, ${now}, st, li FROM unnest(${rows.map((x) => x.device)}::text[], ${rows.map((x) => x.field)}::text[],
            ${rows.map((x) => x.ts)}::bigint[], ${rows.map((x) => x.value)}::text[], ${rows.map((x) => x.type)}::text[], ${rows.map((x) => x.reason)}::text[],
            ${rows.map((x) => x.detail)}::text[], ${rows.map((x) => x.status)}::integer[], ${rows.map((x) => x.line)}::text[]) AS x(d, f, t, v, ty, re, de, st, li)
          ON CONFLICT (device, field, ts) DO NOTHING`.execute(trx);
      }
      return mine;
    });
  }

  /** One claim and write. True: progress; false: back off; 'idle': nothing to claim. */
  private async attempt(): Promise<boolean | 'idle'> {
    const { backend, metrics, logger } = this.d;
    const c = await this.claim();
    if (!c) return 'idle';
    const end = metrics.storeWriteLatency.startTimer({ store: backend.kind });
    const out = await backend.write(c.body, c.lines, this.inflight.signal);
    if (out.ok) {
      end();
      const mine = await this.finish(c, []);
      // Rows taken over by another node after our lease ran out are counted by that node.
      if (mine === c.ids.length) metrics.readingsStoredTotal.inc({ store: backend.kind }, c.readings);
      else logger.warn({ rows: c.ids.length, stillOurs: mine }, 'influx outbox: a lease ran out during the write; another node sent those rows too (InfluxDB keeps one copy)');
      this.up();
      this.d.backoff.reset();
      return true;
    }
    this.noteFailure(out);
    if (out.retry) { await this.release(c); return false; }
    this.up();
    this.d.backoff.reset();
    metrics.storeErrorsTotal.inc({ store: backend.kind, kind: 'rejected' }, 1);
    logger.warn({ status: out.status, error: out.message, rows: c.ids.length, lines: c.lines }, 'InfluxDB rejected a batch; re-sending it in parts to find the rejected readings');
    const rejected: RejectedLine[] = [];
    const done = await findRejected({
      backend, signal: this.inflight.signal, onFailure: (o) => this.noteFailure(o),
      keepGoing: async () => !this.stopping && await this.renew(c),
    }, splitLines(c.body), out, rejected);
    if (!done) { await this.release(c); return false; }
    const mine = await this.finish(c, rejected);
    if (mine !== c.ids.length) return true;
    reportSettled(this.d, c.readings, rejected, 'telemetry_dead_readings', (r) => {
      // The field's type as InfluxDB has it, for the nodes' field-type rule (pg-influx-store.ts).
      const m = parseConflictMessage(r.error);
      if (m) this.d.onConflict?.(m.field, m.existing);
    });
    return true;
  }

  private up(): void {
    if (this.server === 'up') return;
    if (this.server === 'down') this.d.logger.info('InfluxDB reachable again; draining the outbox');
    this.server = 'up';
    this.d.onServerUp?.();
  }

  private noteFailure(out: WriteOutcome & { ok: false }): void {
    this.lastError = out.status !== null ? `HTTP ${out.status}: ${out.message}` : out.message;
    if (!out.retry) return;
    this.d.metrics.storeErrorsTotal.inc({ store: this.d.backend.kind, kind: out.status === null ? 'unavailable' : `http_${out.status}` });
    if (this.server !== 'down') {
      this.server = 'down';
      this.d.logger.warn({ error: this.lastError }, 'InfluxDB write failed; readings stay in the PostgreSQL outbox and are retried');
    } else if (this.d.backoff.attempts % 20 === 0) {
      this.d.logger.warn({ error: this.lastError, attempts: this.d.backoff.attempts }, 'InfluxDB still unreachable');
    }
  }

  /** Stop; a write in flight is given `boundMs`, then aborted (its lease runs out and another node sends it). */
  async stop(boundMs: number): Promise<void> {
    this.stopping = true;
    if (this.wakeFn) { const f = this.wakeFn; this.wakeFn = null; f(); }
    await endLoopWithin(this.loop, boundMs, this.inflight);
    this.loop = null;
  }
}

/** The outbox's size and its oldest row's `created` (null when empty). */
export async function outboxTotals(db: Db<unknown>): Promise<OutboxTotals> {
  const r = await sql<{ rows: number; readings: string; bytes: string; oldest: string | null }>`SELECT COUNT(*)::int AS rows,
    COALESCE(SUM(readings), 0)::text AS readings, COALESCE(SUM(bytes), 0)::text AS bytes, MIN(created)::text AS oldest FROM telemetry_influx_outbox`.execute(db.kysely);
  const x = r.rows[0]!;
  return { rows: x.rows, readings: Number(x.readings), bytes: Number(x.bytes), oldest: x.oldest === null ? null : Number(x.oldest) };
}

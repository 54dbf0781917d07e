/**
 * Schedule persistence over the `Db` port (src/storage/sql): the embedded
 * state.db, or PostgreSQL in cluster mode, with the same SQL.
 *
 * Besides the schedules, the repo keeps the occurrence claims
 * (`schedule_occurrences`, migrations.ts): a node fires or records an
 * occurrence only when its INSERT ... ON CONFLICT DO NOTHING claim wins
 * (scheduler.ts). A claim names the schedule's version (`updated_at`), so a node
 * that has not yet seen an edit or a deletion made on another node cannot claim
 * for the old version. `lastFiredAt` is the latest claimed occurrence: the
 * scheduler's cursor. `update()` never touches the claims, so an API edit
 * cannot make the scheduler replay or forget an occurrence.
 */
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Db } from '../../storage/sql/db.js';
import type { Schedule, ScheduleContent, ScheduleTarget, SchedulePriority } from './model.js';
import type { OccurrenceOutcome } from './migrations.js';

export { scheduleMigration, SCHEDULE_OCCURRENCES_MIGRATION, PG_SCHEDULE_MIGRATIONS, OCCURRENCE_OUTCOMES, type OccurrenceOutcome } from './migrations.js';

/** What a node did with one occurrence. `outcome` is absent while the claiming node is starting it. */
export interface OccurrenceRecord {
  scheduleId: string;
  occurrenceAt: number;
  nodeId: string;
  claimedAt: number;
  outcome?: OccurrenceOutcome;
  broadcastId?: string;
}

export interface OccurrenceClaim {
  scheduleId: string;
  /** The schedule's `updatedAt` the claimer planned with: no claim for another version (or a deleted or disabled schedule). */
  version: number;
  /** Planned times, each claimed on its own. */
  times: number[];
  nodeId: string;
  now: number;
  /** 'missed' to record them missed at once; null to claim them for firing (settle() records the outcome). */
  outcome: 'missed' | null;
}

export interface ScheduleReader {
  /** Every schedule, enabled or not, oldest first. */
  list(): Promise<Schedule[]>;
  get(id: string): Promise<Schedule | undefined>;
}

export interface ScheduleWriter extends ScheduleReader {
  /** Insert a new schedule; throws if the id exists. */
  insert(s: Schedule): Promise<void>;
  /** Replace a schedule's fields (not lastFiredAt). Returns false when it does not exist. */
  update(s: Schedule): Promise<boolean>;
  /** Deletes the schedule and its claims. */
  delete(id: string): Promise<boolean>;
}

export interface ScheduleRepo extends ScheduleWriter {
  /**
   * Runs `fn` in one write transaction that holds the schedules' write lock (on PostgreSQL an advisory lock, so
   * writers on every node take turns): a check over all schedules (the overlap check) and the write it allows
   * are atomic. Inside, await only `tx` (src/storage/state/sql.ts).
   */
  locked<T>(fn: (tx: ScheduleWriter, trx?: Transaction<unknown>) => Promise<T>): Promise<T>;
  /**
   * Every schedule, read in the caller's write transaction `trx` (on this repo's Db) after taking the schedules'
   * write lock as locked() does: no schedule write of any node commits between this read and the caller's commit
   * (a media delete checks that no schedule plays the media). Optional: repositories without a Db need not have it.
   */
  listLocked?(trx: Transaction<unknown>): Promise<Schedule[]>;
  /** Claims occurrences; returns the planned times this call won (the others were claimed before, or the version is stale). */
  claim(c: OccurrenceClaim): Promise<number[]>;
  /** Records the outcome of a claim `nodeId` holds; false when it no longer holds it (it expired). */
  settle(scheduleId: string, occurrenceAt: number, nodeId: string, outcome: OccurrenceOutcome, broadcastId?: string): Promise<boolean>;
  /**
   * settle() inside the caller's write transaction `trx` (on this repo's Db): the outcome commits with what the
   * caller writes there (the occurrence's broadcast), or not at all. On PostgreSQL the row stays locked until that
   * commit, so an expiry on another node waits for it and then finds the outcome. Optional: repositories without a
   * Db need not have it (the scheduler then settles after onOccurrence).
   */
  settleIn?(trx: Transaction<unknown>, scheduleId: string, occurrenceAt: number, nodeId: string, outcome: OccurrenceOutcome, broadcastId?: string): Promise<boolean>;
  /** Claims without an outcome claimed before `claimedBefore` become missed; returns them (each to exactly one caller). */
  expireClaims(claimedBefore: number): Promise<OccurrenceRecord[]>;
  /** The earliest claimed_at of claims without an outcome, if any. */
  oldestPending(): Promise<number | undefined>;
  /** One schedule's claims, latest first. */
  occurrences(scheduleId: string, limit: number): Promise<OccurrenceRecord[]>;
  /** Deletes settled claims planned before `before`, except each schedule's latest (its cursor). */
  prune(before: number): Promise<number>;
}

interface Row {
  id: string; name: string; target_json: string; content_json: string;
  cron: string | null; at: number | null; timezone: string; volume: number; priority: string;
  duration_sec: number | null; start_date: number | null; end_date: number | null; enabled: number;
  created_at: number; updated_at: number; created_by: string | null; last_fired: number | null;
}

interface ClaimRow {
  schedule_id: string; occurrence_at: number; node_id: string; claimed_at: number; outcome: string | null; broadcast_id: string | null;
}

function fromRow(r: Row): Schedule {
  const s: Schedule = {
    id: r.id, name: r.name,
    target: JSON.parse(r.target_json) as ScheduleTarget,
    content: JSON.parse(r.content_json) as ScheduleContent,
    timezone: r.timezone, volume: r.volume, priority: r.priority as SchedulePriority,
    enabled: Number(r.enabled) === 1, createdAt: Number(r.created_at), updatedAt: Number(r.updated_at),
  };
  if (r.cron !== null) s.cron = r.cron;
  if (r.at !== null) s.at = Number(r.at);
  if (r.duration_sec !== null) s.durationSec = Number(r.duration_sec);
  if (r.start_date !== null) s.startDate = Number(r.start_date);
  if (r.end_date !== null) s.endDate = Number(r.end_date);
  if (r.created_by !== null) s.createdBy = r.created_by;
  if (r.last_fired !== null) s.lastFiredAt = Number(r.last_fired);
  return s;
}

function claimFromRow(r: ClaimRow): OccurrenceRecord {
  return {
    scheduleId: r.schedule_id, occurrenceAt: Number(r.occurrence_at), nodeId: r.node_id, claimedAt: Number(r.claimed_at),
    ...(r.outcome !== null ? { outcome: r.outcome as OccurrenceOutcome } : {}),
    ...(r.broadcast_id !== null ? { broadcastId: r.broadcast_id } : {}),
  };
}

/** Column → value, in the order of the INSERT. */
function values(s: Schedule): Array<[string, unknown]> {
  return [
    ['id', s.id], ['name', s.name], ['target_json', JSON.stringify(s.target)], ['content_json', JSON.stringify(s.content)],
    ['cron', s.cron ?? null], ['at', s.at ?? null], ['timezone', s.timezone], ['volume', s.volume], ['priority', s.priority],
    ['duration_sec', s.durationSec ?? null], ['start_date', s.startDate ?? null], ['end_date', s.endDate ?? null],
    ['enabled', s.enabled ? 1 : 0], ['created_at', s.createdAt], ['updated_at', s.updatedAt], ['created_by', s.createdBy ?? null],
  ];
}

const SELECT = sql`SELECT s.id, s.name, s.target_json, s.content_json, s.cron, s.at, s.timezone, s.volume, s.priority,
  s.duration_sec, s.start_date, s.end_date, s.enabled, s.created_at, s.updated_at, s.created_by,
  (SELECT MAX(o.occurrence_at) FROM schedule_occurrences o WHERE o.schedule_id = s.id) AS last_fired
  FROM schedules s`;

/** Arbitrary constant: the advisory lock key of schedule writes on PostgreSQL. */
const PG_LOCK_KEY = 0x4b6e5363; // "KnSc"

type Q = Kysely<unknown> | Transaction<unknown>;

/** Reads and writes of schedules through one executor (the plain instance, or a transaction). */
class Writer implements ScheduleWriter {
  constructor(private readonly q: () => Q, private readonly order: string) {}

  async list(): Promise<Schedule[]> {
    const r = await sql<Row>`${SELECT} ORDER BY s.created_at, ${sql.raw(this.order)}`.execute(this.q());
    return r.rows.map(fromRow);
  }

  async get(id: string): Promise<Schedule | undefined> {
    const r = await sql<Row>`${SELECT} WHERE s.id = ${id}`.execute(this.q());
    return r.rows[0] ? fromRow(r.rows[0]) : undefined;
  }

  async insert(s: Schedule): Promise<void> {
    const v = values(s);
    await sql`INSERT INTO schedules (${sql.raw(v.map(([c]) => c).join(', '))}) VALUES (${sql.join(v.map(([, x]) => x))})`.execute(this.q());
  }

  async update(s: Schedule): Promise<boolean> {
    const sets = values(s).filter(([c]) => c !== 'id' && c !== 'created_at').map(([c, x]) => sql`${sql.raw(c)} = ${x}`);
    const r = await sql`UPDATE schedules SET ${sql.join(sets)} WHERE id = ${s.id} RETURNING id`.execute(this.q());
    return r.rows.length > 0;
  }

  async delete(id: string): Promise<boolean> {
    await sql`DELETE FROM schedule_occurrences WHERE schedule_id = ${id}`.execute(this.q());
    const r = await sql`DELETE FROM schedules WHERE id = ${id} RETURNING id`.execute(this.q());
    return r.rows.length > 0;
  }
}

export class SqlScheduleRepo implements ScheduleRepo {
  private readonly plain: Writer;

  /** `db` must have the schedule tables (SQLite: scheduleMigration and SCHEDULE_OCCURRENCES_MIGRATION; PostgreSQL: PG_SCHEDULE_MIGRATIONS). */
  constructor(private readonly db: Db<unknown>) {
    this.plain = new Writer(() => db.kysely, this.order());
  }

  /** Every write goes through db.write(): on SQLite a plain statement could otherwise land inside another write's open transaction. */
  private writer(trx: Transaction<unknown>): Writer { return new Writer(() => trx, this.order()); }

  private order(): string { return this.db.dialect === 'postgres' ? 's.seq' : 's.rowid'; }

  list(): Promise<Schedule[]> { return this.plain.list(); }
  get(id: string): Promise<Schedule | undefined> { return this.plain.get(id); }
  insert(s: Schedule): Promise<void> { return this.db.write((trx) => this.writer(trx).insert(s)); }
  update(s: Schedule): Promise<boolean> { return this.db.write((trx) => this.writer(trx).update(s)); }
  delete(id: string): Promise<boolean> {
    return this.db.write((trx) => this.writer(trx).delete(id));
  }

  locked<T>(fn: (tx: ScheduleWriter, trx?: Transaction<unknown>) => Promise<T>): Promise<T> {
    return this.db.write(async (trx) => {
      if (this.db.dialect === 'postgres') await sql`SELECT pg_advisory_xact_lock(${PG_LOCK_KEY})`.execute(trx);
      return fn(this.writer(trx), trx);
    });
  }

  async listLocked(trx: Transaction<unknown>): Promise<Schedule[]> {
    if (this.db.dialect === 'postgres') await sql`SELECT pg_advisory_xact_lock(${PG_LOCK_KEY})`.execute(trx);
    return this.writer(trx).list();
  }

  claim(c: OccurrenceClaim): Promise<number[]> {
    if (c.times.length === 0) return Promise.resolve([]);
    return this.db.write(async (trx) => {
      const won: number[] = [];
      for (const t of c.times) {
        // INSERT ... SELECT: the row exists only if the schedule still has the planned version (SQLite needs the
        // WHERE before ON CONFLICT to parse it). The casts type the parameters of the SELECT list on PostgreSQL.
        const r = await sql<{ occurrence_at: number }>`INSERT INTO schedule_occurrences (schedule_id, occurrence_at, node_id, claimed_at, outcome)
          SELECT id, CAST(${t} AS BIGINT), CAST(${c.nodeId} AS TEXT), CAST(${c.now} AS BIGINT), CAST(${c.outcome} AS TEXT)
          FROM schedules WHERE id = ${c.scheduleId} AND enabled = 1 AND updated_at = ${c.version}
          ON CONFLICT (schedule_id, occurrence_at) DO NOTHING RETURNING occurrence_at`.execute(trx);
        if (r.rows.length > 0) won.push(t);
      }
      return won;
    });
  }

  settle(scheduleId: string, occurrenceAt: number, nodeId: string, outcome: OccurrenceOutcome, broadcastId?: string): Promise<boolean> {
    return this.db.write((trx) => this.settleIn(trx, scheduleId, occurrenceAt, nodeId, outcome, broadcastId));
  }

  async settleIn(trx: Transaction<unknown>, scheduleId: string, occurrenceAt: number, nodeId: string, outcome: OccurrenceOutcome, broadcastId?: string): Promise<boolean> {
    // A guarded UPDATE rather than an error when the claim is gone: a failed statement would abort the caller's transaction.
    const r = await sql`UPDATE schedule_occurrences SET outcome = ${outcome}, broadcast_id = ${broadcastId ?? null}
      WHERE schedule_id = ${scheduleId} AND occurrence_at = ${occurrenceAt} AND node_id = ${nodeId} AND outcome IS NULL
      RETURNING occurrence_at`.execute(trx);
    return r.rows.length > 0;
  }

  async expireClaims(claimedBefore: number): Promise<OccurrenceRecord[]> {
    // On PostgreSQL a second node running this at once waits for the row locks, re-checks `outcome IS NULL`
    // and skips the rows: each expired claim is returned once.
    const r = await this.db.write((trx) => sql<ClaimRow>`UPDATE schedule_occurrences SET outcome = 'missed'
      WHERE outcome IS NULL AND claimed_at < ${claimedBefore}
      RETURNING schedule_id, occurrence_at, node_id, claimed_at, outcome, broadcast_id`.execute(trx));
    return r.rows.map(claimFromRow).sort((a, b) => a.occurrenceAt - b.occurrenceAt);
  }

  async oldestPending(): Promise<number | undefined> {
    const r = await sql<{ m: number | null }>`SELECT MIN(claimed_at) AS m FROM schedule_occurrences WHERE outcome IS NULL`.execute(this.db.kysely);
    const m = r.rows[0]?.m;
    return m === null || m === undefined ? undefined : Number(m);
  }

  async occurrences(scheduleId: string, limit: number): Promise<OccurrenceRecord[]> {
    const r = await sql<ClaimRow>`SELECT schedule_id, occurrence_at, node_id, claimed_at, outcome, broadcast_id FROM schedule_occurrences
      WHERE schedule_id = ${scheduleId} ORDER BY occurrence_at DESC LIMIT ${limit}`.execute(this.db.kysely);
    return r.rows.map(claimFromRow);
  }

  async prune(before: number): Promise<number> {
    const r = await this.db.write((trx) => sql`DELETE FROM schedule_occurrences WHERE occurrence_at < ${before} AND outcome IS NOT NULL
      AND occurrence_at < (SELECT MAX(o.occurrence_at) FROM schedule_occurrences o WHERE o.schedule_id = schedule_occurrences.schedule_id)
      RETURNING occurrence_at`.execute(trx));
    return r.rows.length;
  }
}

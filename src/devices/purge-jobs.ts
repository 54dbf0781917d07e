/**
 * The `device_purges` table (core migration 6, src/storage/state/migrations.ts; pg-schema.ts in cluster
 * mode): what is still to purge. Written
 * by the deletion itself (devices.ts, in the transaction that buries the id)
 * or by an explicit request for an id deleted earlier (`keng devices purge`);
 * read and emptied by the server's purger (purger.ts).
 */
import { sql, type Kysely } from 'kysely';
import type { Db } from '../storage/sql/index.js';
import type { Trx } from './statements.js';

/**
 * A purge starts this long after the deletion: readings of the device that
 * ingest had accepted just before (a group commit under way) are then in the
 * stores, and are purged with the rest instead of arriving after the purge.
 */
export const PURGE_SETTLE_MS = 3_000;

/** Cluster mode: how long a node keeps a purge it started before another may take it over (each stage is idempotent). */
export const PURGE_CLAIM_MS = 600_000;

export type PurgeStage = 'local' | 'remote';

export interface PurgeJob {
  deviceId: string;
  deletedAt: number;
  requestedAt: number;
  requestedBy: string;
  stage: PurgeStage;
  /** Removed so far, per place (PurgeCounts of the telemetry store). */
  removed: Record<string, number>;
  nextAt: number;
  attempts: number;
  lastError: string | null;
}

interface Row {
  device_id: string; deleted_at: number; requested_at: number; requested_by: string; stage: PurgeStage;
  removed_json: string; next_at: number; attempts: number; last_error: string | null;
}

function toJob(r: Row): PurgeJob {
  let removed: Record<string, number> = {};
  try { removed = JSON.parse(r.removed_json) as Record<string, number>; } catch { /* counts are informative only */ }
  return {
    deviceId: r.device_id, deletedAt: r.deleted_at, requestedAt: r.requested_at, requestedBy: r.requested_by,
    stage: r.stage, removed, nextAt: r.next_at, attempts: r.attempts, lastError: r.last_error,
  };
}

/** Where the queries run: the port's Kysely, or a write transaction. */
type Exec = Kysely<unknown> | Trx;

export class PurgeJobs {
  constructor(private readonly db: Db<unknown>) {}

  /** Records a purge to run from `notBefore` on (idempotent per id), in the caller's transaction. */
  static async request(trx: Trx, deviceId: string, deletedAt: number, now: number, by: string, notBefore = now + PURGE_SETTLE_MS): Promise<void> {
    // A second deletion of the same id before the first purge finished: one job, from the start, newest tombstone.
    await sql`INSERT INTO device_purges (device_id, deleted_at, requested_at, requested_by, next_at)
      VALUES (${deviceId}, ${deletedAt}, ${now}, ${by}, ${notBefore})
      ON CONFLICT (device_id) DO UPDATE SET deleted_at = excluded.deleted_at, requested_at = excluded.requested_at,
        requested_by = excluded.requested_by, stage = 'local', next_at = excluded.next_at, attempts = 0, last_error = NULL`.execute(trx);
  }

  /**
   * The next due job. In cluster mode it is also claimed for PURGE_CLAIM_MS (its next_at moves on), so
   * one node runs it; a node that dies mid-purge leaves it to another once the claim ends.
   */
  async due(now: number): Promise<PurgeJob | undefined> {
    const r = this.db.dialect === 'postgres'
      ? (await sql<Row>`UPDATE device_purges SET next_at = ${now + PURGE_CLAIM_MS} WHERE device_id = (
          SELECT device_id FROM device_purges WHERE next_at <= ${now} ORDER BY next_at, device_id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING *`.execute(this.db.kysely)).rows[0]
      : (await sql<Row>`SELECT * FROM device_purges WHERE next_at <= ${now} ORDER BY next_at, device_id LIMIT 1`.execute(this.db.kysely)).rows[0];
    return r ? toJob(r) : undefined;
  }

  async get(deviceId: string): Promise<PurgeJob | undefined> {
    const r = (await sql<Row>`SELECT * FROM device_purges WHERE device_id = ${deviceId}`.execute(this.db.kysely)).rows[0];
    return r ? toJob(r) : undefined;
  }

  async list(): Promise<PurgeJob[]> {
    return (await sql<Row>`SELECT * FROM device_purges ORDER BY requested_at, device_id`.execute(this.db.kysely)).rows.map(toJob);
  }

  /** When the earliest job is due (epoch ms), or null when there is none. */
  async nextAt(): Promise<number | null> {
    const r = (await sql<{ n: number | null }>`SELECT MIN(next_at) AS n FROM device_purges`.execute(this.db.kysely)).rows[0];
    return r?.n ?? null;
  }

  /** The local stores are clean: from now on only the remote database is left. */
  async advance(job: PurgeJob, removed: Record<string, number>): Promise<boolean> {
    return changed(await sql`UPDATE device_purges SET stage = 'remote', removed_json = ${JSON.stringify(removed)}
      WHERE device_id = ${job.deviceId} AND requested_at = ${job.requestedAt}`.execute(this.db.kysely));
  }

  async fail(job: PurgeJob, removed: Record<string, number>, error: string, nextAt: number): Promise<void> {
    await sql`UPDATE device_purges SET removed_json = ${JSON.stringify(removed)}, attempts = attempts + 1, last_error = ${error.slice(0, 1000)},
      next_at = ${nextAt} WHERE device_id = ${job.deviceId} AND requested_at = ${job.requestedAt}`.execute(this.db.kysely);
  }

  /** Only the request that ran: one made meanwhile (deleted again, purge asked again) stays. */
  static async finish(k: Exec, job: PurgeJob): Promise<boolean> {
    return changed(await sql`DELETE FROM device_purges WHERE device_id = ${job.deviceId} AND requested_at = ${job.requestedAt}`.execute(k));
  }
}

function changed(r: { numAffectedRows?: bigint }): boolean {
  return Number(r.numAffectedRows ?? 0) > 0;
}

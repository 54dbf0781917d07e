/**
 * The `device_purges` table (core migration 6, src/storage/state/migrations.ts): what is still to purge. Written
 * by the deletion itself (devices.ts, in the transaction that buries the id)
 * or by an explicit request for an id deleted earlier (`keng devices purge`);
 * read and emptied by the server's purger (purger.ts).
 */
import type { SqliteDatabase } from '../storage/state/index.js';

/**
 * A purge starts this long after the deletion: readings of the device that
 * ingest had accepted just before (a group commit under way) are then in the
 * stores, and are purged with the rest instead of arriving after the purge.
 */
export const PURGE_SETTLE_MS = 3_000;

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

export class PurgeJobs {
  private readonly s;

  constructor(db: SqliteDatabase) {
    this.s = {
      // A second deletion of the same id before the first purge finished: one job, from the start, newest tombstone.
      request: db.prepare(`INSERT INTO device_purges (device_id, deleted_at, requested_at, requested_by, next_at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (device_id) DO UPDATE SET deleted_at = excluded.deleted_at, requested_at = excluded.requested_at,
          requested_by = excluded.requested_by, stage = 'local', next_at = excluded.next_at, attempts = 0, last_error = NULL`),
      due: db.prepare('SELECT * FROM device_purges WHERE next_at <= ? ORDER BY next_at, device_id LIMIT 1'),
      all: db.prepare('SELECT * FROM device_purges ORDER BY requested_at, device_id'),
      get: db.prepare('SELECT * FROM device_purges WHERE device_id = ?'),
      nextAt: db.prepare('SELECT MIN(next_at) FROM device_purges').pluck(),
      advance: db.prepare("UPDATE device_purges SET stage = 'remote', removed_json = ? WHERE device_id = ? AND requested_at = ?"),
      fail: db.prepare(`UPDATE device_purges SET removed_json = ?, attempts = attempts + 1, last_error = ?, next_at = ?
        WHERE device_id = ? AND requested_at = ?`),
      // Only the request that ran: one made meanwhile (deleted again, purge asked again) stays.
      finish: db.prepare('DELETE FROM device_purges WHERE device_id = ? AND requested_at = ?'),
    };
  }

  /** Records a purge to run from `notBefore` on (idempotent per id). */
  request(deviceId: string, deletedAt: number, now: number, by: string, notBefore = now + PURGE_SETTLE_MS): void {
    this.s.request.run(deviceId, deletedAt, now, by, notBefore);
  }

  due(now: number): PurgeJob | undefined {
    const r = this.s.due.get(now) as Row | undefined;
    return r ? toJob(r) : undefined;
  }

  get(deviceId: string): PurgeJob | undefined {
    const r = this.s.get.get(deviceId) as Row | undefined;
    return r ? toJob(r) : undefined;
  }

  list(): PurgeJob[] { return (this.s.all.all() as Row[]).map(toJob); }

  /** When the earliest job is due (epoch ms), or null when there is none. */
  nextAt(): number | null { return this.s.nextAt.get() as number | null; }

  /** The local stores are clean: from now on only the remote database is left. */
  advance(job: PurgeJob, removed: Record<string, number>): boolean {
    return this.s.advance.run(JSON.stringify(removed), job.deviceId, job.requestedAt).changes > 0;
  }

  fail(job: PurgeJob, removed: Record<string, number>, error: string, nextAt: number): void {
    this.s.fail.run(JSON.stringify(removed), error.slice(0, 1000), nextAt, job.deviceId, job.requestedAt);
  }

  finish(job: PurgeJob): boolean {
    return this.s.finish.run(job.deviceId, job.requestedAt).changes > 0;
  }
}

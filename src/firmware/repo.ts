/**
 * The firmware tables (migration.ts; pg-schema.ts in cluster mode) on the state
 * `Db` port: the same SQL on the embedded SQLite store and on PostgreSQL.
 *
 * Concurrency (several nodes on one PostgreSQL):
 * - What devices report is one row per device (firmware_device_state), merged
 *   in one upsert: a report changes only the keys it carries, with no read
 *   before the write, so two nodes storing reports of devices of one rollout
 *   never overwrite each other's rows, and a rollout's progress (counted from
 *   those rows when read) stays exact. Nothing on the report path touches the
 *   rollout's own row.
 * - A rollout's second stage is a conditional update (`stage = 'first'`): of
 *   two nodes continuing it at once, one wins, the other gets false.
 * - Deleting a package locks its row first (FOR UPDATE on PostgreSQL): a
 *   rollout or an assignment inserted meanwhile on another node waits for it
 *   (its foreign key check needs the row) and then fails, or is seen and keeps
 *   the package.
 *
 * Every write takes an optional `also(trx)`, run inside the same transaction
 * (an audit entry that commits or rolls back with the change). Inside a write
 * only database calls are awaited (src/storage/state/sql.ts).
 */
import { sql, type RawBuilder, type Transaction } from 'kysely';
import type { Db } from '../storage/sql/index.js';
import type { ChecksumAlgorithm } from './checksum.js';
import type { Assignment, DeviceFwState, FirmwarePackage, Rollout } from './types.js';

type Trx = Transaction<unknown>;
/** Runs inside a repository write, in its transaction. */
export type InTrx = (trx: Trx) => Promise<unknown>;

interface PackageRow {
  id: string; title: string; version: string; model: string | null; size: number; checksum_algorithm: string;
  checksum: string; sha256: string; created_at: number; created_by: string | null;
}
interface RolloutRow {
  id: string; package_id: string; percent: number; devices_json: string; first_count: number; areas_json: string;
  stage: 'first' | 'all'; created_at: number; created_by: string | null; completed_at: number | null;
}
interface AssignmentRow { device_id: string; package_id: string; rollout_id: string | null; assigned_at: number }
interface StateRow { device_id: string; state: string | null; error: string | null; current_title: string | null; current_version: string | null; updated_at: number }

const pkg = (r: PackageRow): FirmwarePackage => ({
  id: r.id, title: r.title, version: r.version, model: r.model, size: Number(r.size), checksumAlgorithm: r.checksum_algorithm as ChecksumAlgorithm,
  checksum: r.checksum, sha256: r.sha256, createdAt: Number(r.created_at), createdBy: r.created_by,
});
const rollout = (r: RolloutRow): Rollout => ({
  id: r.id, packageId: r.package_id, percent: r.percent, devices: JSON.parse(r.devices_json) as string[], firstCount: r.first_count,
  areas: JSON.parse(r.areas_json) as string[], stage: r.stage, createdAt: Number(r.created_at), createdBy: r.created_by,
  completedAt: r.completed_at === null ? null : Number(r.completed_at),
});
const assignment = (r: AssignmentRow): Assignment => ({ deviceId: r.device_id, packageId: r.package_id, rolloutId: r.rollout_id, assignedAt: Number(r.assigned_at) });
const state = (r: StateRow): DeviceFwState => ({
  deviceId: r.device_id, state: r.state, error: r.error, currentTitle: r.current_title, currentVersion: r.current_version, updatedAt: Number(r.updated_at),
});

/** A device's report: each field present only when the report carried its key (undefined: keep the stored value). */
export interface StateReport {
  deviceId: string;
  state?: string | null;
  error?: string | null;
  currentTitle?: string | null;
  currentVersion?: string | null;
  at: number;
}

/** Rows per multi-row INSERT (4 values each: far below both dialects' parameter limits). */
const ASSIGN_BATCH = 500;

export class FirmwareRepo {
  constructor(private readonly db: Db<unknown>) {}

  private get k() { return this.db.kysely; }

  /** Transactions of one connection run one after the other (the port serialises them on SQLite). */
  private write<T>(fn: (trx: Trx) => Promise<T>): Promise<T> {
    return this.db.write(fn);
  }

  /** PostgreSQL: lock the rows read (row-level, until the transaction ends); SQLite's write transaction holds the whole database. */
  private forUpdate(): RawBuilder<unknown> { return this.db.dialect === 'postgres' ? sql` FOR UPDATE` : sql``; }

  // ---------------------------------------------------------------- packages

  async packages(): Promise<FirmwarePackage[]> {
    return (await sql<PackageRow>`SELECT * FROM firmware_packages ORDER BY created_at DESC, id`.execute(this.k)).rows.map(pkg);
  }

  async package(id: string): Promise<FirmwarePackage | undefined> {
    const r = (await sql<PackageRow>`SELECT * FROM firmware_packages WHERE id = ${id}`.execute(this.k)).rows[0];
    return r && pkg(r);
  }

  async packageByTitle(title: string, version: string): Promise<FirmwarePackage | undefined> {
    const r = (await sql<PackageRow>`SELECT * FROM firmware_packages WHERE title = ${title} AND version = ${version}`.execute(this.k)).rows[0];
    return r && pkg(r);
  }

  insertPackage(p: FirmwarePackage, also?: InTrx): Promise<void> {
    return this.write(async (trx) => {
      await sql`INSERT INTO firmware_packages (id, title, version, model, size, checksum_algorithm, checksum, sha256, created_at, created_by)
        VALUES (${p.id}, ${p.title}, ${p.version}, ${p.model}, ${p.size}, ${p.checksumAlgorithm}, ${p.checksum}, ${p.sha256}, ${p.createdAt}, ${p.createdBy})`.execute(trx);
      await also?.(trx);
    });
  }

  /** `in-use` while a rollout or an assignment names it (nothing deleted, `also` not run). */
  deletePackage(id: string, also?: InTrx): Promise<'deleted' | 'missing' | 'in-use'> {
    return this.write(async (trx) => {
      const found = (await sql<{ id: string }>`SELECT id FROM firmware_packages WHERE id = ${id}${this.forUpdate()}`.execute(trx)).rows.length > 0;
      if (!found) return 'missing';
      const used = await sql<{ n: number }>`SELECT (SELECT count(*) FROM firmware_assignments WHERE package_id = ${id})
        + (SELECT count(*) FROM firmware_rollouts WHERE package_id = ${id}) AS n`.execute(trx);
      if (Number(used.rows[0]!.n) > 0) return 'in-use';
      await sql`DELETE FROM firmware_packages WHERE id = ${id}`.execute(trx);
      await also?.(trx);
      return 'deleted';
    });
  }

  // ---------------------------------------------------------------- rollouts

  async rollouts(): Promise<Rollout[]> {
    return (await sql<RolloutRow>`SELECT * FROM firmware_rollouts ORDER BY created_at DESC, id`.execute(this.k)).rows.map(rollout);
  }

  async rollout(id: string): Promise<Rollout | undefined> {
    const r = (await sql<RolloutRow>`SELECT * FROM firmware_rollouts WHERE id = ${id}`.execute(this.k)).rows[0];
    return r && rollout(r);
  }

  /** Inserts the rollout and assigns its first stage (all of it when `stage` is 'all'), in one transaction. */
  insertRollout(r: Rollout, at: number, also?: InTrx): Promise<void> {
    return this.write(async (trx) => {
      await sql`INSERT INTO firmware_rollouts (id, package_id, percent, devices_json, first_count, areas_json, stage, created_at, created_by, completed_at)
        VALUES (${r.id}, ${r.packageId}, ${r.percent}, ${JSON.stringify(r.devices)}, ${r.firstCount}, ${JSON.stringify(r.areas)}, ${r.stage},
          ${r.createdAt}, ${r.createdBy}, ${r.completedAt})`.execute(trx);
      await this.assign(trx, r.devices.slice(0, r.stage === 'all' ? r.devices.length : r.firstCount), r.packageId, r.id, at);
      await also?.(trx);
    });
  }

  /**
   * Second stage: assigns `rest` and marks the rollout complete, in one
   * transaction. Undefined when it was complete already (another request or
   * node got there first: nothing assigned, `also` not run).
   */
  completeRollout(r: Rollout, rest: string[], at: number, also?: InTrx): Promise<Rollout | undefined> {
    return this.write(async (trx) => {
      const done = (await sql<RolloutRow>`UPDATE firmware_rollouts SET stage = 'all', completed_at = ${at}
        WHERE id = ${r.id} AND stage = 'first' RETURNING *`.execute(trx)).rows[0];
      if (!done) return undefined;
      await this.assign(trx, rest, r.packageId, r.id, at);
      await also?.(trx);
      return rollout(done);
    });
  }

  private async assign(trx: Trx, devices: string[], packageId: string, rolloutId: string, at: number): Promise<void> {
    for (let i = 0; i < devices.length; i += ASSIGN_BATCH) {
      const rows = devices.slice(i, i + ASSIGN_BATCH).map((d) => sql`(${d}, ${packageId}, ${rolloutId}, ${at})`);
      await sql`INSERT INTO firmware_assignments (device_id, package_id, rollout_id, assigned_at) VALUES ${sql.join(rows)}
        ON CONFLICT (device_id) DO UPDATE SET package_id = excluded.package_id, rollout_id = excluded.rollout_id, assigned_at = excluded.assigned_at`.execute(trx);
    }
  }

  // ---------------------------------------------------------------- devices

  async assignments(): Promise<Assignment[]> {
    return (await sql<AssignmentRow>`SELECT * FROM firmware_assignments ORDER BY device_id`.execute(this.k)).rows.map(assignment);
  }

  async states(): Promise<DeviceFwState[]> {
    return (await sql<StateRow>`SELECT * FROM firmware_device_state ORDER BY device_id`.execute(this.k)).rows.map(state);
  }

  /** One device's assignment and reported state, read together. */
  async device(deviceId: string): Promise<{ assignment?: Assignment; state?: DeviceFwState }> {
    const [a, s] = await Promise.all([
      sql<AssignmentRow>`SELECT * FROM firmware_assignments WHERE device_id = ${deviceId}`.execute(this.k),
      sql<StateRow>`SELECT * FROM firmware_device_state WHERE device_id = ${deviceId}`.execute(this.k),
    ]);
    return { assignment: a.rows[0] && assignment(a.rows[0]), state: s.rows[0] && state(s.rows[0]) };
  }

  /**
   * Merges a report into the device's row in one statement (no read first):
   * the keys the report carries replace the stored ones; `fw_state` without
   * `fw_error` clears the error (a new state, the old error no longer applies).
   * Returns the row as stored.
   */
  putState(s: StateReport): Promise<DeviceFwState> {
    const has = (v: unknown): number => (v === undefined ? 0 : 1);
    return this.write(async (trx) => {
      const r = await sql<StateRow>`INSERT INTO firmware_device_state AS s (device_id, state, error, current_title, current_version, updated_at)
        VALUES (${s.deviceId}, ${s.state ?? null}, ${s.error ?? null}, ${s.currentTitle ?? null}, ${s.currentVersion ?? null}, ${s.at})
        ON CONFLICT (device_id) DO UPDATE SET
          state = CASE WHEN ${has(s.state)} = 1 THEN excluded.state ELSE s.state END,
          error = CASE WHEN ${has(s.error)} = 1 THEN excluded.error WHEN ${has(s.state)} = 1 THEN NULL ELSE s.error END,
          current_title = CASE WHEN ${has(s.currentTitle)} = 1 THEN excluded.current_title ELSE s.current_title END,
          current_version = CASE WHEN ${has(s.currentVersion)} = 1 THEN excluded.current_version ELSE s.current_version END,
          updated_at = excluded.updated_at
        RETURNING *`.execute(trx);
      return state(r.rows[0]!);
    });
  }

  /** A deleted device's rows (the embedded store's foreign keys cascade; PostgreSQL has none to the devices). */
  forgetDevice(deviceId: string): Promise<void> {
    return this.write(async (trx) => {
      await sql`DELETE FROM firmware_assignments WHERE device_id = ${deviceId}`.execute(trx);
      await sql`DELETE FROM firmware_device_state WHERE device_id = ${deviceId}`.execute(trx);
    });
  }
}

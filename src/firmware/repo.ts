/** The firmware tables (migration.ts). */
import { statementsOn, type SqliteDatabase } from '../storage/state/index.js';
import type { ChecksumAlgorithm } from './checksum.js';
import type { Assignment, DeviceFwState, FirmwarePackage, Rollout } from './types.js';

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
  id: r.id, title: r.title, version: r.version, model: r.model, size: r.size, checksumAlgorithm: r.checksum_algorithm as ChecksumAlgorithm,
  checksum: r.checksum, sha256: r.sha256, createdAt: r.created_at, createdBy: r.created_by,
});
const rollout = (r: RolloutRow): Rollout => ({
  id: r.id, packageId: r.package_id, percent: r.percent, devices: JSON.parse(r.devices_json) as string[], firstCount: r.first_count,
  areas: JSON.parse(r.areas_json) as string[], stage: r.stage, createdAt: r.created_at, createdBy: r.created_by, completedAt: r.completed_at,
});
const assignment = (r: AssignmentRow): Assignment => ({ deviceId: r.device_id, packageId: r.package_id, rolloutId: r.rollout_id, assignedAt: r.assigned_at });
const state = (r: StateRow): DeviceFwState => ({
  deviceId: r.device_id, state: r.state, error: r.error, currentTitle: r.current_title, currentVersion: r.current_version, updatedAt: r.updated_at,
});

function prepare(db: SqliteDatabase) {
  return {
    db,
    packages: db.prepare('SELECT * FROM firmware_packages ORDER BY created_at DESC, id'),
    package: db.prepare('SELECT * FROM firmware_packages WHERE id = ?'),
    packageByTitle: db.prepare('SELECT * FROM firmware_packages WHERE title = ? AND version = ?'),
    insertPackage: db.prepare(`INSERT INTO firmware_packages (id, title, version, model, size, checksum_algorithm, checksum, sha256, created_at, created_by)
      VALUES (@id, @title, @version, @model, @size, @checksumAlgorithm, @checksum, @sha256, @createdAt, @createdBy)`),
    deletePackage: db.prepare('DELETE FROM firmware_packages WHERE id = ?'),
    packageUsed: db.prepare(`SELECT (SELECT count(*) FROM firmware_assignments WHERE package_id = ?) + (SELECT count(*) FROM firmware_rollouts WHERE package_id = ?) AS n`),
    rollouts: db.prepare('SELECT * FROM firmware_rollouts ORDER BY created_at DESC, id'),
    rollout: db.prepare('SELECT * FROM firmware_rollouts WHERE id = ?'),
    insertRollout: db.prepare(`INSERT INTO firmware_rollouts (id, package_id, percent, devices_json, first_count, areas_json, stage, created_at, created_by)
      VALUES (@id, @packageId, @percent, @devices, @firstCount, @areas, @stage, @createdAt, @createdBy)`),
    completeRollout: db.prepare(`UPDATE firmware_rollouts SET stage = 'all', completed_at = ? WHERE id = ? AND stage = 'first'`),
    assignments: db.prepare('SELECT * FROM firmware_assignments'),
    assign: db.prepare(`INSERT INTO firmware_assignments (device_id, package_id, rollout_id, assigned_at) VALUES (?, ?, ?, ?)
      ON CONFLICT (device_id) DO UPDATE SET package_id = excluded.package_id, rollout_id = excluded.rollout_id, assigned_at = excluded.assigned_at`),
    unassign: db.prepare('DELETE FROM firmware_assignments WHERE device_id = ?'),
    states: db.prepare('SELECT * FROM firmware_device_state'),
    putState: db.prepare(`INSERT INTO firmware_device_state (device_id, state, error, current_title, current_version, updated_at)
      VALUES (@deviceId, @state, @error, @currentTitle, @currentVersion, @updatedAt)
      ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, error = excluded.error, current_title = excluded.current_title,
        current_version = excluded.current_version, updated_at = excluded.updated_at`),
  };
}

export class FirmwareRepo {
  /** Statements for the state store's connection, prepared when first needed (it opens at start). */
  private readonly sql = statementsOn(() => this.db(), prepare);

  constructor(private readonly db: () => SqliteDatabase) {}

  packages(): FirmwarePackage[] { return (this.sql().packages.all() as PackageRow[]).map(pkg); }
  package(id: string): FirmwarePackage | undefined { const r = this.sql().package.get(id) as PackageRow | undefined; return r && pkg(r); }
  packageByTitle(title: string, version: string): FirmwarePackage | undefined {
    const r = this.sql().packageByTitle.get(title, version) as PackageRow | undefined;
    return r && pkg(r);
  }
  insertPackage(p: FirmwarePackage): void { this.sql().insertPackage.run(p); }
  /** False when a rollout or an assignment still names it. */
  deletePackage(id: string): boolean {
    const s = this.sql();
    return s.db.transaction(() => {
      if ((s.packageUsed.get(id, id) as { n: number }).n > 0) return false;
      return s.deletePackage.run(id).changes > 0;
    })();
  }

  rollouts(): Rollout[] { return (this.sql().rollouts.all() as RolloutRow[]).map(rollout); }
  rollout(id: string): Rollout | undefined { const r = this.sql().rollout.get(id) as RolloutRow | undefined; return r && rollout(r); }
  /** Inserts the rollout and assigns its first stage, in one transaction. */
  insertRollout(r: Rollout, at: number): void {
    const s = this.sql();
    s.db.transaction(() => {
      s.insertRollout.run({
        id: r.id, packageId: r.packageId, percent: r.percent, devices: JSON.stringify(r.devices), firstCount: r.firstCount,
        areas: JSON.stringify(r.areas), stage: r.stage, createdAt: r.createdAt, createdBy: r.createdBy,
      });
      for (const d of r.devices.slice(0, r.stage === 'all' ? r.devices.length : r.firstCount)) s.assign.run(d, r.packageId, r.id, at);
    })();
  }
  /** Second stage: assigns the rest (devices still registered); false when it was already complete. */
  completeRollout(r: Rollout, rest: string[], at: number): boolean {
    const s = this.sql();
    return s.db.transaction(() => {
      if (s.completeRollout.run(at, r.id).changes === 0) return false;
      for (const d of rest) s.assign.run(d, r.packageId, r.id, at);
      return true;
    })();
  }
  assignments(): Assignment[] { return (this.sql().assignments.all() as AssignmentRow[]).map(assignment); }
  unassign(deviceId: string): void { this.sql().unassign.run(deviceId); }
  states(): DeviceFwState[] { return (this.sql().states.all() as StateRow[]).map(state); }
  putState(s: DeviceFwState): void { this.sql().putState.run(s); }
}

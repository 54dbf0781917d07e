/**
 * Schedule persistence. Synchronous, like better-sqlite3 itself.
 *
 * `last_fired_at` is the scheduler's cursor: the planned time of the last
 * occurrence it handled (fired, or recorded as missed). It only moves
 * forward, and `update()` never touches it, so an API edit cannot make the
 * scheduler replay or forget an occurrence.
 */
import type Database from 'better-sqlite3';
import type { Schedule, ScheduleContent, ScheduleTarget, SchedulePriority } from './model.js';

export interface ScheduleRepo {
  /** Every schedule, enabled or not, oldest first. */
  list(): Schedule[];
  get(id: string): Schedule | undefined;
  /** Insert a new schedule; throws if the id exists. */
  insert(s: Schedule): void;
  /** Replace a schedule's fields (not lastFiredAt). Returns false when it does not exist. */
  update(s: Schedule): boolean;
  delete(id: string): boolean;
  /** Move the scheduler cursor forward (ignored if not later than the stored value). */
  setLastFired(id: string, plannedAt: number): void;
}

/**
 * State-DB migration. Version 100 so it cannot collide with the core list;
 * idempotent (IF NOT EXISTS) so it can be renumbered safely.
 */
export const scheduleMigration = {
  version: 100,
  name: 'schedules',
  up: `
    CREATE TABLE IF NOT EXISTS schedules (
      id            TEXT PRIMARY KEY,
      name          TEXT NOT NULL,
      target_json   TEXT NOT NULL CHECK (json_valid(target_json)),
      content_json  TEXT NOT NULL CHECK (json_valid(content_json)),
      cron          TEXT,
      at            INTEGER,
      timezone      TEXT NOT NULL,
      volume        INTEGER NOT NULL CHECK (volume BETWEEN 0 AND 100),
      priority      TEXT NOT NULL CHECK (priority IN ('normal', 'priority')),
      duration_sec  REAL CHECK (duration_sec IS NULL OR duration_sec > 0),
      start_date    INTEGER,
      end_date      INTEGER,
      enabled       INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
      created_at    INTEGER NOT NULL,
      updated_at    INTEGER NOT NULL,
      created_by    TEXT,
      last_fired_at INTEGER,
      CHECK ((cron IS NULL) <> (at IS NULL))
    ) STRICT;
    CREATE INDEX IF NOT EXISTS schedules_enabled ON schedules(enabled);
  `,
} as const;

interface Row {
  id: string; name: string; target_json: string; content_json: string;
  cron: string | null; at: number | null; timezone: string; volume: number; priority: string;
  duration_sec: number | null; start_date: number | null; end_date: number | null; enabled: number;
  created_at: number; updated_at: number; created_by: string | null; last_fired_at: number | null;
}

function fromRow(r: Row): Schedule {
  const s: Schedule = {
    id: r.id, name: r.name,
    target: JSON.parse(r.target_json) as ScheduleTarget,
    content: JSON.parse(r.content_json) as ScheduleContent,
    timezone: r.timezone, volume: r.volume, priority: r.priority as SchedulePriority,
    enabled: r.enabled === 1, createdAt: r.created_at, updatedAt: r.updated_at,
  };
  if (r.cron !== null) s.cron = r.cron;
  if (r.at !== null) s.at = r.at;
  if (r.duration_sec !== null) s.durationSec = r.duration_sec;
  if (r.start_date !== null) s.startDate = r.start_date;
  if (r.end_date !== null) s.endDate = r.end_date;
  if (r.created_by !== null) s.createdBy = r.created_by;
  if (r.last_fired_at !== null) s.lastFiredAt = r.last_fired_at;
  return s;
}

function params(s: Schedule): Record<string, unknown> {
  return {
    id: s.id, name: s.name, target_json: JSON.stringify(s.target), content_json: JSON.stringify(s.content),
    cron: s.cron ?? null, at: s.at ?? null, timezone: s.timezone, volume: s.volume, priority: s.priority,
    duration_sec: s.durationSec ?? null, start_date: s.startDate ?? null, end_date: s.endDate ?? null,
    enabled: s.enabled ? 1 : 0, created_at: s.createdAt, updated_at: s.updatedAt, created_by: s.createdBy ?? null,
  };
}

const COLS = 'id, name, target_json, content_json, cron, at, timezone, volume, priority, duration_sec, start_date, end_date, enabled, created_at, updated_at, created_by';

export class SqliteScheduleRepo implements ScheduleRepo {
  private readonly stmts;

  /** `db` must already have `scheduleMigration` applied. */
  constructor(db: Database.Database) {
    this.stmts = {
      list: db.prepare<[], Row>(`SELECT *, rowid FROM schedules ORDER BY created_at, rowid`),
      get: db.prepare<[string], Row>(`SELECT * FROM schedules WHERE id = ?`),
      insert: db.prepare(`INSERT INTO schedules (${COLS}) VALUES (${COLS.split(', ').map((c) => '@' + c).join(', ')})`),
      update: db.prepare(`UPDATE schedules SET ${COLS.split(', ').filter((c) => c !== 'id' && c !== 'created_at')
        .map((c) => `${c} = @${c}`).join(', ')} WHERE id = @id`),
      delete: db.prepare(`DELETE FROM schedules WHERE id = ?`),
      setLastFired: db.prepare(`UPDATE schedules SET last_fired_at = @t WHERE id = @id AND (last_fired_at IS NULL OR last_fired_at < @t)`),
    };
  }

  list(): Schedule[] { return this.stmts.list.all().map(fromRow); }
  get(id: string): Schedule | undefined {
    const r = this.stmts.get.get(id);
    return r ? fromRow(r) : undefined;
  }
  insert(s: Schedule): void { this.stmts.insert.run(params(s)); }
  update(s: Schedule): boolean {
    const p = params(s);
    delete p.created_at;
    return this.stmts.update.run(p).changes > 0;
  }
  delete(id: string): boolean { return this.stmts.delete.run(id).changes > 0; }
  setLastFired(id: string, plannedAt: number): void { this.stmts.setLastFired.run({ id, t: plannedAt }); }
}

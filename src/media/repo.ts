/** Rows of table `media` (see migration.ts). */
import type { Statement } from 'better-sqlite3';
import type { SqliteDatabase } from '../storage/state/db.js';
import type { MediaRecord, MediaSource } from './types.js';

interface Row {
  id: string; name: string; mime: string; ext: string; size: number; sha256: string; duration_sec: number;
  source: MediaSource; text: string | null; created_at: number; created_by: string | null; areas_json: string;
}

export type StoredMedia = MediaRecord & { ext: string };

/** The record as the library hands it out: the file's extension is storage detail. */
export function toRecord(r: StoredMedia): MediaRecord {
  const { ext: _ext, ...rest } = r;
  return rest;
}

function fromRow(r: Row): StoredMedia {
  return {
    id: r.id, name: r.name, mime: r.mime, ext: r.ext, size: r.size, sha256: r.sha256, durationSec: r.duration_sec,
    source: r.source, text: r.text, createdAt: r.created_at, createdBy: r.created_by, areas: parseAreas(r.areas_json),
  };
}

function parseAreas(json: string): string[] {
  try {
    const v: unknown = JSON.parse(json);
    return Array.isArray(v) ? v.filter((a): a is string => typeof a === 'string') : [];
  } catch {
    return []; // unreadable: admins only, never everyone
  }
}

/**
 * `sees` of a MediaViewer as one JSON parameter (null: every row), and the
 * condition that keeps the rows with an area in it.
 */
const VISIBLE = `(@sees IS NULL OR EXISTS (SELECT 1 FROM json_each(media.areas_json) a WHERE a.value IN (SELECT value FROM json_each(@sees))))`;

export class MediaRepo {
  /** get()'s statement, prepared once per database: every speaker's download of a broadcast reads a row (2,000 at once). */
  private getStmt: { db: SqliteDatabase; stmt: Statement } | undefined;

  constructor(private readonly db: () => SqliteDatabase) {}

  insert(m: StoredMedia): void {
    this.db().prepare(`INSERT INTO media (id, name, mime, ext, size, sha256, duration_sec, source, text, created_at, created_by, areas_json)
      VALUES (@id, @name, @mime, @ext, @size, @sha256, @durationSec, @source, @text, @createdAt, @createdBy, @areasJson)`).run({ ...m, areasJson: JSON.stringify(m.areas) });
  }

  /** Changes name and/or areas; false when the row is gone. */
  update(id: string, c: { name?: string; areas?: readonly string[] }): boolean {
    return this.db().prepare(`UPDATE media SET name = COALESCE(@name, name), areas_json = COALESCE(@areasJson, areas_json) WHERE id = @id`)
      .run({ id, name: c.name ?? null, areasJson: c.areas ? JSON.stringify(c.areas) : null }).changes > 0;
  }

  get(id: string): StoredMedia | undefined {
    const db = this.db();
    if (this.getStmt?.db !== db) this.getStmt = { db, stmt: db.prepare('SELECT * FROM media WHERE id = ?') };
    const r = this.getStmt.stmt.get(id) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  /**
   * Newest first; with `sees`, only rows with an area in it (filtered in SQL,
   * so that limit and offset page through what the caller may see).
   */
  list(limit: number, offset: number, sees?: ReadonlySet<string>): StoredMedia[] {
    return (this.db().prepare(`SELECT * FROM media WHERE ${VISIBLE} ORDER BY created_at DESC, rowid DESC LIMIT @limit OFFSET @offset`)
      .all({ sees: sees ? JSON.stringify([...sees]) : null, limit, offset }) as Row[]).map(fromRow);
  }

  count(sees?: ReadonlySet<string>): number {
    return Number(this.db().prepare(`SELECT COUNT(*) FROM media WHERE ${VISIBLE}`).pluck().get({ sees: sees ? JSON.stringify([...sees]) : null }));
  }

  delete(id: string): boolean {
    return this.db().prepare('DELETE FROM media WHERE id = ?').run(id).changes > 0;
  }

  /** File names (`<id>.<ext>`) of every row. */
  fileNames(): Set<string> {
    const rows = this.db().prepare('SELECT id, ext FROM media').all() as Array<{ id: string; ext: string }>;
    return new Set(rows.map((r) => `${r.id}.${r.ext}`));
  }
}

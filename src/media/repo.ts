/** Rows of table `media` (see migration.ts). */
import type { Statement } from 'better-sqlite3';
import type { SqliteDatabase } from '../storage/state/db.js';
import type { MediaRecord, MediaSource } from './types.js';

interface Row {
  id: string; name: string; mime: string; ext: string; size: number; sha256: string; duration_sec: number;
  source: MediaSource; text: string | null; created_at: number; created_by: string | null;
}

export type StoredMedia = MediaRecord & { ext: string };

function fromRow(r: Row): StoredMedia {
  return {
    id: r.id, name: r.name, mime: r.mime, ext: r.ext, size: r.size, sha256: r.sha256, durationSec: r.duration_sec,
    source: r.source, text: r.text, createdAt: r.created_at, createdBy: r.created_by,
  };
}

export class MediaRepo {
  /** get()'s statement, prepared once per database: every speaker's download of a broadcast reads a row (2,000 at once). */
  private getStmt: { db: SqliteDatabase; stmt: Statement } | undefined;

  constructor(private readonly db: () => SqliteDatabase) {}

  insert(m: StoredMedia): void {
    this.db().prepare(`INSERT INTO media (id, name, mime, ext, size, sha256, duration_sec, source, text, created_at, created_by)
      VALUES (@id, @name, @mime, @ext, @size, @sha256, @durationSec, @source, @text, @createdAt, @createdBy)`).run(m);
  }

  get(id: string): StoredMedia | undefined {
    const db = this.db();
    if (this.getStmt?.db !== db) this.getStmt = { db, stmt: db.prepare('SELECT * FROM media WHERE id = ?') };
    const r = this.getStmt.stmt.get(id) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  /** Newest first. */
  list(limit: number, offset: number): StoredMedia[] {
    return (this.db().prepare('SELECT * FROM media ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?').all(limit, offset) as Row[]).map(fromRow);
  }

  count(): number {
    return Number(this.db().prepare('SELECT COUNT(*) FROM media').pluck().get());
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

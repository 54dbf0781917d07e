/**
 * Rows of table `media` (migration.ts; pg-schema.ts in cluster mode) on the
 * state `Db` port: the same SQL on the embedded SQLite store and on PostgreSQL.
 *
 * Reads take an optional executor: the plain instance, or the transaction of a
 * change (library.ts runs its checks and its write in one). Inside a write only
 * database calls are awaited (src/storage/state/sql.ts).
 */
import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import type { Db } from '../storage/sql/index.js';
import type { MediaRecord, MediaSource } from './types.js';

type Trx = Transaction<unknown>;
type Q = Kysely<unknown> | Trx;

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
    id: r.id, name: r.name, mime: r.mime, ext: r.ext, size: Number(r.size), sha256: r.sha256, durationSec: Number(r.duration_sec),
    source: r.source, text: r.text, createdAt: Number(r.created_at), createdBy: r.created_by, areas: parseAreas(r.areas_json),
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

const COLUMNS = sql`id, name, mime, ext, size, sha256, duration_sec, source, text, created_at, created_by, areas_json`;

export class MediaRepo {
  constructor(private readonly db: Db<unknown>) {}

  get dialect(): Db['dialect'] { return this.db.dialect; }

  /** One write transaction: every change goes through here (on SQLite a plain statement could join another write's open transaction). */
  write<T>(fn: (trx: Trx) => Promise<T>): Promise<T> { return this.db.write(fn); }

  /** Insertion order, newest first: SQLite's rowid, PostgreSQL's identity column (pg-schema.ts). */
  private order(): RawBuilder<unknown> {
    return this.db.dialect === 'postgres' ? sql`created_at DESC, seq DESC` : sql`created_at DESC, rowid DESC`;
  }

  /**
   * `sees` of a MediaViewer as a condition on the rows (undefined: every row):
   * rows with an area in it, filtered in SQL so that limit and offset page
   * through what the caller may see.
   */
  private visible(sees: ReadonlySet<string> | undefined): RawBuilder<unknown> {
    if (!sees) return sql`1 = 1`;
    if (this.db.dialect === 'postgres') {
      return sql`EXISTS (SELECT 1 FROM jsonb_array_elements_text(media.areas_json::jsonb) a(v) WHERE a.v = ANY(${[...sees]}::text[]))`;
    }
    return sql`EXISTS (SELECT 1 FROM json_each(media.areas_json) a WHERE a.value IN (SELECT value FROM json_each(${JSON.stringify([...sees])})))`;
  }

  /** Every row (the library's in-memory copy). */
  async all(): Promise<StoredMedia[]> {
    return (await sql<Row>`SELECT ${COLUMNS} FROM media ORDER BY ${this.order()}`.execute(this.db.kysely)).rows.map(fromRow);
  }

  /** `lock`: PostgreSQL locks the row until the transaction `q` ends (SQLite's write transaction holds the whole database). */
  async get(id: string, q: Q = this.db.kysely, lock = false): Promise<StoredMedia | undefined> {
    const forUpdate = lock && this.db.dialect === 'postgres' ? sql` FOR UPDATE` : sql``;
    const r = (await sql<Row>`SELECT ${COLUMNS} FROM media WHERE id = ${id}${forUpdate}`.execute(q)).rows[0];
    return r && fromRow(r);
  }

  /** Newest first; with `sees`, only rows with an area in it. */
  async list(limit: number, offset: number, sees?: ReadonlySet<string>): Promise<StoredMedia[]> {
    return (await sql<Row>`SELECT ${COLUMNS} FROM media WHERE ${this.visible(sees)} ORDER BY ${this.order()} LIMIT ${limit} OFFSET ${offset}`
      .execute(this.db.kysely)).rows.map(fromRow);
  }

  async count(sees?: ReadonlySet<string>): Promise<number> {
    const r = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM media WHERE ${this.visible(sees)}`.execute(this.db.kysely);
    return Number(r.rows[0]!.n);
  }

  async insert(m: StoredMedia, trx: Trx): Promise<void> {
    await sql`INSERT INTO media (${COLUMNS}) VALUES (${m.id}, ${m.name}, ${m.mime}, ${m.ext}, ${m.size}, ${m.sha256}, ${m.durationSec},
      ${m.source}, ${m.text}, ${m.createdAt}, ${m.createdBy}, ${JSON.stringify(m.areas)})`.execute(trx);
  }

  /** Changes name and/or areas; the row after, or undefined when it is gone. */
  async update(id: string, c: { name?: string; areas?: readonly string[] }, trx: Trx): Promise<StoredMedia | undefined> {
    const r = await sql<Row>`UPDATE media SET name = COALESCE(${c.name ?? null}, name), areas_json = COALESCE(${c.areas ? JSON.stringify(c.areas) : null}, areas_json)
      WHERE id = ${id} RETURNING ${COLUMNS}`.execute(trx);
    return r.rows[0] && fromRow(r.rows[0]);
  }

  async delete(id: string, trx: Trx): Promise<boolean> {
    return (await sql`DELETE FROM media WHERE id = ${id} RETURNING id`.execute(trx)).rows.length > 0;
  }
}

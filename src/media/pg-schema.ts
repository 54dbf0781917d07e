/**
 * The media table on PostgreSQL (cluster mode): the same columns as the embedded
 * store's (migration.ts: `media`, then `media-areas`), so every node lists the
 * same library. The files are not in the database (docs/cluster.md, "Media").
 *
 * `seq` stands in for SQLite's rowid: the order of items made in the same
 * millisecond (newest first), which a text id cannot give.
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const MEDIA_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'media',
  sqlite: [],
  postgres: [
    `CREATE TABLE media (
      id           text PRIMARY KEY,
      seq          bigint GENERATED ALWAYS AS IDENTITY,
      name         text NOT NULL,
      mime         text NOT NULL,
      ext          text NOT NULL CHECK (ext IN ('mp3', 'wav', 'ogg')),
      size         bigint NOT NULL CHECK (size > 0),
      sha256       text NOT NULL CHECK (length(sha256) = 64),
      duration_sec double precision NOT NULL CHECK (duration_sec > 0),
      source       text NOT NULL CHECK (source IN ('upload', 'tts')),
      text         text,
      created_at   bigint NOT NULL,
      created_by   text,
      areas_json   text NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(areas_json::jsonb) = 'array'))`,
    'CREATE INDEX media_created_at ON media (created_at)',
  ],
}];

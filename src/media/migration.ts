/**
 * Schema of the media library, for the state store's migration list
 * (src/storage/state/migrations.ts). Append-only like every migration.
 */
export const mediaMigration = {
  version: 110,
  name: 'media',
  up: `
    -- Audio for broadcasts: uploads and TTS renderings. The file itself is
    -- <dataDir>/media/<id>.<ext>; sha256 is what speakers verify.
    CREATE TABLE media (
      id           TEXT PRIMARY KEY,
      name         TEXT NOT NULL,
      mime         TEXT NOT NULL,
      ext          TEXT NOT NULL CHECK (ext IN ('mp3', 'wav', 'ogg')),
      size         INTEGER NOT NULL CHECK (size > 0),
      sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
      duration_sec REAL NOT NULL CHECK (duration_sec > 0),
      source       TEXT NOT NULL CHECK (source IN ('upload', 'tts')),
      text         TEXT,
      created_at   INTEGER NOT NULL,
      created_by   TEXT
    ) STRICT;
    CREATE INDEX media_created_at ON media(created_at);
  `,
} as const;

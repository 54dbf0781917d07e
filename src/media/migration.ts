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

/**
 * Media belongs to areas (access.ts): `areas_json` is a JSON array of area
 * codes, `["*"]` for media shared with every area, `[]` for admins only.
 * Existing rows get their uploader's areas (a user's or an API token's;
 * `["*"]` when that is an admin, and for the admin token, whose principal id
 * is "admin"), so a commune's earlier uploads stay its own. Rows whose
 * uploader is gone or unknown get `[]`: an admin shares them again if needed.
 */
export const mediaAreasMigration = {
  name: 'media-areas',
  up: `
    ALTER TABLE media ADD COLUMN areas_json TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(areas_json) AND json_type(areas_json) = 'array');
    UPDATE media SET areas_json = COALESCE(
      (SELECT CASE WHEN u.role = 'admin' THEN '["*"]' ELSE u.areas_json END FROM users u WHERE u.username = media.created_by),
      (SELECT CASE WHEN t.role = 'admin' THEN '["*"]' ELSE t.areas_json END FROM api_tokens t WHERE t.id = media.created_by),
      CASE WHEN media.created_by = 'admin' THEN '["*"]' ELSE '[]' END);
  `,
} as const;

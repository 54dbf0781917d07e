/**
 * Schema of firmware updates (OTA), for the state store's migration list
 * (src/migrations.ts). Append-only like every migration.
 *
 * - firmware_packages: one uploaded binary (<dataDir>/firmware/<id>.bin, 0600)
 *   with the title/version firmware compares and the checksum it verifies.
 * - firmware_rollouts: a package sent to a set of devices in two stages: the
 *   first `percent` of them (a stable pseudo-random pick), then the rest.
 * - firmware_assignments: the package a device must run (what its fw_* shared
 *   attributes say); gone with the device.
 * - firmware_device_state: what the device last reported (fw_state, fw_error,
 *   current_fw_title/version telemetry or attributes).
 */
export const FIRMWARE_MIGRATION = {
  name: 'firmware packages, rollouts, assignments and device states',
  up: `
    CREATE TABLE firmware_packages (
      id                 TEXT PRIMARY KEY,
      title              TEXT NOT NULL,
      version            TEXT NOT NULL,
      model              TEXT,
      size               INTEGER NOT NULL CHECK (size > 0),
      checksum_algorithm TEXT NOT NULL CHECK (checksum_algorithm IN ('SHA256', 'SHA384', 'SHA512', 'MD5', 'CRC32')),
      checksum           TEXT NOT NULL,
      sha256             TEXT NOT NULL CHECK (length(sha256) = 64),
      created_at         INTEGER NOT NULL,
      created_by         TEXT,
      UNIQUE (title, version)
    ) STRICT;
    CREATE TABLE firmware_rollouts (
      id           TEXT PRIMARY KEY,
      package_id   TEXT NOT NULL REFERENCES firmware_packages(id) ON DELETE RESTRICT,
      percent      INTEGER NOT NULL CHECK (percent BETWEEN 1 AND 100),
      devices_json TEXT NOT NULL CHECK (json_valid(devices_json)),
      first_count  INTEGER NOT NULL,
      areas_json   TEXT NOT NULL CHECK (json_valid(areas_json)),
      stage        TEXT NOT NULL CHECK (stage IN ('first', 'all')),
      created_at   INTEGER NOT NULL,
      created_by   TEXT,
      completed_at INTEGER
    ) STRICT;
    CREATE TABLE firmware_assignments (
      device_id   TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
      package_id  TEXT NOT NULL REFERENCES firmware_packages(id) ON DELETE RESTRICT,
      rollout_id  TEXT REFERENCES firmware_rollouts(id) ON DELETE SET NULL,
      assigned_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX firmware_assignments_package ON firmware_assignments(package_id);
    CREATE TABLE firmware_device_state (
      device_id       TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
      state           TEXT,
      error           TEXT,
      current_title   TEXT,
      current_version TEXT,
      updated_at      INTEGER NOT NULL
    ) STRICT;
  `,
} as const;

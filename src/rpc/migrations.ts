/**
 * State-store migration for server → device commands (firmware-protocols/
 * device-protocol.md §11). Kept next to the RPC code and registered in
 * src/storage/state/migrations.ts, which gives it its version number (the
 * SQL does not depend on the number).
 */
import type { Migration } from '../storage/state/migrations.js';

export const RPC_MIGRATION: Migration = {
  version: 120,
  name: 'rpc_requests',
  up: `
    -- One row per command. Spec: "A device that is offline when a command is
    -- sent gets it when it reconnects, unless expiresAt has passed", so commands
    -- are kept here, not in an MQTT persistent session.
    -- state: queued (waiting for the device), sent (published), answered,
    -- expired (expiresAt passed before it was sent or answered), cancelled
    -- (withdrawn by the controller while still queued, e.g. broadcast stopped).
    CREATE TABLE rpc_requests (
      id            TEXT PRIMARY KEY,
      device_id     TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
      method        TEXT NOT NULL,
      params_json   TEXT NOT NULL,
      expires_at    INTEGER NOT NULL,
      state         TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'answered', 'expired', 'cancelled')),
      created_at    INTEGER NOT NULL,
      sent_at       INTEGER,
      answered_at   INTEGER,
      response_json TEXT
    ) STRICT;
    -- Replay in creation order (rowid) per device; sweep by expiry.
    CREATE INDEX rpc_requests_device_open ON rpc_requests(device_id, state);
    CREATE INDEX rpc_requests_open_expiry ON rpc_requests(state, expires_at);
  `,
};

/**
 * rpc_requests_device_open was (device_id, state): each state change of a command (queued → sent →
 * answered) moved its entry. Its one reader lists a device's commands in creation order
 * (`device_id = ? ORDER BY rowid`), which (device_id) serves as well: its entries are ordered by
 * (device_id, rowid), so the sort step goes too. The open-commands index (state, expires_at) stays.
 */
export const RPC_DEVICE_INDEX_MIGRATION: Migration = {
  version: 123,
  name: 'rpc_requests: device index without state',
  up: `
    DROP INDEX rpc_requests_device_open;
    CREATE INDEX rpc_requests_device ON rpc_requests(device_id);
  `,
};

/**
 * ThingsBoard request ids (device protocol §13.2): a device logged in with its access token gets
 * server-side RPC on `v1/devices/me/rpc/request/{n}` with an integer `n` (the Arduino/ESP32 SDK
 * parses it with atoi and answers on `rpc/response/{n}`). `tb_id` is that `n`, kept in the command's
 * row so an answer maps back to the command even after a reconnect or a restart; unique per device.
 * `rpc_tb_ids` holds each device's last `n`: ids only grow (1 … 2^31-1, then 1 again), also after
 * old commands are deleted, so a device never sees an id again within 2^31 commands.
 */
export const RPC_TB_IDS_MIGRATION: Migration = {
  version: 124,
  name: 'rpc_requests: integer request ids of access-token sessions',
  up: `
    ALTER TABLE rpc_requests ADD COLUMN tb_id INTEGER;
    CREATE UNIQUE INDEX rpc_requests_tb_id ON rpc_requests(device_id, tb_id) WHERE tb_id IS NOT NULL;
    CREATE TABLE rpc_tb_ids (
      device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
      last_id   INTEGER NOT NULL
    ) STRICT;
  `,
};

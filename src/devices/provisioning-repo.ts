/**
 * The provisioning_keys table: keys a commune issues so that factory firmware
 * registers itself (ThingsBoard's device provisioning, firmware-protocols/
 * provisioning.md). The key is public (it is in every request); the secret is
 * stored only as a scrypt hash. A key creates devices in one area, of one
 * kind, until it expires, is revoked or has created `max_devices` devices.
 */
import type { Migration } from '../storage/state/migrations.js';
import { statementsOn, type SqliteDatabase } from '../storage/state/index.js';
import type { DeviceKind } from './types.js';

export const PROVISIONING_MIGRATION: Migration = {
  version: 170,
  name: 'devices: provisioning keys (ThingsBoard device provisioning)',
  up: `
    CREATE TABLE provisioning_keys (
      id           TEXT PRIMARY KEY,
      key          TEXT NOT NULL UNIQUE,
      secret_hash  TEXT NOT NULL,
      area         TEXT NOT NULL REFERENCES areas(code) ON DELETE RESTRICT,
      kind         TEXT NOT NULL CHECK (kind IN ('sensor', 'speaker', 'gateway')),
      model        TEXT,
      label        TEXT,
      max_devices  INTEGER CHECK (max_devices IS NULL OR max_devices >= 1),
      used         INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
      expires_at   INTEGER,
      created_by   TEXT NOT NULL,
      created_at   INTEGER NOT NULL,
      revoked_at   INTEGER
    ) STRICT;
    CREATE INDEX provisioning_keys_area ON provisioning_keys(area);
  `,
};

export interface ProvisioningKey {
  id: string;
  /** The public `provisionDeviceKey`. */
  key: string;
  area: string;
  kind: DeviceKind;
  model: string | null;
  /** What staff call it ("batch of 40 soil sensors, March"). */
  label: string | null;
  maxDevices: number | null;
  used: number;
  expiresAt: number | null;
  createdBy: string;
  createdAt: number;
  revokedAt: number | null;
}

export interface StoredKey extends ProvisioningKey { secretHash: string }

interface Row {
  id: string; key: string; secret_hash: string; area: string; kind: DeviceKind; model: string | null; label: string | null;
  max_devices: number | null; used: number; expires_at: number | null; created_by: string; created_at: number; revoked_at: number | null;
}

function toKey(r: Row): StoredKey {
  return {
    id: r.id, key: r.key, secretHash: r.secret_hash, area: r.area, kind: r.kind, model: r.model, label: r.label,
    maxDevices: r.max_devices, used: r.used, expiresAt: r.expires_at, createdBy: r.created_by, createdAt: r.created_at, revokedAt: r.revoked_at,
  };
}

function prepare(db: SqliteDatabase) {
  return {
    db,
    insert: db.prepare(`INSERT INTO provisioning_keys (id, key, secret_hash, area, kind, model, label, max_devices, used, expires_at, created_by, created_at, revoked_at)
      VALUES (@id, @key, @secret_hash, @area, @kind, @model, @label, @max_devices, 0, @expires_at, @created_by, @created_at, NULL)`),
    all: db.prepare('SELECT * FROM provisioning_keys ORDER BY created_at DESC, id'),
    byId: db.prepare('SELECT * FROM provisioning_keys WHERE id = ?'),
    byKey: db.prepare('SELECT * FROM provisioning_keys WHERE key = ?'),
    revoke: db.prepare('UPDATE provisioning_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
    // One statement, so two devices provisioning at once cannot both take the last slot.
    reserve: db.prepare(`UPDATE provisioning_keys SET used = used + 1
      WHERE id = @id AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > @now) AND (max_devices IS NULL OR used < max_devices)`),
    release: db.prepare('UPDATE provisioning_keys SET used = used - 1 WHERE id = ? AND used > 0'),
  };
}

export class ProvisioningRepo {
  /** Statements for the state store's connection, prepared when first needed (it opens at start). */
  private readonly sql = statementsOn(() => this.db(), prepare);

  constructor(private readonly db: () => SqliteDatabase) {}

  insert(k: StoredKey): void {
    this.sql().insert.run({
      id: k.id, key: k.key, secret_hash: k.secretHash, area: k.area, kind: k.kind, model: k.model, label: k.label,
      max_devices: k.maxDevices, expires_at: k.expiresAt, created_by: k.createdBy, created_at: k.createdAt,
    });
  }

  all(): StoredKey[] { return (this.sql().all.all() as Row[]).map(toKey); }

  get(id: string): StoredKey | undefined {
    const r = this.sql().byId.get(id) as Row | undefined;
    return r ? toKey(r) : undefined;
  }

  byKey(key: string): StoredKey | undefined {
    const r = this.sql().byKey.get(key) as Row | undefined;
    return r ? toKey(r) : undefined;
  }

  /** true when it was live and is now revoked. */
  revoke(id: string, now: number): boolean { return this.sql().revoke.run(now, id).changes > 0; }

  /** Takes one device slot of a live key; false when it is revoked, expired or used up. */
  reserve(id: string, now: number): boolean { return this.sql().reserve.run({ id, now }).changes > 0; }

  /** Gives a slot back (the device could not be created after all). */
  release(id: string): void { this.sql().release.run(id); }
}

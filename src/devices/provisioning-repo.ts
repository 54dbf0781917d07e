/**
 * The provisioning_keys table: keys a commune issues so that factory firmware
 * registers itself (ThingsBoard's device provisioning, firmware-protocols/
 * provisioning.md). The key is public (it is in every request); the secret is
 * stored only as a scrypt hash. A key creates devices in one area, of one
 * kind, until it expires, is revoked or has created `max_devices` devices.
 */
import type { Migration } from '../storage/state/migrations.js';
import { sql } from 'kysely';
import type { Db } from '../storage/sql/index.js';
import type { Trx } from './statements.js';
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

function affected(r: { numAffectedRows?: bigint }): number {
  return Number(r.numAffectedRows ?? 0);
}

/** The table through the `Db` port (PostgreSQL in cluster mode: every node sees every key). */
export class ProvisioningRepo {
  constructor(private readonly db: Db<unknown>) {}

  /** In the caller's transaction (with its audit entry). */
  async insert(trx: Trx, k: StoredKey): Promise<void> {
    await sql`INSERT INTO provisioning_keys (id, key, secret_hash, area, kind, model, label, max_devices, used, expires_at, created_by, created_at, revoked_at)
      VALUES (${k.id}, ${k.key}, ${k.secretHash}, ${k.area}, ${k.kind}, ${k.model}, ${k.label}, ${k.maxDevices}, 0, ${k.expiresAt}, ${k.createdBy},
        ${k.createdAt}, NULL)`.execute(trx);
  }

  async all(): Promise<StoredKey[]> {
    return (await sql<Row>`SELECT * FROM provisioning_keys ORDER BY created_at DESC, id`.execute(this.db.kysely)).rows.map(toKey);
  }

  async get(id: string, k: Trx | Db<unknown>['kysely'] = this.db.kysely): Promise<StoredKey | undefined> {
    const r = (await sql<Row>`SELECT * FROM provisioning_keys WHERE id = ${id}`.execute(k)).rows[0];
    return r ? toKey(r) : undefined;
  }

  async byKey(key: string): Promise<StoredKey | undefined> {
    const r = (await sql<Row>`SELECT * FROM provisioning_keys WHERE key = ${key}`.execute(this.db.kysely)).rows[0];
    return r ? toKey(r) : undefined;
  }

  /** true when it was live and is now revoked (in the caller's transaction). */
  async revoke(trx: Trx, id: string, now: number): Promise<boolean> {
    return affected(await sql`UPDATE provisioning_keys SET revoked_at = ${now} WHERE id = ${id} AND revoked_at IS NULL`.execute(trx)) > 0;
  }

  /**
   * Takes one device slot of a live key; false when it is revoked, expired or used up. One statement,
   * so two devices provisioning at once (on one node or two) cannot both take the last slot.
   */
  async reserve(id: string, now: number): Promise<boolean> {
    return affected(await sql`UPDATE provisioning_keys SET used = used + 1
      WHERE id = ${id} AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ${now}) AND (max_devices IS NULL OR used < max_devices)`
      .execute(this.db.kysely)) > 0;
  }

  /** Gives a slot back (the device could not be created after all). */
  async release(id: string): Promise<void> {
    await sql`UPDATE provisioning_keys SET used = used - 1 WHERE id = ${id} AND used > 0`.execute(this.db.kysely);
  }
}

/**
 * The gateway side tables (migrations.ts; on PostgreSQL pg-schema.ts) through
 * the state store's `Db` port, so in cluster mode every node reads and writes
 * the same rows.
 */
import { sql } from 'kysely';
import type { Db } from '../storage/sql/index.js';

export interface SubDeviceRow { device_id: string; gateway_id: string; name: string; created_at: number }

export class GatewayRepo {
  constructor(private readonly db: Db<unknown>) {}

  async subDevices(): Promise<SubDeviceRow[]> {
    return (await sql<SubDeviceRow>`SELECT device_id, gateway_id, name, created_at FROM gateway_sub_devices ORDER BY device_id`.execute(this.db.kysely)).rows;
  }

  /** Throws a unique violation when the name (or the device) is taken; on SQLite also when a device does not exist. */
  async insertSub(row: SubDeviceRow): Promise<void> {
    await sql`INSERT INTO gateway_sub_devices (device_id, gateway_id, name, created_at)
      VALUES (${row.device_id}, ${row.gateway_id}, ${row.name}, ${row.created_at})`.execute(this.db.kysely);
  }

  /** Gateways allowed to create sub-devices. */
  async creators(): Promise<Set<string>> {
    const rows = (await sql<{ gateway_id: string; create_sub_devices: number }>`SELECT gateway_id, create_sub_devices FROM gateway_settings ORDER BY gateway_id`
      .execute(this.db.kysely)).rows;
    return new Set(rows.filter((r) => Number(r.create_sub_devices) === 1).map((r) => r.gateway_id));
  }

  /** On SQLite throws SQLITE_CONSTRAINT_FOREIGNKEY when the gateway does not exist. */
  async putSetting(gatewayId: string, create: boolean, now: number): Promise<void> {
    await sql`INSERT INTO gateway_settings (gateway_id, create_sub_devices, updated_at) VALUES (${gatewayId}, ${create ? 1 : 0}, ${now})
      ON CONFLICT (gateway_id) DO UPDATE SET create_sub_devices = excluded.create_sub_devices, updated_at = excluded.updated_at`.execute(this.db.kysely);
  }

  /**
   * A deleted device's rows: as a sub-device, as a gateway (its sub-devices
   * stay devices, without a gateway) and its setting. On the embedded store
   * the foreign keys did this already (ON DELETE CASCADE); PostgreSQL has no
   * devices table to cascade from. Two plain statements, not a write
   * transaction: each is idempotent, and this runs from the deletion's event,
   * in the same tick as the deleting request's own write (its audit entry),
   * which a second write transaction of the embedded port must not overlap.
   */
  async removeDevice(deviceId: string): Promise<void> {
    await sql`DELETE FROM gateway_sub_devices WHERE device_id = ${deviceId} OR gateway_id = ${deviceId}`.execute(this.db.kysely);
    await sql`DELETE FROM gateway_settings WHERE gateway_id = ${deviceId}`.execute(this.db.kysely);
  }
}

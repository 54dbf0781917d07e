/** The gateway side tables (migrations.ts). */
import { statementsOn, type SqliteDatabase } from '../storage/state/index.js';

export interface SubDeviceRow { device_id: string; gateway_id: string; name: string; created_at: number }

function prepare(db: SqliteDatabase) {
  return {
    db,
    subs: db.prepare('SELECT * FROM gateway_sub_devices'),
    subByName: db.prepare('SELECT * FROM gateway_sub_devices WHERE name = ?'),
    insertSub: db.prepare('INSERT INTO gateway_sub_devices (device_id, gateway_id, name, created_at) VALUES (@device_id, @gateway_id, @name, @created_at)'),
    settings: db.prepare('SELECT gateway_id, create_sub_devices FROM gateway_settings'),
    putSetting: db.prepare(`INSERT INTO gateway_settings (gateway_id, create_sub_devices, updated_at) VALUES (?, ?, ?)
      ON CONFLICT (gateway_id) DO UPDATE SET create_sub_devices = excluded.create_sub_devices, updated_at = excluded.updated_at`),
  };
}

export class GatewayRepo {
  /** Statements for the state store's connection, prepared when first needed (it opens at start). */
  private readonly sql = statementsOn(() => this.db(), prepare);

  constructor(private readonly db: () => SqliteDatabase) {}

  subDevices(): SubDeviceRow[] { return this.sql().subs.all() as SubDeviceRow[]; }

  subByName(name: string): SubDeviceRow | undefined { return this.sql().subByName.get(name) as SubDeviceRow | undefined; }

  /** Throws SQLITE_CONSTRAINT_* when the name is taken or a device does not exist. */
  insertSub(row: SubDeviceRow): void { this.sql().insertSub.run(row); }

  /** Gateways allowed to create sub-devices. */
  creators(): Set<string> {
    const rows = this.sql().settings.all() as Array<{ gateway_id: string; create_sub_devices: number }>;
    return new Set(rows.filter((r) => r.create_sub_devices === 1).map((r) => r.gateway_id));
  }

  /** Throws SQLITE_CONSTRAINT_FOREIGNKEY when the gateway does not exist. */
  putSetting(gatewayId: string, create: boolean, now: number): void { this.sql().putSetting.run(gatewayId, create ? 1 : 0, now); }
}

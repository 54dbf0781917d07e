/**
 * The modbus_devices side table (migrations.ts; on PostgreSQL pg-schema.ts)
 * through the state store's `Db` port, so in cluster mode every node reads
 * and writes the same rows. Rows hold JSON as the API took it (already
 * validated); reading them back never re-validates, but a row that does not
 * parse is skipped (and reported) rather than stopping the poller.
 */
import { sql, type Transaction } from 'kysely';
import type { Db } from '../storage/sql/index.js';
import { lineKey, type ModbusSettings } from './types.js';

interface Row { device_id: string; transport_json: string; register_map_json: string; poll_interval_sec: number; line_key: string; updated_at: number }

type Q = Db<unknown>['kysely'] | Transaction<unknown>;

export class ModbusRepo {
  constructor(private readonly db: Db<unknown>, private readonly onBadRow: (deviceId: string, err: unknown) => void = () => undefined) {}

  async get(deviceId: string): Promise<ModbusSettings | undefined> {
    const row = (await sql<Row>`SELECT * FROM modbus_devices WHERE device_id = ${deviceId}`.execute(this.db.kysely)).rows[0];
    return row ? this.parse(row) : undefined;
  }

  async all(): Promise<ModbusSettings[]> {
    return this.parseAll((await sql<Row>`SELECT * FROM modbus_devices ORDER BY device_id`.execute(this.db.kysely)).rows);
  }

  /**
   * Inserts or replaces `s` after `check` accepted the other devices on its
   * line, in one transaction: two registrations on one line (also on two
   * nodes) cannot both pass the check. On SQLite the write lock (BEGIN
   * IMMEDIATE) serialises them; on PostgreSQL a transaction-level advisory
   * lock per line does. On SQLite throws SQLITE_CONSTRAINT_FOREIGNKEY when the
   * device does not exist (the PostgreSQL table has no foreign key: the
   * devices table is not there).
   */
  async putChecked(s: ModbusSettings, now: number, check: (others: ModbusSettings[]) => void): Promise<void> {
    const key = lineKey(s.transport);
    await this.db.write(async (trx) => {
      if (this.db.dialect === 'postgres') await sql`SELECT pg_advisory_xact_lock(hashtext(${'keng.modbus.line:' + key}))`.execute(trx);
      check(await this.onLine(trx, key, s.deviceId));
      await sql`INSERT INTO modbus_devices (device_id, transport_json, register_map_json, poll_interval_sec, line_key, updated_at)
        VALUES (${s.deviceId}, ${JSON.stringify(s.transport)}, ${JSON.stringify(s.registerMap)}, ${s.pollIntervalSec}, ${key}, ${now})
        ON CONFLICT (device_id) DO UPDATE SET transport_json = excluded.transport_json, register_map_json = excluded.register_map_json,
          poll_interval_sec = excluded.poll_interval_sec, line_key = excluded.line_key, updated_at = excluded.updated_at`.execute(trx);
    });
  }

  /** The other devices on the same TCP gateway or serial line. */
  async othersOnLine(key: string, exceptDeviceId: string): Promise<ModbusSettings[]> {
    return this.onLine(this.db.kysely, key, exceptDeviceId);
  }

  /**
   * Removes a deleted device's row. The embedded store's foreign key did it
   * already (ON DELETE CASCADE); PostgreSQL has no devices table to cascade from.
   */
  async remove(deviceId: string): Promise<void> {
    await sql`DELETE FROM modbus_devices WHERE device_id = ${deviceId}`.execute(this.db.kysely);
  }

  /** A row as stored (for change detection without parsing). */
  fingerprint(s: ModbusSettings): string {
    return JSON.stringify([s.transport, s.registerMap, s.pollIntervalSec]);
  }

  private async onLine(q: Q, key: string, exceptDeviceId: string): Promise<ModbusSettings[]> {
    return this.parseAll((await sql<Row>`SELECT * FROM modbus_devices WHERE line_key = ${key} AND device_id <> ${exceptDeviceId} ORDER BY device_id`.execute(q)).rows);
  }

  private parseAll(rows: Row[]): ModbusSettings[] {
    return rows.flatMap((r) => { const s = this.parse(r); return s ? [s] : []; });
  }

  private parse(r: Row): ModbusSettings | undefined {
    try {
      return {
        deviceId: r.device_id,
        transport: JSON.parse(r.transport_json) as ModbusSettings['transport'],
        registerMap: JSON.parse(r.register_map_json) as ModbusSettings['registerMap'],
        pollIntervalSec: r.poll_interval_sec,
      };
    } catch (err) {
      this.onBadRow(r.device_id, err);
      return undefined;
    }
  }
}

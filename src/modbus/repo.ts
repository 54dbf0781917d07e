/**
 * The modbus_devices side table (migrations.ts). Rows hold JSON as the API
 * took it (already validated); reading them back never re-validates, but a
 * row that does not parse is skipped (and reported) rather than stopping
 * the poller.
 */
import { statementsOn, type SqliteDatabase } from '../storage/state/index.js';
import { lineKey, type ModbusSettings } from './types.js';

interface Row { device_id: string; transport_json: string; register_map_json: string; poll_interval_sec: number; line_key: string; updated_at: number }

function prepare(db: SqliteDatabase) {
  return {
    db,
    all: db.prepare('SELECT * FROM modbus_devices ORDER BY device_id'),
    get: db.prepare('SELECT * FROM modbus_devices WHERE device_id = ?'),
    byLine: db.prepare('SELECT * FROM modbus_devices WHERE line_key = ? AND device_id <> ?'),
    upsert: db.prepare(`INSERT INTO modbus_devices (device_id, transport_json, register_map_json, poll_interval_sec, line_key, updated_at)
      VALUES (@device_id, @transport_json, @register_map_json, @poll_interval_sec, @line_key, @updated_at)
      ON CONFLICT (device_id) DO UPDATE SET transport_json = excluded.transport_json, register_map_json = excluded.register_map_json,
        poll_interval_sec = excluded.poll_interval_sec, line_key = excluded.line_key, updated_at = excluded.updated_at`),
  };
}

export class ModbusRepo {
  /** Statements for the state store's connection, prepared when first needed (it opens at start). */
  private readonly sql = statementsOn(() => this.db(), prepare);

  constructor(private readonly db: () => SqliteDatabase, private readonly onBadRow: (deviceId: string, err: unknown) => void = () => undefined) {}

  get(deviceId: string): ModbusSettings | undefined {
    const row = this.sql().get.get(deviceId) as Row | undefined;
    return row ? this.parse(row) : undefined;
  }

  all(): ModbusSettings[] {
    return (this.sql().all.all() as Row[]).flatMap((r) => { const s = this.parse(r); return s ? [s] : []; });
  }

  /** The other devices on the same TCP gateway or serial line. */
  onLine(key: string, exceptDeviceId: string): ModbusSettings[] {
    return (this.sql().byLine.all(key, exceptDeviceId) as Row[]).flatMap((r) => { const s = this.parse(r); return s ? [s] : []; });
  }

  /** Inserts or replaces; throws SQLITE_CONSTRAINT_FOREIGNKEY when the device does not exist. */
  put(s: ModbusSettings, now: number): void {
    this.sql().upsert.run({
      device_id: s.deviceId, transport_json: JSON.stringify(s.transport), register_map_json: JSON.stringify(s.registerMap),
      poll_interval_sec: s.pollIntervalSec, line_key: lineKey(s.transport), updated_at: now,
    });
  }

  /** A row as stored (for change detection without parsing). */
  fingerprint(s: ModbusSettings): string {
    return JSON.stringify([s.transport, s.registerMap, s.pollIntervalSec]);
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

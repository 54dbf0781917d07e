/**
 * Cluster mode: a copy of the registry's areas and devices in the node's own state.db.
 *
 * The registry's rows live in PostgreSQL. The copy was made for the tables kept in SQLite per node
 * (pending RPC commands, RPC ids, alert rules), which reference `devices` and `areas` by foreign key;
 * those tables are in PostgreSQL too now, so nothing in cluster mode reads the copy any more.
 * The copy is written from the cache (after this node's changes and after each reload), in one
 * SQLite transaction per batch; it is never read by the registry. It never deletes a device it has
 * not seen deleted (a node switched to cluster mode keeps what its state.db held).
 */
import type { Logger } from '../core/index.js';
import { statementsOn, type SqliteDatabase } from '../storage/state/index.js';
import type { AreaRow } from './areas.js';
import type { DeviceRow } from './devices.js';

const LEVEL_ORDER = { province: 0, commune: 1, village: 2 } as const;

function prepare(db: SqliteDatabase) {
  return {
    db,
    area: db.prepare(`INSERT INTO areas (code, name, level, parent, created_at) VALUES (@code, @name, @level, @parent, @created_at)
      ON CONFLICT (code) DO UPDATE SET name = excluded.name`),
    device: db.prepare(`INSERT INTO devices (id, kind, name, area, lat, lon, model, enabled, secret_hash, token_lookup, token_hash, created_at, history_from)
      VALUES (@id, @kind, @name, @area, @lat, @lon, @model, @enabled, @secret_hash, @token_lookup, @token_hash, @created_at, @history_from)
      ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name, area = excluded.area, lat = excluded.lat, lon = excluded.lon,
        model = excluded.model, enabled = excluded.enabled, secret_hash = excluded.secret_hash, token_lookup = excluded.token_lookup,
        token_hash = excluded.token_hash, created_at = excluded.created_at, history_from = excluded.history_from`),
    remove: db.prepare('DELETE FROM devices WHERE id = ?'),
  };
}

export class SqliteMirror {
  private readonly sql;
  private areas: AreaRow[] | null = null;
  private readonly devices = new Map<string, DeviceRow | null>();
  private scheduled = false;

  constructor(db: () => SqliteDatabase, private readonly logger: Logger) {
    this.sql = statementsOn(db, prepare);
  }

  setAreas(rows: readonly AreaRow[]): void { this.areas = [...rows]; this.schedule(); }
  put(row: DeviceRow): void { this.devices.set(row.id, row); this.schedule(); }
  remove(id: string): void { this.devices.set(id, null); this.schedule(); }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => { this.scheduled = false; this.flush(); });
  }

  /** Writes what is queued, in one transaction; a row that cannot be written is logged and skipped. */
  flush(): void {
    const areas = this.areas;
    const devices = [...this.devices];
    this.areas = null;
    this.devices.clear();
    if (!areas && devices.length === 0) return;
    try {
      const q = this.sql();
      q.db.transaction(() => {
        const one = (what: string, fn: () => void): void => {
          try { fn(); } catch (err) { this.logger.warn({ err, what }, 'could not copy a registry row into state.db'); }
        };
        for (const a of (areas ?? []).sort((x, y) => LEVEL_ORDER[x.level] - LEVEL_ORDER[y.level])) one(`area ${a.code}`, () => q.area.run(a));
        for (const [id, row] of devices) one(`device ${id}`, () => (row ? q.device.run(row) : q.remove.run(id)));
      })();
    } catch (err) {
      this.logger.warn({ err }, 'could not copy the registry into state.db');
    }
  }
}

/**
 * Device status: presence, lastSeen, client attributes and latest values
 * (presence.ts, in memory), the events and the gauge they drive, and their
 * persistence in device_state: flushed every 2 s by the registry and at stop.
 */
import type { Clock, EventBus, Logger, Metrics, Scalar } from '../core/index.js';
import type { SqliteDatabase } from '../storage/state/index.js';
import { PresenceStore, type StoredState } from './presence.js';
import { Statements } from './statements.js';
import type { Device, DeviceView, LatestValue } from './types.js';
import type { DeviceStatusApi } from './registry-types.js';

export interface DeviceStatusDeps {
  bus: EventBus;
  metrics: Metrics;
  clock: Clock;
  logger: Logger;
  /**
   * true (the server): presence starts offline and is written to disk.
   * false (CLI tools): presence is read as last flushed by the server and never written.
   */
  ownsPresence: boolean;
  /** The area of a registered device (for 'status' events). */
  areaOf: (deviceId: string) => string | undefined;
}

function prepare(db: SqliteDatabase) {
  return {
    db,
    allStates: db.prepare('SELECT device_id, online, last_seen, attributes_json, latest_json FROM device_state'),
    // Guarded upsert: a device deleted by another process is not resurrected.
    upsertState: db.prepare(`INSERT INTO device_state (device_id, online, last_seen, attributes_json, latest_json)
      SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?)
      ON CONFLICT (device_id) DO UPDATE SET online = excluded.online, last_seen = excluded.last_seen,
        attributes_json = excluded.attributes_json, latest_json = excluded.latest_json`),
  };
}

export class DeviceStatus implements DeviceStatusApi {
  private presence = new PresenceStore();
  private readonly sql = new Statements(prepare);

  constructor(private readonly deps: DeviceStatusDeps) {}

  /** Prepares the statements and starts from an empty store (devices are tracked as they load). */
  open(db: SqliteDatabase): void {
    this.sql.open(db);
    this.presence = new PresenceStore();
  }

  /** Restores the device_state rows of the tracked devices. */
  restore(): void {
    const owns = this.deps.ownsPresence;
    const states = this.sql.q.allStates.all() as (StoredState & { device_id: string })[];
    for (const s of states) {
      if (!this.presence.get(s.device_id)) continue;
      this.presence.remove(s.device_id);
      this.presence.add(s.device_id, s, !owns);
      // At start every device is offline; the broker re-establishes presence.
      if (owns && s.online === 1) this.presence.dirty.add(s.device_id);
    }
    this.deps.metrics.devicesOnline.set(this.presence.onlineCount);
  }

  /** Flushes (when this process owns presence) and drops the statements. */
  close(): void {
    if (this.sql.isOpen && this.deps.ownsPresence) this.flush();
    this.sql.close();
  }

  /** A device was registered or loaded. */
  track(deviceId: string): void {
    this.presence.add(deviceId);
  }

  /** A device was deleted: it goes offline with it (a 'status' event when `emit`). */
  untrack(deviceId: string, area: string, emit: boolean): void {
    const e = this.presence.remove(deviceId);
    if (!e?.online) return;
    this.deps.metrics.devicesOnline.set(this.presence.onlineCount);
    if (emit) this.deps.bus.emit('status', { deviceId, area, online: false, at: this.deps.clock.now() });
  }

  // ---- presence and data (hot path: memory only) -------------------------

  setOnline(deviceId: string, online: boolean, at: number): void {
    if (!this.presence.setOnline(deviceId, online, at)) return;
    this.deps.metrics.devicesOnline.set(this.presence.onlineCount);
    const area = this.deps.areaOf(deviceId) ?? '';
    this.deps.bus.emit('status', { deviceId, area, online, at });
  }

  touch(deviceId: string, at: number): void {
    this.presence.touch(deviceId, at);
  }

  isOnline(deviceId: string): boolean {
    return this.presence.get(deviceId)?.online ?? false;
  }

  lastSeen(deviceId: string): number | null {
    return this.presence.get(deviceId)?.lastSeen ?? null;
  }

  mergeAttributes(deviceId: string, attrs: Record<string, unknown>): void {
    const merged = this.presence.mergeAttributes(deviceId, attrs);
    if (merged) this.deps.bus.emit('attributes', { deviceId, attributes: merged });
  }

  attributes(deviceId: string): Record<string, unknown> {
    return this.presence.attributes(deviceId);
  }

  updateLatest(deviceId: string, ts: number, values: Record<string, Scalar>): void {
    this.presence.updateLatest(deviceId, ts, values);
  }

  latest(deviceId: string): Record<string, LatestValue> {
    return this.presence.latest(deviceId);
  }

  /** The device with its presence, attributes and latest values. */
  view(device: Device): DeviceView {
    const e = this.presence.get(device.id);
    return {
      ...device,
      online: e?.online ?? false,
      lastSeen: e?.lastSeen ?? null,
      attributes: this.presence.attributes(device.id),
      latest: this.presence.latest(device.id),
    };
  }

  // ---- persistence -------------------------------------------------------

  /** Writes dirty presence/latest rows in one transaction. Returns the number of rows written. */
  flush(): number {
    const dirty = this.presence.dirty;
    if (dirty.size === 0 || !this.sql.isOpen) return 0;
    const ids = [...dirty];
    const q = this.sql.q;
    try {
      q.db.transaction(() => {
        for (const id of ids) {
          const s = this.presence.serialize(id);
          if (s) q.upsertState.run(id, s.online, s.last_seen, s.attributes_json, s.latest_json, id);
        }
      })();
    } catch (err) {
      this.deps.logger.warn({ err, rows: ids.length }, 'could not flush device state; will retry');
      return 0;
    }
    for (const id of ids) dirty.delete(id);
    return ids.length;
  }
}

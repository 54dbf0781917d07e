/**
 * Device status: presence, lastSeen, client attributes and latest values
 * (presence.ts, in memory), the events and the gauge they drive, and their
 * persistence in device_state: flushed every 2 s by the registry and at stop.
 *
 * Cluster mode (PostgreSQL): each node knows only the devices connected to it.
 * A flush writes only what changed on this node, column by column: `online`
 * only for devices whose presence changed here, attributes and latest values
 * only when they changed here, `last_seen` never backwards. So a node never
 * marks offline a device connected to another node (nor resets presence at
 * start; nor, after another node took the device's session over, when the
 * old connection here closes: `device_sessions` says who holds it). Views (the API) show a device online when it is connected here or
 * when device_state says so (read back at each flush: another node's change
 * shows here within two flush periods). A node that dies leaves its devices
 * online in device_state until its lease runs out and a live node sweeps them
 * offline (src/cluster/node-leases.ts); the sweeping node tells its views at
 * once (presenceExpired), the others see it at their next flush.
 *
 * Another node's presence changes reach this node's live feed only
 * (`remoteStatus`, like remote readings), never this node's event bus: what
 * acts on a device's presence (gateways, RPC warm-up, attribute pushes) runs
 * on the node that holds its connection.
 */
import type { Clock, EventBus, KengEvents, Logger, Metrics, Scalar } from '../core/index.js';
import { sql } from 'kysely';
import type { Trx } from './statements.js';
import type { Db } from '../storage/sql/index.js';
import { PresenceStore, type StoredState } from './presence.js';
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
  db: Db<unknown>;
  /**
   * Cluster mode: this node's id in `device_sessions` (src/cluster, which node holds each device's MQTT
   * session). A device that left this node is written offline only when no other node holds it: when
   * another node took the session over, its presence is that node's.
   */
  nodeId?: string;
  /**
   * Cluster mode: a device's presence changed on another node (seen in device_state at a flush, or
   * written offline by this node's sweep of a dead node): for this node's live views only.
   */
  remoteStatus?: (e: KengEvents['status']) => void;
}

type StateRow = StoredState & { device_id: string };

export class DeviceStatus implements DeviceStatusApi {
  private presence = new PresenceStore();
  private open = false;
  /** Cluster mode: devices whose presence, or attributes and latest values, changed on this node since the last flush. */
  private readonly onlineChanged = new Set<string>();
  private readonly dataChanged = new Set<string>();
  /** Cluster mode: online devices as device_state says (any node), with their last_seen. */
  private elsewhere = new Map<string, number | null>();

  constructor(private readonly deps: DeviceStatusDeps) {}

  private get cluster(): boolean { return this.deps.db.dialect === 'postgres'; }

  /** Starts from an empty store (devices are tracked as they load). */
  reset(): void {
    this.presence = new PresenceStore();
    this.onlineChanged.clear();
    this.dataChanged.clear();
    this.elsewhere = new Map();
    this.open = true;
  }

  /** Restores the device_state rows of the tracked devices. */
  async restore(): Promise<void> {
    const owns = this.deps.ownsPresence;
    const states = (await sql<StateRow>`SELECT device_id, online, last_seen, attributes_json, latest_json FROM device_state`
      .execute(this.deps.db.kysely)).rows;
    for (const s of states) {
      if (!this.presence.get(s.device_id)) continue;
      this.presence.remove(s.device_id);
      this.presence.add(s.device_id, s, !owns);
      // At start every device is offline; the broker re-establishes presence. In cluster mode the
      // device may be connected to another node: its row is left as it is.
      if (owns && s.online === 1 && !this.cluster) this.presence.dirty.add(s.device_id);
      if (this.cluster && s.online === 1) this.elsewhere.set(s.device_id, s.last_seen);
    }
    this.deps.metrics.devicesOnline.set(this.presence.onlineCount);
  }

  /** Flushes (when this process owns presence) and stops writing. */
  async close(): Promise<void> {
    if (this.open && this.deps.ownsPresence) await this.flush();
    this.open = false;
  }

  /** A device was registered or loaded. */
  track(deviceId: string): void {
    this.presence.add(deviceId);
  }

  /** A device was deleted: it goes offline with it (a 'status' event when `emit`). */
  untrack(deviceId: string, area: string, emit: boolean): void {
    const e = this.presence.remove(deviceId);
    this.onlineChanged.delete(deviceId);
    this.dataChanged.delete(deviceId);
    this.elsewhere.delete(deviceId);
    if (!e?.online) return;
    this.deps.metrics.devicesOnline.set(this.presence.onlineCount);
    if (emit) this.deps.bus.emit('status', { deviceId, area, online: false, at: this.deps.clock.now() });
  }

  // ---- presence and data (hot path: memory only) -------------------------

  setOnline(deviceId: string, online: boolean, at: number): void {
    if (!this.presence.setOnline(deviceId, online, at)) return;
    if (this.cluster) this.onlineChanged.add(deviceId);
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
    if (merged && this.cluster) this.dataChanged.add(deviceId);
    if (merged) this.deps.bus.emit('attributes', { deviceId, attributes: merged });
  }

  attributes(deviceId: string): Record<string, unknown> {
    return this.presence.attributes(deviceId);
  }

  updateLatest(deviceId: string, ts: number, values: Record<string, Scalar>): void {
    this.presence.updateLatest(deviceId, ts, values);
    if (this.cluster && this.presence.get(deviceId)) this.dataChanged.add(deviceId);
  }

  latest(deviceId: string): Record<string, LatestValue> {
    return this.presence.latest(deviceId);
  }

  /** The device with its presence, attributes and latest values. */
  view(device: Device): DeviceView {
    const e = this.presence.get(device.id);
    // Changed here since the last flush: this node knows better than what device_state said then.
    const there = this.onlineChanged.has(device.id) ? undefined : this.elsewhere.get(device.id);
    const local = e?.lastSeen ?? null;
    return {
      ...device,
      online: (e?.online ?? false) || there !== undefined,
      lastSeen: there === undefined || there === null ? local : local === null ? there : Math.max(local, there),
      attributes: this.presence.attributes(device.id),
      latest: this.presence.latest(device.id),
    };
  }

  // ---- persistence -------------------------------------------------------

  /** Online on this node, or (cluster mode) on another as device_state said at the last flush. */
  isOnlineAnywhere(deviceId: string): boolean {
    return this.isOnline(deviceId) || (!this.onlineChanged.has(deviceId) && this.elsewhere.has(deviceId));
  }

  /**
   * Cluster mode: this node's sweep wrote these devices offline (their node's lease ran out). Its views
   * show them offline at once, not only after the next flush. Devices connected here are not touched.
   */
  presenceExpired(deviceIds: readonly string[], at: number): void {
    for (const id of deviceIds) {
      if (!this.elsewhere.delete(id) || this.isOnline(id) || this.onlineChanged.has(id)) continue;
      this.remote(id, false, at);
    }
  }

  /** Devices whose presence changed on another node between two reads of device_state. */
  private remoteChanges(before: ReadonlyMap<string, number | null>, changedHere: ReadonlySet<string>): void {
    if (!this.deps.remoteStatus) return;
    const here = (id: string): boolean => this.isOnline(id) || changedHere.has(id) || this.onlineChanged.has(id) || !this.presence.get(id);
    const now = this.deps.clock.now();
    for (const id of before.keys()) if (!this.elsewhere.has(id) && !here(id)) this.remote(id, false, now);
    for (const [id, seen] of this.elsewhere) if (!before.has(id) && !here(id)) this.remote(id, true, seen ?? now);
  }

  private remote(deviceId: string, online: boolean, at: number): void {
    try {
      this.deps.remoteStatus?.({ deviceId, area: this.deps.areaOf(deviceId) ?? '', online, at });
    } catch (err) {
      this.deps.logger.error({ err, deviceId }, 'showing another node\'s presence change failed');
    }
  }

  /**
   * Cluster mode: every dirty row in ONE statement (2,000 speakers coming online were 2,000 round trips inside one
   * transaction, holding its row locks that long). Per row, as before: an UPDATE only (the row was made with the
   * device, so a deleted one never comes back); `online` written only when it changed here, and a device going
   * offline here stays online when another node holds its session (it moved there); attributes and latest values
   * only when they changed here. Rows in device order: two nodes flushing overlapping rows lock them alike.
   */
  private async flushShared(trx: Trx, rows: ReadonlyArray<{ id: string; s: StoredState | undefined }>, online: ReadonlySet<string>, data: ReadonlySet<string>): Promise<void> {
    const nodeId = this.deps.nodeId;
    const v = rows.filter((r) => r.s).sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0)).map(({ id, s }) => ({
      i: id, o: online.has(id), n: s!.online, c: s!.online === 0, l: s!.last_seen, d: data.has(id),
      a: s!.attributes_json, j: s!.latest_json,
    }));
    if (v.length === 0) return;
    await sql`UPDATE device_state AS t SET
        online = CASE WHEN NOT v.o THEN t.online
          ${nodeId === undefined ? sql`` : sql`WHEN v.c AND EXISTS (SELECT 1 FROM device_sessions ds WHERE ds.device_id = v.i AND ds.node_id <> ${nodeId}) THEN t.online`}
          ELSE v.n END,
        last_seen = GREATEST(t.last_seen, v.l),
        attributes_json = CASE WHEN v.d THEN v.a ELSE t.attributes_json END,
        latest_json = CASE WHEN v.d THEN v.j ELSE t.latest_json END
      FROM (SELECT * FROM jsonb_to_recordset(${JSON.stringify(v)}::jsonb)
        AS x(i text, o boolean, n integer, c boolean, l bigint, d boolean, a text, j text) ORDER BY i) AS v
      WHERE t.device_id = v.i`.execute(trx);
  }

  /** Writes dirty presence/latest rows in one transaction. Returns the number of rows written. */
  async flush(): Promise<number> {
    if (!this.open) return 0;
    const dirty = this.presence.dirty;
    const ids = [...dirty];
    const online = new Set(this.onlineChanged);
    const data = new Set(this.dataChanged);
    const rows = ids.map((id) => ({ id, s: this.presence.serialize(id) }));
    // Taken now: a change made while the write is under way is written by the next flush.
    for (const id of ids) dirty.delete(id);
    this.onlineChanged.clear();
    this.dataChanged.clear();
    try {
      if (ids.length > 0) {
        await this.deps.db.write(async (trx) => {
          if (this.cluster) { await this.flushShared(trx, rows, online, data); return; }
          for (const { id, s } of rows) {
            if (!s) continue;
            // Guarded upsert: a device deleted by another process is not resurrected.
            await sql`INSERT INTO device_state (device_id, online, last_seen, attributes_json, latest_json)
              SELECT ${id}, ${s.online}, ${s.last_seen}, ${s.attributes_json}, ${s.latest_json} WHERE EXISTS (SELECT 1 FROM devices WHERE id = ${id})
              ON CONFLICT (device_id) DO UPDATE SET online = excluded.online, last_seen = excluded.last_seen,
                attributes_json = excluded.attributes_json, latest_json = excluded.latest_json`.execute(trx);
          }
        });
      }
      if (this.cluster) {
        const r = await sql<{ device_id: string; last_seen: number | null }>`SELECT device_id, last_seen FROM device_state WHERE online = 1`
          .execute(this.deps.db.kysely);
        const before = this.elsewhere;
        this.elsewhere = new Map(r.rows.map((x) => [x.device_id, x.last_seen]));
        this.remoteChanges(before, online);
      }
    } catch (err) {
      this.deps.logger.warn({ err, rows: ids.length }, 'could not flush device state; will retry');
      for (const id of ids) if (this.presence.get(id)) dirty.add(id);
      for (const id of online) if (this.presence.get(id)) this.onlineChanged.add(id);
      for (const id of data) if (this.presence.get(id)) this.dataChanged.add(id);
      return 0;
    }
    return ids.length;
  }
}

/**
 * The open commands (`queued` or `sent`) in memory: RpcService decides from here (is it queued? sent
 * to this device? which one holds integer id n?) and writes the outcome through the state window, so
 * the hot path (a device's answer, a broadcast's sends) reads nothing from the database. Loaded at
 * start (every open row, in creation order); updated by RpcService's own writes at the moment it
 * decides (before their window commits: later decisions build on them, and a failed window evicts
 * what it touched, which RpcService then reloads from the database).
 *
 * A device's commands are kept in creation order (Map insertion order): they are re-sent in it.
 */
import type { RpcRequest } from './types.js';

export class OpenCommands {
  private readonly byId = new Map<string, RpcRequest>();
  private readonly byDevice = new Map<string, Map<string, RpcRequest>>();
  /** Finished here (answered, expired, cancelled) in a window not committed yet: the database still says open. */
  private readonly settling = new Map<string, RpcRequest>();

  get(id: string): RpcRequest | undefined { return this.byId.get(id); }

  get size(): number { return this.byId.size; }

  /** A new command (last of its device), or a new version of one held (its place is kept). */
  put(r: RpcRequest): void {
    this.byId.set(r.id, r);
    let d = this.byDevice.get(r.deviceId);
    if (!d) { d = new Map(); this.byDevice.set(r.deviceId, d); }
    d.set(r.id, r);
  }

  /**
   * No longer open: `r` is its final version (answered, expired, cancelled). Kept as `finished` until `settled(id)`
   * (its window committed), so a duplicate answer meanwhile is told from memory rather than from the old row.
   */
  finish(r: RpcRequest): void {
    this.remove(r.id);
    this.settling.set(r.id, r);
  }

  /** A command finished in a window not committed yet. */
  finished(id: string): RpcRequest | undefined { return this.settling.get(id); }

  /** Its window committed (or failed: then it is reloaded). */
  settled(id: string): void { this.settling.delete(id); }

  /** Evicted (a failed window), or no longer open. */
  remove(id: string): RpcRequest | undefined {
    const was = this.settling.get(id);
    this.settling.delete(id);
    const r = this.byId.get(id);
    if (!r) return was;
    this.byId.delete(id);
    const d = this.byDevice.get(r.deviceId);
    d?.delete(id);
    if (d?.size === 0) this.byDevice.delete(r.deviceId);
    return r;
  }

  /** The device's open commands, oldest first. */
  device(deviceId: string): RpcRequest[] { return [...(this.byDevice.get(deviceId)?.values() ?? [])]; }

  devices(): string[] { return [...this.byDevice.keys()]; }

  all(): IterableIterator<RpcRequest> { return this.byId.values(); }

  /** The device's open (or just finished) command published with integer id `n` (device protocol §13.2). */
  byTbId(deviceId: string, n: number): RpcRequest | undefined {
    for (const r of this.byDevice.get(deviceId)?.values() ?? []) if (r.tbId === n) return r;
    for (const r of this.settling.values()) if (r.deviceId === deviceId && r.tbId === n) return r;
    return undefined;
  }

  /** Forgets a device (deleted: its rows went with it). */
  dropDevice(deviceId: string): void {
    for (const id of this.byDevice.get(deviceId)?.keys() ?? []) this.byId.delete(id);
    this.byDevice.delete(deviceId);
  }

  /**
   * After a failed window: the device's open commands as the database holds them (`stored`, creation order),
   * followed by those still held here but not stored yet (created since, in a window still to commit).
   */
  reload(deviceId: string, stored: readonly RpcRequest[]): void {
    const pending = this.device(deviceId).filter((r) => !stored.some((s) => s.id === r.id));
    this.dropDevice(deviceId);
    for (const r of stored) this.put(r);
    for (const r of pending) this.put(r);
  }

  /**
   * Cluster mode: the device's open commands as this node took them from the database (`stored`, creation order),
   * merged with what memory holds: a command held keeps memory's version (it may be newer than the row), one finished
   * here in a window still to commit stays finished, commands held but not in `stored` (not committed yet) go last.
   * Returns the commands memory did not hold.
   */
  merge(deviceId: string, stored: readonly RpcRequest[]): RpcRequest[] {
    const held = this.byDevice.get(deviceId) ?? new Map<string, RpcRequest>();
    const seen = new Set<string>();
    const order: RpcRequest[] = [];
    const added: RpcRequest[] = [];
    for (const s of stored) {
      seen.add(s.id);
      if (this.settling.has(s.id)) continue;
      const h = held.get(s.id);
      if (h) order.push(h);
      else { order.push(s); added.push(s); }
    }
    for (const h of held.values()) if (!seen.has(h.id)) order.push(h);
    this.byDevice.delete(deviceId);
    for (const r of order) this.put(r);
    return added;
  }

  clear(): void { this.byId.clear(); this.byDevice.clear(); this.settling.clear(); }
}

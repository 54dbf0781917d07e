/**
 * How RpcService's decisions reach the database (docs/design/state-window.md): every move is written into the
 * node's state window (src/storage/state/window.ts: one transaction for everything handled within a few
 * milliseconds) through the kinds of store-sql.ts, after memory (open-commands.ts) already holds the outcome. A
 * failed window evicts the commands it touched; they are reloaded from the database (evicted).
 *
 * Cluster mode: a new command's owner is decided by the insert (the node holding its device's session); this
 * node keeps in memory only what it owns and hints the owners of the others (ownership.ts picks them up).
 *
 * Separate from RpcService because the write rules (fire-and-forget moves dropped once stopped, finished
 * commands kept until their window commits, batch inserts committing together, the reload after a failed
 * window) are shared by every path of the service and the collaborators it hands `post`/`finish` to.
 */
import type { Logger } from '../core/logger.js';
import type { StateWindow } from '../storage/state/window.js';
import type { OpenCommands } from './open-commands.js';
import type { NewRequestRow, RpcCas, RpcStoreSql } from './store-sql.js';
import type { RpcRequest } from './types.js';

export interface WritesDeps {
  window: StateWindow;
  open: OpenCommands;
  /** The store while the service runs (null once stopped). */
  store: () => RpcStoreSql | null;
  /** The store, or KENG_ERR_NOT_READY when the service is not started. */
  requireStore: () => RpcStoreSql;
  logger: Logger;
  /** Cluster mode: this node's id (commands it owns); undefined on one node. */
  nodeId: string | undefined;
  /** Cluster mode, best effort: tells node `owner` that commands it owns were stored here. */
  nudge(owner: string): void;
}

export class RpcWrites {
  constructor(private readonly d: WritesDeps) {}

  /** A move nobody awaits (the window's failure reaches settled() and onEvict); dropped once stopped. */
  post(c: RpcCas): void {
    const store = this.d.store();
    if (!store) return;
    try { this.d.window.post(store.cas, c); } catch (err) { this.d.logger.warn({ err, requestId: c.id }, 'rpc write dropped: the state window is stopped'); }
  }

  /** No longer open: kept as finished (duplicate answers are told from memory) until the window of its write commits. */
  finish(r: RpcRequest): void {
    this.d.open.finish(r);
    try { this.d.window.afterCommit(() => this.d.open.settled(r.id)); } catch { this.d.open.settled(r.id); }
  }

  /** sendMany's commands: memory at once, the window (one promise for all: they commit together). */
  insertMany(rows: readonly NewRequestRow[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    const store = this.d.requireStore();
    const w = this.d.window;
    for (const r of rows) {
      this.d.open.put({
        id: r.id, deviceId: r.deviceId, method: r.method, params: JSON.parse(r.paramsJson) as Record<string, unknown>, expiresAt: r.expiresAt,
        state: r.sentAt !== undefined ? 'sent' : 'queued', createdAt: r.createdAt, sentAt: r.sentAt ?? null, answeredAt: null, response: null, tbId: r.tbId ?? null,
      });
    }
    const me = this.d.nodeId;
    if (me !== undefined) { // cluster mode: keep only what this node owns (another node holds the others' sessions)
      const outs = rows.map((r) => w.add(store.insert, r));
      return w.durable(Promise.all(outs)).then((o) => {
        const others = new Set<string>();
        o.forEach((x, i) => { if (x.owner !== undefined && x.owner !== me) { this.d.open.remove(rows[i]!.id); others.add(x.owner); } });
        for (const n of others) this.d.nudge(n);
      });
    }
    for (let i = 0; i < rows.length - 1; i++) w.post(store.insert, rows[i]!);
    return w.durable(w.add(store.insert, rows[rows.length - 1]!)).then(() => undefined);
  }

  /** A failed window: forget what it touched and reload those devices' open commands from the database. */
  evicted(keys: readonly string[]): void {
    const devices = new Set<string>();
    for (const k of keys) {
      if (!k.startsWith('rpc:')) continue;
      const r = this.d.open.remove(k.slice(4));
      if (r) devices.add(r.deviceId);
    }
    const store = this.d.store();
    if (!store || devices.size === 0) return;
    const me = this.d.nodeId;
    for (const d of devices) {
      (me !== undefined ? store.listOwned(d, me) : store.listDevice(d, ['queued', 'sent'])).then((rows) => { if (this.d.store() === store) this.d.open.reload(d, rows); }, (err: unknown) => {
        this.d.logger.error({ err, deviceId: d }, 'rpc commands could not be reloaded after a failed window');
      });
    }
  }
  /**
   * PostgreSQL only (no foreign key there; the embedded store cascades): a deleted device's commands and integer
   * ids are deleted too, else its open commands would stay open for ever. Its own unit (a savepoint): a failure
   * undoes only itself.
   */
  deleteDevice(deviceId: string): void {
    const store = this.d.store();
    if (!store) return;
    this.d.window.unit((trx) => store.deleteDevice(trx, deviceId), { savepoint: true }).then((n) => {
      if (n > 0) this.d.logger.info({ deviceId, commands: n }, 'deleted device: its commands deleted');
    }, (err: unknown) => { this.d.logger.warn({ err, deviceId }, 'deleted device: its commands could not be deleted'); });
  }
}

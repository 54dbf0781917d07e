/**
 * Withdrawing commands that have not been sent yet: one by id (cancel), every queued command of a method whose
 * params hold a value (cancelQueuedByParam: the prefetches of a media file, an alert turned down), and, in
 * cluster mode, forgetting one this node holds while the caller's own statement withdraws its row (forgetQueued:
 * a broadcast stop decided in the database). Decided at once from memory (open-commands.ts); the write goes into
 * the state window. A command already sent is never withdrawn: the device may be acting on it.
 *
 * Cluster mode: queued commands held by other nodes are withdrawn in the database too (their owners then miss
 * their move to `sent` and never publish them, publisher.ts) and their owners are hinted.
 *
 * Separate from RpcService because withdrawal has its own rules (never sent only, memory here and rows
 * elsewhere) apart from sending and answering.
 */
import type { Clock } from '../core/clock.js';
import type { StateWindow } from '../storage/state/window.js';
import type { OpenCommands } from './open-commands.js';
import type { RpcStoreSql } from './store-sql.js';
import type { RpcRequest } from './types.js';

export interface CancelsDeps {
  window: StateWindow;
  open: OpenCommands;
  /** The store, or KENG_ERR_NOT_READY when the service is not started. */
  requireStore: () => RpcStoreSql;
  clock: Clock;
  /** No longer open (kept as finished until its window commits). */
  finish(r: RpcRequest): void;
  /** Cluster mode (ownership on PostgreSQL): other nodes hold commands too. */
  clustered: boolean;
  /** Cluster mode: tells node `owner` to look at the commands it holds. */
  hintOwner(owner: string): void;
}

export class CommandCancels {
  constructor(private readonly d: CancelsDeps) {}

  /** true while the command is held and has never been sent. */
  isQueued(requestId: string): boolean {
    const r = this.d.open.get(requestId);
    return r !== undefined && r.state === 'queued' && r.sentAt === null;
  }

  /** Memory only: the caller's statement withdraws the row (RpcService.forgetQueued). */
  forgetQueued(requestId: string): boolean {
    if (!this.isQueued(requestId)) return false;
    this.d.finish({ ...this.d.open.get(requestId)!, state: 'cancelled', answeredAt: this.d.clock.now() });
    return true;
  }

  /** RpcService.cancel: false when already sent (or unknown/finished); resolves after the commit. */
  cancel(requestId: string): Promise<boolean> {
    if (!this.isQueued(requestId)) return Promise.resolve(false);
    const r = this.d.open.get(requestId)!;
    const at = this.d.clock.now();
    this.d.finish({ ...r, state: 'cancelled', answeredAt: at });
    const w = this.d.window;
    return w.durable(w.add(this.d.requireStore().cas, { id: r.id, deviceId: r.deviceId, from: 'queued', to: 'cancelled', at }))
      .then((o) => o.applied);
  }

  /** RpcService.cancelQueuedByParam: resolves with how many were withdrawn, after the commit. */
  byParam(method: string, path: string, value: string): Promise<number> {
    const keys = path.replace(/^\$\.?/, '').split('.').filter((k) => k.length > 0);
    const hit = [...this.d.open.all()].filter((r) => r.method === method && r.state === 'queued' && r.sentAt === null && valueAt(r.params, keys) === value);
    // Cluster mode: those queued on other nodes are withdrawn in the database (their owners then never publish them).
    if (hit.length === 0 && !this.d.clustered) return Promise.resolve(0);
    const store = this.d.requireStore();
    const w = this.d.window;
    const now = this.d.clock.now();
    let last: Promise<unknown> = Promise.resolve();
    for (const r of hit) {
      this.d.finish({ ...r, state: 'cancelled', answeredAt: now });
      last = w.add(store.cas, { id: r.id, deviceId: r.deviceId, from: 'queued', to: 'cancelled', at: now });
    }
    if (!this.d.clustered) return w.durable(last).then(() => hit.length);
    const elsewhere = w.add(store.cancelElsewhere, { method, path, value, at: now });
    return w.durable(Promise.all([last, elsewhere])).then(([, owners]) => {
      for (const n of new Set(owners)) this.d.hintOwner(n);
      return hit.length + owners.length;
    });
  }
}

/** The string at `keys` inside `params` (undefined when absent or not a string). */
function valueAt(params: Record<string, unknown>, keys: readonly string[]): string | undefined {
  let v: unknown = params;
  for (const k of keys) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return typeof v === 'string' ? v : undefined;
}

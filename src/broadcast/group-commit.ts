/**
 * Group commit for the broadcast path of the state store.
 *
 * The state store runs WAL with synchronous=FULL: every autocommit write is
 * an fsync. A broadcast to 2,000 speakers makes ~4 writes per speaker per
 * step (RPC request state, target state, log line) as the answers and
 * playback events arrive one MQTT message at a time; one fsync each makes the
 * "2,000 accepted within 2 s" target (docs/benchmarks.md) unreachable.
 *
 * GroupCommit opens one transaction when a broadcast-related message (a
 * device's answer, a playback event, or a broadcast start) is handled, and
 * commits it a few milliseconds later (windowMs, default 8 ms), so
 * everything handled meanwhile shares one fsync. The services that handle
 * those messages (RpcService, BroadcastExecutor) are given `run` as their
 * `batch` dependency and call it around their writes. Code using `db.transaction()` inside it
 * gets a savepoint (better-sqlite3), so its all-or-nothing behaviour is kept.
 * A device's answer or event handled in a window is acknowledged (PUBACK)
 * only once that window is committed: the ingest service waits for
 * `durable()` before it lets the broker answer, so a crash or power cut
 * inside a window loses nothing a device was told is stored; the device
 * resends what was not acknowledged. A window whose COMMIT fails rejects
 * `durable()`: those devices get no PUBACK and are disconnected, and resend.
 */
import type { Component, Logger } from '../core/index.js';
import type { SqliteDatabase } from '../storage/state/db.js';
import type { Db } from '../storage/sql/db.js';

export class GroupCommit implements Component {
  readonly name = 'broadcast-group-commit';
  private open = false;
  private running = false;
  /** Settles when the open window commits (rejects when its COMMIT fails); null while none is open. */
  private window: { promise: Promise<void>; resolve(): void; reject(err: unknown): void } | null = null;

  /**
   * windowMs: how long a batch stays open. Speaker answers arrive one socket read at a time (each its own
   * event-loop turn), so committing on the next turn would still cost one fsync per answer; a few
   * milliseconds gathers hundreds of answers into one commit.
   */
  constructor(private readonly o: { stateDb: { readonly db: SqliteDatabase }; logger: Logger; windowMs?: number }) {}

  async start(): Promise<void> { this.running = true; }

  async stop(): Promise<void> {
    this.running = false;
    this.commit();
  }

  /** Resolves once every write made so far through run() is committed (at once when no window is open). */
  durable(): Promise<void> {
    return this.window?.promise ?? Promise.resolve();
  }

  /** Run `fn` inside the current batch (one is opened if needed). */
  run<T>(fn: () => T): T {
    this.begin();
    return fn();
  }

  /**
   * Run `fn` inside the current batch and commit the batch before returning (also when `fn` throws:
   * what it wrote is already rolled back by its own transaction, the rest of the batch is good).
   * For a broadcast start: its rows are on disk before its API reply and before its commands,
   * which RpcService publishes after the current synchronous code, go out.
   */
  runDurably<T>(fn: () => T): T {
    this.begin();
    try {
      return fn();
    } finally {
      this.commit();
    }
  }

  private begin(): void {
    if (!this.running || this.open) return;
    const db = this.o.stateDb.db;
    if (db.inTransaction) return;
    try {
      db.exec('BEGIN IMMEDIATE');
    } catch (err) {
      this.o.logger.warn({ err }, 'group commit: could not begin; writes go one by one');
      return;
    }
    this.open = true;
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
    promise.catch(() => undefined); // a window nobody waits for must not be an unhandled rejection
    this.window = { promise, resolve, reject };
    const windowMs = this.o.windowMs ?? 8;
    if (windowMs > 0) setTimeout(() => this.commit(), windowMs);
    else setImmediate(() => this.commit());
  }

  /** Commits the open window now (the state window's flush is about to begin its own transaction). */
  commitNow(): void { this.commit(); }

  private commit(): void {
    if (!this.open) return;
    this.open = false;
    const w = this.window!;
    this.window = null;
    const db = this.o.stateDb.db;
    if (!db.inTransaction) { // rolled back by SQLite itself (an I/O error): what the window held is not stored
      w.reject(new Error('the state store rolled back the group commit'));
      return;
    }
    try {
      db.exec('COMMIT');
      w.resolve();
    } catch (err) {
      this.o.logger.error({ err }, 'group commit failed; rolling back this batch');
      try { db.exec('ROLLBACK'); } catch { /* already rolled back */ }
      w.reject(err);
    }
  }
}

/**
 * The embedded state store's port for the state window while this group commit still runs: each window
 * flush first commits the group's open transaction. The flush calls `write` synchronously at the start of
 * its own macrotask and on SQLite the whole BEGIN … COMMIT completes within that macrotask's microtasks, so
 * no synchronous writer can open the group again in between: the window's transaction is top-level.
 */
export function beforeStateWindow(db: Db<unknown>, group: GroupCommit): Db<unknown> {
  return {
    dialect: db.dialect,
    get kysely() { return db.kysely; },
    write: (fn) => { group.commitNow(); return db.write(fn); },
    snapshot: (fn) => db.snapshot(fn),
    ping: (timeoutMs) => db.ping(timeoutMs),
    close: () => db.close(),
  };
}

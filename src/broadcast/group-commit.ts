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
 * Trade-off: a crash or power cut can lose the state changes of the last
 * open window (≤ windowMs); later playback events and the RPC replay on
 * reconnect bring a speaker's state forward again.
 */
import type { Component, Logger } from '../core/index.js';
import type { SqliteDatabase } from '../storage/state/db.js';

export class GroupCommit implements Component {
  readonly name = 'broadcast-group-commit';
  private open = false;
  private running = false;

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
    const windowMs = this.o.windowMs ?? 8;
    if (windowMs > 0) setTimeout(() => this.commit(), windowMs);
    else setImmediate(() => this.commit());
  }

  private commit(): void {
    if (!this.open) return;
    this.open = false;
    const db = this.o.stateDb.db;
    if (!db.inTransaction) return; // rolled back by SQLite itself (I/O error): nothing to commit
    try {
      db.exec('COMMIT');
    } catch (err) {
      this.o.logger.error({ err }, 'group commit failed; rolling back this batch');
      try { db.exec('ROLLBACK'); } catch { /* already rolled back */ }
    }
  }
}

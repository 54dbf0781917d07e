/**
 * The state store as a `Db` (src/storage/sql): the same Kysely query layer on
 * both dialects, so a repository written once runs on the embedded SQLite
 * state.db and, in cluster mode, on PostgreSQL.
 *
 * Embedded: Kysely over the StateDb's OWN better-sqlite3 connection, not a
 * second one (a second connection of the same thread waiting in busy_timeout
 * would block the event loop the first needs). Repositories not yet moved to
 * this port keep using `StateDb.db` synchronously on that same connection, and
 * both stay consistent because a write transaction through this port only
 * awaits database calls: better-sqlite3 answers them synchronously, so the
 * whole transaction runs in one macrotask's microtasks and no other event-loop
 * task (a sync repository, another request) can run inside it. Rule for every
 * repository on this port, on both dialects: never await anything but the
 * database inside `write()` (hash passwords, read files, call the network
 * before it).
 *
 * Write transactions are begun here, not by Kysely: BEGIN IMMEDIATE (as
 * everywhere in Keng), or a SAVEPOINT when the connection is already inside a
 * transaction (as better-sqlite3's own `db.transaction()` nests).
 * Inside `write(fn)` use only `trx`: the transaction holds the connection, so a
 * query on `db.kysely` from within would wait for it forever. Outside, plain
 * statements on `db.kysely` wait for an open transaction to end.
 *
 * The Kysely instance follows the StateDb's connection: after a stop/start
 * (a new handle) the next call builds a new one. The StateDb owns and closes
 * the connection; `close()` here does nothing.
 */
import { Kysely, sql, type Transaction } from 'kysely';
import { withTimeout } from '../../core/async.js';
import { ImmediateSqliteDialect, type Db } from '../sql/db.js';
import type { SqliteDatabase } from './db.js';

const kyselies = new WeakMap<SqliteDatabase, Kysely<unknown>>();
let savepoints = 0;

class StateSqlitePort implements Db<unknown> {
  readonly dialect = 'sqlite' as const;

  constructor(private readonly state: { readonly db: SqliteDatabase }) {}

  /** One Kysely per connection, shared by every port on it: its connection mutex is what serialises them. */
  get kysely(): Kysely<unknown> {
    const h = this.state.db;
    let k = kyselies.get(h);
    if (!k) {
      k = new Kysely<unknown>({ dialect: new ImmediateSqliteDialect({ database: h }) });
      kyselies.set(h, k);
    }
    return k;
  }

  /**
   * The transaction holds Kysely's connection (its mutex) from BEGIN to COMMIT: another write, a snapshot or
   * a plain statement of another task waits for it instead of running inside it (two writes started in one
   * turn would otherwise share one SQLite transaction, and a rollback of one would undo the other).
   */
  write<T>(fn: (trx: Transaction<unknown>) => Promise<T>): Promise<T> {
    return this.kysely.connection().execute(async (conn) => {
      const h = this.state.db;
      // Open here means opened by synchronous better-sqlite3 code (db.transaction): never by another task through Kysely.
      const savepoint = h.inTransaction ? `keng_w${++savepoints}` : null;
      h.exec(savepoint ? `SAVEPOINT ${savepoint}` : 'BEGIN IMMEDIATE');
      try {
        const r = await fn(conn as unknown as Transaction<unknown>);
        h.exec(savepoint ? `RELEASE ${savepoint}` : 'COMMIT');
        return r;
      } catch (err) {
        // SQLite may have rolled back by itself (an I/O error, SQLITE_FULL): then there is nothing to undo.
        if (h.inTransaction) h.exec(savepoint ? `ROLLBACK TO ${savepoint}; RELEASE ${savepoint}` : 'ROLLBACK');
        throw err;
      }
    });
  }

  snapshot<T>(fn: (trx: Transaction<unknown>) => Promise<T>): Promise<T> {
    return this.kysely.connection().execute(async (conn) => {
      const h = this.state.db;
      if (h.inTransaction) return fn(conn as unknown as Transaction<unknown>);
      // A deferred (read) transaction: in WAL mode it reads one snapshot and never blocks writers.
      h.exec('BEGIN');
      try {
        return await fn(conn as unknown as Transaction<unknown>);
      } finally {
        if (h.inTransaction) h.exec('COMMIT');
      }
    });
  }

  async ping(timeoutMs = 5_000): Promise<void> {
    await withTimeout(sql`SELECT 1`.execute(this.kysely), timeoutMs);
  }

  async close(): Promise<void> { /* the StateDb owns the connection */ }
}

/** The embedded state store (its current connection) as a Db. */
export function stateSqlitePort(state: { readonly db: SqliteDatabase }): Db<unknown> {
  return new StateSqlitePort(state);
}

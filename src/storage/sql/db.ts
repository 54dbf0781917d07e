/**
 * The database port for the move of Keng's repositories to async (docs/cluster.md):
 * one `Db` over Kysely with two dialects, SQLite (better-sqlite3, one node) and
 * PostgreSQL (pg Pool, cluster mode). Repositories write SQL once against Kysely;
 * what differs per dialect (DDL, upsert details, locks) is chosen by `db.dialect`.
 *
 * Why Kysely (0.28.x, the last line for Node 20): typed queries, RETURNING,
 * ON CONFLICT and multi-row inserts compiled per dialect, raw `sql` where needed,
 * and no runtime dependencies.
 *
 * Write transactions:
 *  - SQLite: `BEGIN IMMEDIATE`, not Kysely's plain (DEFERRED) `begin`. The
 *    database file is shared between the server and the CLI; a deferred
 *    transaction that reads and then writes can fail with SQLITE_BUSY despite
 *    busy_timeout, an immediate one waits for the lock up front.
 *  - PostgreSQL: READ COMMITTED (the default); callers take row or advisory
 *    locks where they need them (migrate.ts does).
 *
 * PostgreSQL never hangs a caller forever: connect timeout, a server-side
 * statement_timeout, a client-side query timeout (a black-holed network gives
 * no error), TCP keep-alive, and idle_in_transaction_session_timeout so a
 * stuck node cannot hold locks. A connection error rejects the call in flight;
 * the pool drops the broken connection and the next call reconnects.
 */
import Database from 'better-sqlite3';
import {
  CompiledQuery, Kysely, PostgresDialect, SelectQueryNode, SqliteDialect, SqliteDriver, sql,
  type DatabaseConnection, type Driver, type QueryResult, type SqliteDatabase, type SqliteDialectConfig, type Transaction,
} from 'kysely';
import pg from 'pg';
import { withTimeout } from '../../core/async.js';
import { failoverPool, primaryFindingClient, splitPgUrl } from './pg-hosts.js';

export type SqlDialect = 'sqlite' | 'postgres';

export interface Db<DB = unknown> {
  readonly dialect: SqlDialect;
  /** For reads and single statements outside a transaction. */
  readonly kysely: Kysely<DB>;
  /** One write transaction (BEGIN IMMEDIATE on SQLite); commits when `fn` resolves, rolls back when it throws. */
  write<T>(fn: (trx: Transaction<DB>) => Promise<T>): Promise<T>;
  /** Reads that must see one snapshot (several statements): REPEATABLE READ on PostgreSQL, one read transaction on SQLite. */
  snapshot<T>(fn: (trx: Transaction<DB>) => Promise<T>): Promise<T>;
  /** Resolves when the database answers `SELECT 1` within `timeoutMs`; rejects otherwise. */
  ping(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export interface PgOptions {
  /** Pool size per node; nodes × poolMax must stay below the server's max_connections. */
  poolMax?: number;
  connectTimeoutMs?: number;
  /** Server-side statement_timeout and the client-side query timeout (+1 s). */
  statementTimeoutMs?: number;
  /** Server-side idle_in_transaction_session_timeout. */
  idleInTransactionTimeoutMs?: number;
  /** Called on errors of idle pooled connections (a restart of the server), which would otherwise crash the process. */
  onIdleError?: (err: Error) => void;
}

const PG_DEFAULTS = { poolMax: 10, connectTimeoutMs: 5_000, statementTimeoutMs: 30_000, idleInTransactionTimeoutMs: 30_000 };

/** int8 (20) as a JS number: Keng's bigints are epoch ms and counts, far below 2^53. */
const pgTypes = {
  getTypeParser: ((oid: number, format?: string) => oid === 20 && format !== 'binary'
    ? (v: string) => Number(v)
    : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/**
 * Kysely's SqliteDriver with two changes: write transactions begin IMMEDIATE, and a statement cache.
 * Kysely's own connection prepares every query again (`db.prepare(sql)` per call), which costs ~10–30 µs
 * on Keng's tables, more than running the statement; the state repositories that run many statements
 * per speaker (docs/design: the state window) need them prepared once. One better-sqlite3 `Statement`
 * per SQL text per connection, least recently used dropped beyond `STATEMENT_CACHE_SIZE`: repositories
 * write fixed SQL texts (values are parameters), so a few hundred cover every query.
 */
export const STATEMENT_CACHE_SIZE = 500;

class CachingSqliteConnection implements DatabaseConnection {
  private readonly cache = new Map<string, Database.Statement>();

  constructor(private readonly db: Database.Database, private readonly size: number) {}

  private statement(text: string): Database.Statement {
    const hit = this.cache.get(text);
    if (hit !== undefined) {
      // Map keeps insertion order: moving a hit to the end makes the first entry the least recently used.
      this.cache.delete(text);
      this.cache.set(text, hit);
      return hit;
    }
    const stmt = this.db.prepare(text);
    this.cache.set(text, stmt);
    if (this.cache.size > this.size) this.cache.delete(this.cache.keys().next().value as string);
    return stmt;
  }

  executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const stmt = this.statement(compiled.sql);
    const parameters = compiled.parameters as unknown[];
    if (stmt.reader) return Promise.resolve({ rows: stmt.all(parameters) as R[] });
    const { changes, lastInsertRowid } = stmt.run(parameters);
    return Promise.resolve({ numAffectedRows: BigInt(changes), insertId: BigInt(lastInsertRowid), rows: [] });
  }

  async *streamQuery<R>(compiled: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    // Not cached: an open iterator keeps its statement busy, and a cached one could be wanted meanwhile.
    if (!SelectQueryNode.is(compiled.query)) throw new Error('Sqlite driver only supports streaming of select queries');
    for (const row of this.db.prepare(compiled.sql).iterate(compiled.parameters as unknown[])) yield { rows: [row as R] };
  }
}

class ImmediateSqliteDriver extends SqliteDriver {
  private database: Database.Database | undefined;
  private connection: CachingSqliteConnection | undefined;

  constructor(cfg: SqliteDialectConfig, private readonly cacheSize: number) {
    // Resolve the database once, here, and hand the same handle to the base class (its destroy() closes it).
    const database = cfg.database;
    super({
      ...cfg,
      database: async () => {
        this.database = (typeof database === 'function' ? await database() : database) as unknown as Database.Database;
        return this.database as unknown as SqliteDatabase;
      },
    });
  }

  override async acquireConnection(): Promise<DatabaseConnection> {
    await super.acquireConnection(); // the base class's mutex: one query or transaction at a time
    this.connection ??= new CachingSqliteConnection(this.database!, this.cacheSize);
    return this.connection;
  }

  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

export class ImmediateSqliteDialect extends SqliteDialect {
  constructor(private readonly cfg: SqliteDialectConfig, private readonly cacheSize = STATEMENT_CACHE_SIZE) { super(cfg); }
  override createDriver(): Driver { return new ImmediateSqliteDriver(this.cfg, this.cacheSize); }
}

class KyselyDb<DB> implements Db<DB> {
  private probe: Promise<void> | null = null;
  constructor(readonly dialect: SqlDialect, readonly kysely: Kysely<DB>, private readonly onClose: () => Promise<void> = async () => undefined) {}

  write<T>(fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
    return this.kysely.transaction().execute(fn);
  }

  snapshot<T>(fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
    // SQLite: the (immediate) write transaction is a snapshot too; only PostgreSQL needs the stronger level.
    return this.dialect === 'postgres' ? this.kysely.transaction().setIsolationLevel('repeatable read').execute(fn) : this.write(fn);
  }

  async ping(timeoutMs = 5_000): Promise<void> {
    // One probe in flight at a time: while the network black-holes PostgreSQL a probe hangs until the query
    // timeout (30 s), and a balancer asking /readyz every few hundred ms would otherwise pile up probes that hold
    // every pooled connection. Callers share the probe in flight; each still gives up after its own timeout.
    this.probe ??= sql`SELECT 1`.execute(this.kysely).then(() => undefined).finally(() => { this.probe = null; });
    await withTimeout(this.probe, timeoutMs);
  }

  async close(): Promise<void> {
    await this.kysely.destroy();
    await this.onClose();
  }
}

/**
 * SQLite file (or ':memory:'): WAL, synchronous=FULL, busy_timeout as elsewhere in Keng.
 * Open one Db per file per process: better-sqlite3 is synchronous, so a second
 * connection of the same thread waiting in busy_timeout would block the event
 * loop that the first one needs to finish its transaction. Calls on one Db are
 * serialised by Kysely's connection mutex.
 */
export function openSqliteDb<DB>(file: string, o: { sync?: 'full' | 'normal' } = {}): Db<DB> {
  const database = new Database(file);
  database.pragma('busy_timeout = 5000');
  if (file !== ':memory:') database.pragma('journal_mode = WAL');
  database.pragma(`synchronous = ${o.sync === 'normal' ? 'NORMAL' : 'FULL'}`);
  return new KyselyDb<DB>('sqlite', new Kysely<DB>({ dialect: new ImmediateSqliteDialect({ database }) }));
}

/** PostgreSQL from a `postgres://` URL; connects lazily (the first query, or ping()). */
export function openPgDb<DB>(url: string, o: PgOptions = {}): Db<DB> {
  const c = { ...PG_DEFAULTS, ...o };
  const urls = splitPgUrl(url);
  const pool = failoverPool({
    // Several hosts: each new connection goes to the primary among them (pg-hosts.ts).
    connectionString: urls[0],
    Client: primaryFindingClient(urls),
    max: c.poolMax,
    connectionTimeoutMillis: c.connectTimeoutMs,
    statement_timeout: c.statementTimeoutMs,
    query_timeout: c.statementTimeoutMs + 1_000,
    idle_in_transaction_session_timeout: c.idleInTransactionTimeoutMs,
    // No JIT: Keng's statements are short, but one over a JSON array of 2,000 rows (a broadcast's commands) is
    // estimated costly enough for PostgreSQL to compile it, which took 265 of its 290 ms (EXPLAIN ANALYZE,
    // PostgreSQL 15): JIT pays off for long analytic queries only.
    options: '-c jit=off',
    keepAlive: true,
    application_name: 'keng',
    types: pgTypes,
  }, urls.length);
  pool.on('error', (err) => o.onIdleError?.(err));
  // A connection that breaks while checked out (between two statements of a transaction) emits
  // 'error' with no pool listener attached: without one the process would crash. The statement
  // in flight, or the next one, rejects; the pool then discards the connection.
  pool.on('connect', (client) => {
    client.on('error', (err) => o.onIdleError?.(err));
    abandonAfterReadTimeout(client);
  });
  return new KyselyDb<DB>('postgres', new Kysely<DB>({ dialect: new PostgresDialect({ pool }) }));
}

/**
 * The client-side query timeout fires only when the server stays silent (its own statement_timeout
 * answers first otherwise): the network is cut. pg then rejects the query but keeps waiting for its
 * answer on the same connection, so the next statement on it (the transaction's ROLLBACK) waits a
 * whole timeout more, and a write fails after twice the timeout. Closing the connection makes that
 * ROLLBACK fail at once and the pool open a new one; the server rolls back the orphaned transaction
 * itself (idle_in_transaction_session_timeout, or the session's end).
 */
function abandonAfterReadTimeout(client: pg.PoolClient): void {
  const query = client.query as (...args: unknown[]) => unknown;
  client.query = function (this: pg.PoolClient, ...args: unknown[]) {
    const result = query.apply(this, args);
    if (result instanceof Promise) {
      // A side branch that only watches: the caller still gets the rejection from `result`.
      result.catch((err: unknown) => {
        if ((err as Error | undefined)?.message === 'Query read timeout') client.end().catch(() => undefined);
      });
    }
    return result;
  } as typeof client.query;
}

/** `postgres://user:pw@host/db` → `postgres://user:***@host/db`, for logs and error messages (also with several hosts). */
export function redactUrl(url: string): string {
  try {
    const urls = splitPgUrl(url);
    if (urls.length > 1) {
      // The first host's URL redacted, with the whole host list put back in its place.
      const first = new URL(urls[0]!).host;
      const hosts = urls.map((u) => new URL(u).host).join(',');
      const r = redactUrl(urls[0]!);
      return r.includes(`@${first}`) ? r.replace(`@${first}`, `@${hosts}`) : r.replace(`//${first}`, `//${hosts}`);
    }
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/**
 * What every `keng` command shares: the state store opened the CLI's way,
 * output helpers, and the wrapper that turns errors into one line and an
 * exit status (see index.ts).
 */
import { userInfo } from 'node:os';
import path from 'node:path';
import { loadConfig, ConfigError, type Config } from '../config/index.js';
import { EventBus, Metrics, createLogger, exitStatusFor, isKengError, systemClock } from '../core/index.js';
import { Errors } from '../core/errors.js';
import { openPgDb, redactUrl, type Db } from '../storage/sql/index.js';
import { StateDb, stateSqlitePort } from '../storage/state/index.js';
import { ALL_MIGRATIONS } from '../migrations.js';
import { DeviceRegistry } from '../devices/index.js';

/**
 * Opens the state store and a registry that leaves presence to the server. In cluster mode
 * (KENG_DATABASE_URL) the registry's rows are in PostgreSQL, as every server reads them; `sql` is
 * where they are (PostgreSQL, or state.db through the port).
 */
export async function withRegistry<T>(fn: (reg: DeviceRegistry, db: StateDb, config: Readonly<Config>, sql: Db<unknown>) => T | Promise<T>): Promise<T> {
  const config = loadConfig();
  // Logs go to stderr so stdout stays parseable; quiet unless KENG_LOG_LEVEL asks otherwise.
  const logger = createLogger(process.env.KENG_LOG_LEVEL ? config.logLevel : 'warn', { destination: process.stderr });
  const db = new StateDb({ dataDir: path.resolve(config.dataDir), logger: logger.child({ module: 'state' }), migrations: ALL_MIGRATIONS, create: false });
  const url = config.cluster.databaseUrl;
  const pg = url !== undefined ? openPgDb(url, { poolMax: 2 }) : null;
  const sql = pg ?? stateSqlitePort(db);
  const reg = new DeviceRegistry({
    db, sql, bus: new EventBus(), logger: logger.child({ module: 'devices' }),
    metrics: new Metrics({ defaultMetrics: false }), clock: systemClock, ownsPresence: false, onDelete: config.telemetry.onDeviceDelete,
  });
  await db.start();
  try {
    if (pg && url !== undefined) {
      await pg.ping(10_000).catch((err: Error) => { throw Errors.CONFIG(`KENG_DATABASE_URL: PostgreSQL at ${redactUrl(url)} does not answer: ${err.message}`); });
    }
    await reg.start();
    try { return await fn(reg, db, config, sql); } finally { await reg.stop(); }
  } finally {
    await pg?.close();
    await db.stop();
  }
}

/**
 * The state tables already on the `Db` port (Modbus settings, ...): PostgreSQL in cluster mode
 * (KENG_DATABASE_URL, what every server reads), the data directory's state.db otherwise.
 */
export async function withStateSql<T>(config: Readonly<Config>, state: StateDb, fn: (db: Db<unknown>) => Promise<T>): Promise<T> {
  const url = config.cluster.databaseUrl;
  return url === undefined ? fn(stateSqlitePort(state)) : withClusterDb(url, fn);
}

/** The cluster database for one command: one connection, checked first (a wrong URL fails with one line naming the setting). */
export async function withClusterDb<T>(url: string, fn: (db: Db<unknown>) => Promise<T>): Promise<T> {
  const db = openPgDb(url, { poolMax: 1 });
  try {
    await db.ping(10_000).catch((err: Error) => { throw Errors.CONFIG(`KENG_DATABASE_URL: PostgreSQL at ${redactUrl(url)} does not answer: ${err.message}`); });
    return await fn(db);
  } finally {
    await db.close();
  }
}

/** Audit actor of CLI changes: the operating-system user running `keng`. */
export function cliActor(): string {
  let name = 'unknown';
  try { name = userInfo().username; } catch { /* no passwd entry */ }
  return `cli:${name}`;
}

export function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

export function json(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

/** Left-aligned columns. */
export function table(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  out(fmt(header));
  for (const r of rows) out(fmt(r));
}

/** Wraps an action: one-line KENG_ERR errors and a non-zero exit status. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      if (err instanceof ConfigError || isKengError(err)) {
        process.stderr.write(`keng: ${err.code}: ${err.message}\n`);
        process.exitCode = exitStatusFor(err.code);
      } else {
        process.stderr.write(`keng: KENG_ERR_INTERNAL: ${(err as Error)?.message ?? String(err)}\n`);
        process.exitCode = 1;
      }
    }
  };
}

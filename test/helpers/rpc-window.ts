/**
 * RpcService's storage in tests: the embedded port over a better-sqlite3 connection and a started state window on it
 * (windowMs 0 by default: a window commits at the next turn, so a test's `setImmediate` sees its publishes).
 */
import type { Database } from 'better-sqlite3';
import type { Db } from '../../src/storage/sql/db.js';
import { StateWindow, stateSqlitePort } from '../../src/storage/state/index.js';
import { createLogger } from '../../src/core/index.js';

type WriteFn = Parameters<Db<unknown>['write']>[0];

/** `write`: wraps the window's transactions (e.g. to fail some); reads go straight to the port. */
export function rpcStateOn(db: Database, windowMs = 0,
  write?: (fn: WriteFn, next: (fn: WriteFn) => Promise<unknown>) => Promise<unknown>): { db: Db<unknown>; window: StateWindow } {
  const port = stateSqlitePort({ db });
  const windowDb: Db<unknown> = !write ? port : {
    dialect: port.dialect,
    get kysely() { return port.kysely; },
    write: <T>(fn: (trx: Parameters<WriteFn>[0]) => Promise<T>) => write(fn, (f) => port.write(f)) as Promise<T>,
    snapshot: (fn) => port.snapshot(fn),
    ping: (t) => port.ping(t),
    close: () => port.close(),
  };
  const window = new StateWindow({ db: windowDb, logger: createLogger('silent'), windowMs });
  void window.start(); // sets it running synchronously
  return { db: port, window };
}

/** Polls `f` (every 25 ms) until it holds; throws naming `what` after `ms`. */
export async function untilTrue(what: string, f: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

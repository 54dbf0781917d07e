import type { SqliteDatabase } from './db.js';

/**
 * A module's prepared statements for the state store's current connection:
 * prepared on first use (the store opens at start, after the module is
 * built) and again when the connection changes (a reopen, e.g. after a
 * restore). `prepare` returns the statements with the connection they were
 * prepared on.
 */
export function statementsOn<T extends { db: SqliteDatabase }>(db: () => SqliteDatabase, prepare: (db: SqliteDatabase) => T): () => T {
  let q: T | undefined;
  return () => {
    const d = db();
    if (q?.db !== d) q = prepare(d);
    return q;
  };
}

export { StateDb, STATE_DB_FILE, type StateDbOptions, type AppliedMigration, type SqliteDatabase } from './db.js';
export { MIGRATIONS, latestVersion, type Migration } from './migrations.js';
export { DataDirLock, LOCK_FILE, HOLDER_FILE, readHolder, type DataDirLockOptions, type LockHolder } from './data-dir-lock.js';
export { statementsOn } from './statements.js';
export { stateSqlitePort } from './sql.js';
export { StateWindow, WINDOW_PHASES, type After, type FlushContext, type StateWindowOptions, type UnitOptions, type WindowKind } from './window.js';

export { ClusterDatabase } from './component.js';
export { openPgDb, openSqliteDb, redactUrl, type Db, type PgOptions, type SqlDialect } from './db.js';
export { migrate, type SqlMigration } from './migrate.js';

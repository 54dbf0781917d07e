import { Errors } from '../../core/errors.js';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import { openPgDb, redactUrl, type Db } from './db.js';
import { migrate, type SqlMigration } from './migrate.js';

/**
 * The cluster database's connection pool as a component: start() checks that
 * PostgreSQL answers (a wrong or unreachable KENG_DATABASE_URL stops the start
 * with one message naming it), stop() closes the pool after the components
 * that use it have stopped (it is started before them).
 */
export class ClusterDatabase implements Component {
  readonly name = 'cluster-database';
  readonly db: Db<unknown>;

  /** scopes: the state repositories' PostgreSQL schemas, migrated at start (before any component uses them). */
  constructor(private readonly url: string, private readonly logger: Logger,
    private readonly scopes: ReadonlyArray<{ scope: string; migrations: readonly SqlMigration[] }> = []) {
    // Errors of pooled connections (a server restart, a cut network) are logged; the calls that
    // use them reject and the pool reconnects on the next one.
    this.db = openPgDb(url, { onIdleError: (err) => this.logger.warn({ err: err.message }, 'PostgreSQL connection lost') });
  }

  async start(): Promise<void> {
    try {
      await this.db.ping(10_000);
    } catch (err) {
      throw Errors.CONFIG(`KENG_DATABASE_URL: PostgreSQL at ${redactUrl(this.url)} does not answer: ${(err as Error).message}`);
    }
    this.logger.info({ database: redactUrl(this.url) }, 'cluster database reachable');
    for (const { scope, migrations } of this.scopes) {
      const applied = await migrate(this.db, scope, migrations);
      if (applied.length) this.logger.info({ scope, applied }, 'cluster database migrated');
    }
  }

  async stop(): Promise<void> { await this.db.close(); }
}

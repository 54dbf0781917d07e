/**
 * Several PostgreSQL hosts in one URL, as libpq writes them (`postgres://u:pw@db1:5432,db2:5432/keng`):
 * Keng connects to whichever of them is the primary (accepts writes), so after a failover (a standby
 * promoted) it finds the new primary by itself, with no change of setting and no virtual IP.
 *
 * The `pg` driver takes one host per connection, so the pool is given a Client class that picks the
 * host: the last one found to be the primary, else the next in the list. A new connection to a host
 * that refuses it, or that is in recovery (a standby: `pg_is_in_recovery()`), fails and moves on to the
 * next host; the pool (FailoverPool) tries each host once before it gives up. Only new connections
 * move: a pooled connection to the old primary breaks when it dies and is discarded, and the call that
 * used it fails (no PUBACK; the device resends).
 *
 * What this cannot do: fence an old primary that comes back still believing it is one (two primaries
 * after a split). Whoever promotes a standby must make sure the old primary stays down or rejoins as a
 * standby (docs/cluster.md "Finding a new primary").
 */
import pg from 'pg';

export { splitPgUrl } from '../../core/pg-url.js';

interface Shared { urls: string[]; current: number }

/** pg.Pool's `Client` option when the URL names several hosts; a single host gets the plain pg.Client. */
export function primaryFindingClient(urls: string[]): typeof pg.Client {
  if (urls.length < 2) return pg.Client;
  const shared: Shared = { urls, current: 0 };
  class PrimaryClient extends pg.Client {
    private readonly index: number;

    constructor(config: pg.ClientConfig) {
      const index = shared.current;
      super({ ...config, connectionString: shared.urls[index] });
      this.index = index;
    }

    override connect(): Promise<pg.Client>;
    override connect(callback: (err: Error | null, c?: pg.Client) => void): void;
    override connect(callback?: (err: Error | null, c?: pg.Client) => void): Promise<pg.Client> | void {
      const p = super.connect().then(async () => {
        const r = await this.query<{ standby: boolean }>('SELECT pg_is_in_recovery() AS standby');
        if (r.rows[0]?.standby) throw new Error(`${this.host}:${this.port} is a standby, not the primary`);
        return this as pg.Client;
      }).catch(async (err: unknown) => {
        // Next connection: the next host (unless another connection has moved on already).
        if (shared.current === this.index) shared.current = (this.index + 1) % shared.urls.length;
        await this.end().catch(() => undefined);
        throw err;
      });
      if (!callback) return p;
      p.then((c) => callback(null, c), (err: Error) => callback(err));
    }
  }
  return PrimaryClient;
}

/** A pg.Pool that tries every host once for a new connection (with primaryFindingClient). */
export function failoverPool(config: pg.PoolConfig, hosts: number): pg.Pool {
  if (hosts < 2) return new pg.Pool(config);
  class FailoverPool extends pg.Pool {
    override connect(): Promise<pg.PoolClient>;
    override connect(callback: (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void): void;
    override connect(callback?: (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void): Promise<pg.PoolClient> | void {
      if (callback) { super.connect(callback); return; }
      return (async () => {
        let last: unknown;
        for (let i = 0; i < hosts; i++) {
          try { return await super.connect(); } catch (err) { last = err; }
        }
        throw last;
      })();
    }
  }
  return new FailoverPool(config);
}

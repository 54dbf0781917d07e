/**
 * The cluster database's node table (PostgreSQL; migrations scope `nodes`):
 * one row per node id with its lease (node-leases.ts, docs/cluster.md "Node
 * leases").
 *
 * Every time is in ms of PostgreSQL's clock (`clock_timestamp()`), never a
 * node's: whether a lease ran out is decided by one clock, whatever the nodes'
 * clocks say.
 *  - `instance`: a random id per process. Two processes configured with one
 *    node id overwrite each other's instance: that is how the conflict shows.
 *  - `lease_until`: renewed every few seconds; a row whose lease ran out is a
 *    dead node, whose device sessions any live node may sweep.
 *  - `swept_at`: set by the node that swept the row's sessions; the node itself,
 *    if it was only paused, finds it at its next renewal and mends its devices.
 *  - `stopped_at`: the node stopped cleanly (its lease ended at once).
 *
 * Embedded mode has one node: no table.
 */
import type { SqlMigration } from '../storage/sql/index.js';

export const NODES_PG_MIGRATIONS: readonly SqlMigration[] = [
  {
    version: 1,
    name: 'cluster nodes and their leases',
    sqlite: [],
    postgres: [
      `CREATE TABLE cluster_nodes (
        node_id text PRIMARY KEY, instance text NOT NULL, started_at bigint NOT NULL, renewed_at bigint NOT NULL,
        lease_until bigint NOT NULL, swept_at bigint, stopped_at bigint)`,
      'CREATE INDEX cluster_nodes_lease ON cluster_nodes (lease_until)',
    ],
  },
];

/**
 * Which nodes are alive, for the fair share of Modbus lines (leases.ts): the
 * port the wiring fills in (src/app.ts). The cluster's own node registry
 * provides it; until then, `lineLeaseHoldersAsLiveNodes` below.
 */
import { sql } from 'kysely';
import type { Db } from '../storage/sql/index.js';

export interface LiveNodes {
  /** The ids of the nodes alive now (this node may be missing: the caller counts itself anyway). */
  liveNodeIds(): Promise<string[]>;
}

/**
 * A stand-in for the cluster's node registry: the nodes that hold an
 * unexpired Modbus line lease, plus this one. Its limit: a node that holds no
 * line yet (it just joined) is invisible to the others, so they do not give
 * it lines back; it gets lines only when they fall free (a node stops or
 * dies). Lines still never get two pollers, and a dead node's lines are
 * still taken over.
 */
export function lineLeaseHoldersAsLiveNodes(db: Db<unknown>, nodeId: string): LiveNodes {
  return {
    async liveNodeIds() {
      const r = await sql<{ node_id: string }>`SELECT DISTINCT node_id FROM modbus_line_leases
        WHERE lease_until > (extract(epoch FROM clock_timestamp()) * 1000)::bigint ORDER BY node_id`.execute(db.kysely);
      return [...new Set([nodeId, ...r.rows.map((x) => x.node_id)])];
    },
  };
}

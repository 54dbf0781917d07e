/**
 * The statements of command ownership across cluster nodes (ownership.ts; docs/design/state-window.md §3),
 * PostgreSQL only. They read the cluster's own tables by name (`device_sessions`: which node holds a device's
 * MQTT session, holder-sql.ts; `cluster_nodes`: node leases, on PostgreSQL's clock), never a node's memory.
 *
 * `owner_inc` is the lease start (`cluster_nodes.started_at`) of the process that took the row: a new value per
 * process of a node id (kept across its renewals), 0 while the row waits for its owner to pick it up. A row is an
 * orphan when its owner node has no live lease, or a live lease of a LATER process than the one that took it (that
 * process took every open row of its node id at start, so only a row it missed is left so).
 */
import { sql, type Transaction } from 'kysely';
import { sessionHolder } from './holder-sql.js';
import { toRequest, type Row } from './store-sql.js';
import type { RpcRequest } from './types.js';

type Trx = Transaction<unknown>;

/** A row with its creation order (seq): memory keeps a device's commands in it. */
export type OwnedRow = RpcRequest & { seq: number };

const PG_NOW = sql`(extract(epoch FROM clock_timestamp()) * 1000)::bigint`;
const incOf = (me: string) => sql`COALESCE((SELECT n.started_at FROM cluster_nodes n WHERE n.node_id = ${me}), 0)`;

async function owned(q: { execute(db: Trx): Promise<{ rows: Array<Row & { seq: number }> }> }, trx: Trx): Promise<OwnedRow[]> {
  return (await q.execute(trx)).rows.map((r) => ({ ...toRequest(r), seq: Number(r.seq) })).sort((a, b) => a.seq - b.seq);
}

/** At start: every open row of this node id (a restart takes over its predecessor's), and those of devices it holds. */
export function takeAtStart(trx: Trx, me: string): Promise<OwnedRow[]> {
  return owned(sql<Row & { seq: number }>`UPDATE rpc_requests r SET owner_node = ${me}, owner_inc = ${incOf(me)}, handed = true
    WHERE r.state IN ('queued', 'sent')
      AND (r.owner_node = ${me} OR ${sessionHolder(sql`r.device_id`)} = ${me})
    RETURNING r.*`, trx);
}

/** The pickup: rows other nodes made for devices this node holds (`handed` false), now taken (finished ones too: they leave the index). */
export function pickUp(trx: Trx, me: string): Promise<OwnedRow[]> {
  return owned(sql<Row & { seq: number }>`UPDATE rpc_requests SET handed = true, owner_inc = ${incOf(me)}
    WHERE owner_node = ${me} AND NOT handed RETURNING *`, trx);
}

/**
 * Claim on connect: the open commands of devices whose session this node holds NOW (a later claim elsewhere takes
 * nothing here: that node claims them after its own session claim), and their last integer request ids.
 */
export async function claimDevices(trx: Trx, me: string, devices: readonly string[]): Promise<{ rows: OwnedRow[]; tbLast: Map<string, number> }> {
  const ids = [...devices];
  const rows = await owned(sql<Row & { seq: number }>`UPDATE rpc_requests r SET owner_node = ${me}, owner_inc = ${incOf(me)}, handed = true
    WHERE r.device_id = ANY(${ids}::text[]) AND r.state IN ('queued', 'sent')
      AND ${sessionHolder(sql`r.device_id`)} = ${me}
    RETURNING r.*`, trx);
  const tb = (await sql<{ device_id: string; last_id: number }>`SELECT device_id, last_id FROM rpc_tb_ids WHERE device_id = ANY(${ids}::text[])`
    .execute(trx)).rows;
  return { rows, tbLast: new Map(tb.map((r) => [r.device_id, Number(r.last_id)])) };
}

/**
 * Orphans: open rows whose owner is dead (see the header) that this node takes because they are due to expire
 * (`now`, this node's clock, as every expiry) or their device's session is here. Rows another node is adopting
 * (or moving) are skipped (SKIP LOCKED): two nodes never adopt one row.
 */
export function adoptOrphans(trx: Trx, me: string, now: number, answerGraceMs: number, limit: number): Promise<OwnedRow[]> {
  return owned(sql<Row & { seq: number }>`WITH c AS (
      SELECT r.id FROM rpc_requests r
      WHERE r.state IN ('queued', 'sent') AND r.owner_node <> ${me}
        AND NOT EXISTS (SELECT 1 FROM cluster_nodes n WHERE n.node_id = r.owner_node AND n.lease_until > ${PG_NOW}
          AND (r.owner_inc = 0 OR n.started_at = r.owner_inc))
        AND ((r.state = 'queued' AND r.expires_at <= ${now}) OR (r.state = 'sent' AND r.expires_at <= ${now - answerGraceMs})
          OR ${sessionHolder(sql`r.device_id`)} = ${me})
      ORDER BY r.seq LIMIT ${limit} FOR UPDATE OF r SKIP LOCKED)
    UPDATE rpc_requests r SET owner_node = ${me}, owner_inc = ${incOf(me)}, handed = true FROM c WHERE r.id = c.id RETURNING r.*`, trx);
}

/** Of `ids` (held in memory here), those another node owns now or that are no longer open (moved elsewhere). */
export async function notMine(trx: Trx, me: string, ids: readonly string[]): Promise<string[]> {
  return (await sql<{ id: string }>`SELECT id FROM rpc_requests WHERE id = ANY(${[...ids]}::text[])
    AND (owner_node <> ${me} OR state NOT IN ('queued', 'sent'))`.execute(trx)).rows.map((r) => r.id);
}

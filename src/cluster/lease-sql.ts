/**
 * The statements of node leases (node-leases.ts) on the cluster database
 * (nodes-schema.ts, sessions-schema.ts). Every time is PostgreSQL's clock in ms.
 */
import { sql, type Transaction } from 'kysely';

type Trx = Transaction<unknown>;

/** A device whose session row a sweep removed; `wasOnline`: device_state said online and now says offline. */
export interface ExpiredDevice { deviceId: string; nodeId: string; wasOnline: boolean }

export interface NodeRow {
  node_id: string; instance: string; started_at: number; renewed_at: number; lease_until: number;
  swept_at: number | null; stopped_at: number | null;
}

/** PostgreSQL's clock, ms (clock_timestamp: the moment of the call, not of the transaction's start). */
export async function dbNow(trx: Trx): Promise<number> {
  return Number((await sql<{ ms: number }>`SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms`.execute(trx)).rows[0]!.ms);
}

/** The node's row before this renewal (locked: a sweep of this node waits, or is waited for). */
export async function lockOwnRow(trx: Trx, nodeId: string): Promise<NodeRow | undefined> {
  return (await sql<NodeRow>`SELECT * FROM cluster_nodes WHERE node_id = ${nodeId} FOR UPDATE`.execute(trx)).rows[0];
}

/** Takes or extends the lease; `started_at` is kept while the same process renews. */
export async function upsertLease(trx: Trx, nodeId: string, instance: string, now: number, leaseMs: number): Promise<void> {
  await sql`INSERT INTO cluster_nodes (node_id, instance, started_at, renewed_at, lease_until)
    VALUES (${nodeId}, ${instance}, ${now}, ${now}, ${now + leaseMs})
    ON CONFLICT (node_id) DO UPDATE SET instance = EXCLUDED.instance,
      started_at = CASE WHEN cluster_nodes.instance = EXCLUDED.instance THEN cluster_nodes.started_at ELSE EXCLUDED.started_at END,
      renewed_at = EXCLUDED.renewed_at, lease_until = EXCLUDED.lease_until, swept_at = NULL, stopped_at = NULL`.execute(trx);
}

/** The largest session epoch handed out so far: every later claim takes a larger one (sessions-schema.ts). */
export async function lastEpoch(trx: Trx): Promise<number> {
  return Number((await sql<{ v: number }>`SELECT last_value AS v FROM device_session_epochs`.execute(trx)).rows[0]!.v);
}

/** Nodes whose lease ran out (not `self`), locked; those another sweeper holds are skipped (it does the work). */
export async function lockDeadNodes(trx: Trx, now: number, self: string): Promise<string[]> {
  return (await sql<{ node_id: string }>`SELECT node_id FROM cluster_nodes WHERE lease_until < ${now} AND node_id <> ${self}
    ORDER BY node_id FOR UPDATE SKIP LOCKED`.execute(trx)).rows.map((r) => r.node_id);
}

/**
 * Removes the session rows of `nodeIds` (only rows still theirs: a device that connected elsewhere has a
 * row of that node, which is not touched) and writes those devices offline, and the sub-devices of
 * gateways among them that no connection holds. last_seen and everything else stay as they are.
 * `maxEpoch`: only rows of claims up to that epoch (a restarted node clearing its predecessor's rows).
 */
export async function expireSessions(trx: Trx, nodeIds: readonly string[], maxEpoch?: number): Promise<ExpiredDevice[]> {
  const gone = (await sql<{ device_id: string; node_id: string }>`DELETE FROM device_sessions
    WHERE node_id = ANY(${nodeIds as string[]}::text[]) ${maxEpoch === undefined ? sql`` : sql`AND epoch <= ${maxEpoch}`}
    RETURNING device_id, node_id`.execute(trx)).rows;
  if (gone.length === 0) return [];
  const ids = gone.map((g) => g.device_id);
  const off = new Set((await sql<{ device_id: string }>`UPDATE device_state SET online = 0
    WHERE device_id = ANY(${ids}::text[]) AND online <> 0 RETURNING device_id`.execute(trx)).rows.map((r) => r.device_id));
  // A gateway's sub-devices are online through it (src/gateway): they went with their gateway's node.
  const subs = (await sql<{ device_id: string; gateway_id: string }>`UPDATE device_state d SET online = 0
    FROM gateway_sub_devices g WHERE g.device_id = d.device_id AND g.gateway_id = ANY(${ids}::text[]) AND d.online <> 0
      AND NOT EXISTS (SELECT 1 FROM device_sessions s WHERE s.device_id = d.device_id)
    RETURNING d.device_id, g.gateway_id`.execute(trx)).rows;
  const nodeOf = new Map(gone.map((g) => [g.device_id, g.node_id]));
  return [
    ...gone.map((g) => ({ deviceId: g.device_id, nodeId: g.node_id, wasOnline: off.has(g.device_id) })),
    ...subs.map((s) => ({ deviceId: s.device_id, nodeId: nodeOf.get(s.gateway_id)!, wasOnline: true })),
  ];
}

/** Marks the nodes whose sessions were just swept (the node finds it at its next renewal). */
export async function markSwept(trx: Trx, nodeIds: readonly string[], now: number): Promise<void> {
  if (nodeIds.length) await sql`UPDATE cluster_nodes SET swept_at = ${now} WHERE node_id = ANY(${nodeIds as string[]}::text[])`.execute(trx);
}

/** Rows of nodes dead for longer than `forgetMs` (renamed or removed nodes) go. Their sessions were swept already. */
export async function forgetNodes(trx: Trx, nodeIds: readonly string[], now: number, forgetMs: number): Promise<void> {
  if (nodeIds.length) {
    await sql`DELETE FROM cluster_nodes WHERE node_id = ANY(${nodeIds as string[]}::text[]) AND lease_until < ${now - forgetMs}`.execute(trx);
  }
}

export async function countAlive(trx: Trx, now: number): Promise<number> {
  return Number((await sql<{ n: number }>`SELECT COUNT(*) AS n FROM cluster_nodes WHERE lease_until >= ${now}`.execute(trx)).rows[0]!.n);
}

/** Ends this process's lease at once (a clean stop). */
export async function endLease(trx: Trx, nodeId: string, instance: string, now: number): Promise<void> {
  await sql`UPDATE cluster_nodes SET lease_until = ${now - 1}, stopped_at = ${now} WHERE node_id = ${nodeId} AND instance = ${instance}`.execute(trx);
}

/** Every node with the number of device sessions it holds, and PostgreSQL's now. */
export async function listNodes(trx: Trx): Promise<{ now: number; rows: Array<NodeRow & { devices: number }> }> {
  const now = await dbNow(trx);
  const rows = (await sql<NodeRow & { devices: number }>`SELECT n.*, (SELECT COUNT(*) FROM device_sessions s WHERE s.node_id = n.node_id) AS devices
    FROM cluster_nodes n ORDER BY n.node_id`.execute(trx)).rows;
  return { now, rows: rows.map((r) => ({ ...r, devices: Number(r.devices) })) };
}

export async function aliveNodeIds(trx: Trx): Promise<string[]> {
  const now = await dbNow(trx);
  return (await sql<{ node_id: string }>`SELECT node_id FROM cluster_nodes WHERE lease_until >= ${now} ORDER BY node_id`.execute(trx)).rows.map((r) => r.node_id);
}

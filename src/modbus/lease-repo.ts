/**
 * The line leases in PostgreSQL (cluster mode; table modbus_line_leases,
 * pg-schema.ts). Every time is on the DATABASE's clock (clock_timestamp()),
 * like the InfluxDB outbox's leases: nodes' clocks may disagree, the
 * database's is the one all of them compare with. Every statement returns
 * the database's time with the lease, so a node turns "valid until X on the
 * database's clock" into a deadline on its own monotonic clock (leases.ts).
 *
 * Each claim takes a new `epoch` from a sequence; renewals and releases are
 * guarded by (node, epoch): a lease another node took over is never renewed
 * back, and a node that claimed a line again after losing it does not renew
 * or release it under its old claim.
 */
import { sql } from 'kysely';
import type { Db } from '../storage/sql/index.js';

const NOW_MS = sql`(extract(epoch FROM clock_timestamp()) * 1000)::bigint`;

/** A lease this node holds: valid for `remainingMs` (database time) after the statement that returned it. */
export interface HeldLease { lineKey: string; epoch: number; remainingMs: number }

/** One row of the table, as every node sees it. */
export interface LeaseRow { lineKey: string; nodeId: string; epoch: number; live: boolean }

interface Returned { line_key: string; epoch: number; lease_until: number; db_now: number }

const held = (r: Returned): HeldLease => ({ lineKey: r.line_key, epoch: Number(r.epoch), remainingMs: Number(r.lease_until) - Number(r.db_now) });

export class LineLeaseRepo {
  constructor(private readonly db: Db<unknown>, private readonly nodeId: string) {}

  /** Extends this node's leases of these claims; the ones missing from the answer are no longer this node's. */
  async renew(leases: ReadonlyArray<{ lineKey: string; epoch: number }>, leaseMs: number): Promise<HeldLease[]> {
    if (!leases.length) return [];
    const r = await sql<Returned>`UPDATE modbus_line_leases l SET lease_until = ${NOW_MS} + ${leaseMs}
      FROM unnest(${leases.map((x) => x.lineKey)}::text[], ${leases.map((x) => x.epoch)}::bigint[]) AS v(k, e)
      WHERE l.line_key = v.k AND l.epoch = v.e AND l.node_id = ${this.nodeId} AND l.lease_until > ${NOW_MS}
      RETURNING l.line_key, l.epoch, l.lease_until, ${NOW_MS} AS db_now`.execute(this.db.kysely);
    return r.rows.map(held);
  }

  /**
   * Claims each line that has no lease or whose lease expired (on the database's clock); a line
   * another node holds, or claims in the same instant, is left out of the answer. One statement:
   * of two nodes claiming one line, the row lock lets one win.
   */
  async claim(lineKeys: readonly string[], leaseMs: number): Promise<HeldLease[]> {
    if (!lineKeys.length) return [];
    const r = await sql<Returned>`INSERT INTO modbus_line_leases AS l (line_key, node_id, epoch, lease_until, claimed_at)
      SELECT k, ${this.nodeId}, nextval('modbus_line_lease_epoch'), ${NOW_MS} + ${leaseMs}, ${NOW_MS} FROM unnest(${[...lineKeys]}::text[]) AS k
      ON CONFLICT (line_key) DO UPDATE SET node_id = excluded.node_id, epoch = excluded.epoch, lease_until = excluded.lease_until,
        claimed_at = excluded.claimed_at
      WHERE l.lease_until <= ${NOW_MS}
      RETURNING l.line_key, l.epoch, l.lease_until, ${NOW_MS} AS db_now`.execute(this.db.kysely);
    return r.rows.map(held);
  }

  /** Gives a line up (only under this node's claim `epoch`): another node may claim it at once. */
  async release(lineKey: string, epoch: number): Promise<boolean> {
    const r = await sql`DELETE FROM modbus_line_leases WHERE line_key = ${lineKey} AND node_id = ${this.nodeId} AND epoch = ${epoch}`.execute(this.db.kysely);
    return Number(r.numAffectedRows ?? 0) > 0;
  }

  /** Every lease (live: not expired on the database's clock). */
  async all(): Promise<LeaseRow[]> {
    const r = await sql<{ line_key: string; node_id: string; epoch: number; live: boolean }>`SELECT line_key, node_id, epoch,
      lease_until > ${NOW_MS} AS live FROM modbus_line_leases ORDER BY line_key`.execute(this.db.kysely);
    return r.rows.map((x) => ({ lineKey: x.line_key, nodeId: x.node_id, epoch: Number(x.epoch), live: x.live }));
  }
}

/** Which node polls each line now: the holders of unexpired leases (for the API: `polledBy`). */
export async function lineHolders(db: Db<unknown>): Promise<Map<string, string>> {
  const r = await sql<{ line_key: string; node_id: string }>`SELECT line_key, node_id FROM modbus_line_leases
    WHERE lease_until > ${NOW_MS} ORDER BY line_key`.execute(db.kysely);
  return new Map(r.rows.map((x) => [x.line_key, x.node_id]));
}

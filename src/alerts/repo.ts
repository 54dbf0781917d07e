/**
 * Alerts in the state store (tables `alerts`, `alert_settings`: migrations.ts, pg-schema.ts), through the
 * `Db` port: the embedded SQLite store or, in cluster mode, PostgreSQL. Writes take the caller's
 * transaction (a unit of the state window, so an alert's row, its audit entry and the broadcast it
 * starts commit together); reads outside a unit take the Db's Kysely. Transitions are guarded UPDATEs
 * (`WHERE state IN (…)`) returning the row: the database decides which of two concurrent steps (two
 * nodes approving the same alert) applies, the other gets nothing back. JSON is decoded here, not in SQL.
 */
import { sql, type Kysely } from 'kysely';
import type { CapAlert } from './cap/index.js';
import { DEFAULT_ALERT_POLICY, type Alert, type AlertPolicy, type AlertState } from './types.js';

/** A Kysely or a transaction of it (Transaction extends Kysely). */
export type Q = Kysely<unknown>;

interface AlertRow {
  id: string;
  identifier: string;
  state: AlertState;
  status: string;
  msg_type: string;
  severity: string;
  urgency: string;
  areas_json: string;
  devices_json: string;
  expires_at: number;
  cap_json: string;
  media_id: string | null;
  broadcast_id: string | null;
  created_by: string;
  created_at: number;
  approved_by: string | null;
  approved_at: number | null;
  played_at_once: number;
  ended_by: string | null;
  ended_at: number | null;
  end_reason: string | null;
  replaced_by: string | null;
  updated_at: number;
}

const COLUMNS = sql.raw(`id, identifier, state, status, msg_type, severity, urgency, areas_json, devices_json, expires_at, cap_json,
  media_id, broadcast_id, created_by, created_at, approved_by, approved_at, played_at_once, ended_by, ended_at, end_reason,
  replaced_by, updated_at`);

const OPEN_STATES: readonly AlertState[] = ['pending_approval', 'active'];

function toAlert(r: AlertRow): Alert {
  return {
    id: r.id,
    cap: JSON.parse(r.cap_json) as CapAlert,
    state: r.state,
    areas: JSON.parse(r.areas_json) as string[],
    devices: JSON.parse(r.devices_json) as string[],
    expiresAt: Number(r.expires_at),
    ...(r.media_id !== null ? { mediaId: r.media_id } : {}),
    ...(r.broadcast_id !== null ? { broadcastId: r.broadcast_id } : {}),
    createdBy: r.created_by,
    createdAt: Number(r.created_at),
    ...(r.approved_by !== null ? { approvedBy: r.approved_by } : {}),
    ...(r.approved_at !== null ? { approvedAt: Number(r.approved_at) } : {}),
    playedAtOnce: Number(r.played_at_once) === 1,
    ...(r.ended_by !== null ? { endedBy: r.ended_by } : {}),
    ...(r.ended_at !== null ? { endedAt: Number(r.ended_at) } : {}),
    ...(r.end_reason !== null ? { endReason: r.end_reason } : {}),
    ...(r.replaced_by !== null ? { replacedBy: r.replaced_by } : {}),
    updatedAt: Number(r.updated_at),
  };
}

export interface AlertListQuery {
  states?: readonly AlertState[];
  from?: number;
  to?: number;
  limit?: number;
}

/** What a guarded write expects the stored row to be. */
export interface AlertGuard {
  /** The row's state must be one of these. */
  states: readonly AlertState[];
  /** And nobody has approved it yet. */
  unapproved?: boolean;
}

export class AlertRepo {
  /** `db`: the Kysely of the Db the state window writes to (reads outside a unit). */
  constructor(private readonly db: Q) {}

  /** Inserts `a`; false (nothing written) when its id or CAP identifier exists already. */
  async insert(trx: Q, a: Alert): Promise<boolean> {
    const r = toRow(a);
    const res = await sql<{ id: string }>`INSERT INTO alerts (${COLUMNS})
      VALUES (${r.id}, ${r.identifier}, ${r.state}, ${r.status}, ${r.msg_type}, ${r.severity}, ${r.urgency}, ${r.areas_json}, ${r.devices_json},
        ${r.expires_at}, ${r.cap_json}, ${r.media_id}, ${r.broadcast_id}, ${r.created_by}, ${r.created_at}, ${r.approved_by}, ${r.approved_at},
        ${r.played_at_once}, ${r.ended_by}, ${r.ended_at}, ${r.end_reason}, ${r.replaced_by}, ${r.updated_at})
      ON CONFLICT DO NOTHING RETURNING id`.execute(trx);
    return res.rows.length === 1;
  }

  /**
   * Writes every mutable column of `a` (the service changes a copy, then saves it) if the stored row still
   * matches `guard`; the row as written, or undefined when it did not match (another step came first).
   */
  async transition(trx: Q, a: Alert, guard: AlertGuard): Promise<Alert | undefined> {
    const r = toRow(a);
    const res = await sql<AlertRow>`UPDATE alerts SET state = ${r.state}, media_id = ${r.media_id}, broadcast_id = ${r.broadcast_id},
        approved_by = ${r.approved_by}, approved_at = ${r.approved_at}, played_at_once = ${r.played_at_once}, ended_by = ${r.ended_by},
        ended_at = ${r.ended_at}, end_reason = ${r.end_reason}, replaced_by = ${r.replaced_by}, updated_at = ${r.updated_at}
      WHERE id = ${r.id} AND state IN (${sql.join(guard.states)})${guard.unapproved ? sql` AND approved_by IS NULL` : sql``}
      RETURNING ${COLUMNS}`.execute(trx);
    const row = res.rows[0];
    return row ? toAlert(row) : undefined;
  }

  async get(id: string, q: Q = this.db): Promise<Alert | undefined> {
    const r = (await sql<AlertRow>`SELECT ${COLUMNS} FROM alerts WHERE id = ${id}`.execute(q)).rows[0];
    return r ? toAlert(r) : undefined;
  }

  async byIdentifier(identifier: string, q: Q = this.db): Promise<Alert | undefined> {
    const r = (await sql<AlertRow>`SELECT ${COLUMNS} FROM alerts WHERE identifier = ${identifier}`.execute(q)).rows[0];
    return r ? toAlert(r) : undefined;
  }

  /** Newest first. */
  async list(qy: AlertListQuery = {}, q: Q = this.db): Promise<Alert[]> {
    const where = [sql`1 = 1`];
    if (qy.states?.length) where.push(sql`state IN (${sql.join(qy.states)})`);
    if (qy.from !== undefined) where.push(sql`created_at >= ${qy.from}`);
    if (qy.to !== undefined) where.push(sql`created_at < ${qy.to}`);
    const res = await sql<AlertRow>`SELECT ${COLUMNS} FROM alerts WHERE ${sql.join(where, sql` AND `)}
      ORDER BY created_at DESC, id DESC LIMIT ${qy.limit ?? 500}`.execute(q);
    return res.rows.map(toAlert);
  }

  /** Open alerts (pending or active) whose expiry has come, oldest expiry first. */
  async due(now: number, q: Q = this.db): Promise<Alert[]> {
    const res = await sql<AlertRow>`SELECT ${COLUMNS} FROM alerts WHERE state IN (${sql.join(OPEN_STATES)}) AND expires_at <= ${now}
      ORDER BY expires_at, id`.execute(q);
    return res.rows.map(toAlert);
  }

  /** The earliest expiry of an open alert (for the timer), or undefined. */
  async nextExpiry(q: Q = this.db): Promise<number | undefined> {
    const r = (await sql<{ t: number | string | null }>`SELECT MIN(expires_at) AS t FROM alerts WHERE state IN (${sql.join(OPEN_STATES)})`.execute(q)).rows[0];
    return r?.t == null ? undefined : Number(r.t);
  }

  async policy(q: Q = this.db): Promise<AlertPolicy> {
    const r = (await sql<{ value_json: string }>`SELECT value_json FROM alert_settings WHERE key = 'policy'`.execute(q)).rows[0];
    return r ? { ...DEFAULT_ALERT_POLICY, ...(JSON.parse(r.value_json) as Partial<AlertPolicy>) } : DEFAULT_ALERT_POLICY;
  }

  async setPolicy(trx: Q, p: AlertPolicy, by: string, at: number): Promise<void> {
    await sql`INSERT INTO alert_settings (key, value_json, updated_by, updated_at) VALUES ('policy', ${JSON.stringify(p)}, ${by}, ${at})
      ON CONFLICT (key) DO UPDATE SET value_json = excluded.value_json, updated_by = excluded.updated_by, updated_at = excluded.updated_at`.execute(trx);
  }
}

function toRow(a: Alert): AlertRow {
  return {
    id: a.id,
    identifier: a.cap.identifier,
    state: a.state,
    status: a.cap.status,
    msg_type: a.cap.msgType,
    severity: a.cap.severity,
    urgency: a.cap.urgency,
    areas_json: JSON.stringify(a.areas),
    devices_json: JSON.stringify(a.devices),
    expires_at: a.expiresAt,
    cap_json: JSON.stringify(a.cap),
    media_id: a.mediaId ?? null,
    broadcast_id: a.broadcastId ?? null,
    created_by: a.createdBy,
    created_at: a.createdAt,
    approved_by: a.approvedBy ?? null,
    approved_at: a.approvedAt ?? null,
    played_at_once: a.playedAtOnce ? 1 : 0,
    ended_by: a.endedBy ?? null,
    ended_at: a.endedAt ?? null,
    end_reason: a.endReason ?? null,
    replaced_by: a.replacedBy ?? null,
    updated_at: a.updatedAt,
  };
}

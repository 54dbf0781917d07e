/**
 * Alerts in the state store (table `alerts`, migrations.ts). Every write is
 * one statement or one transaction; the service decides the transitions.
 */
import type { SqliteDatabase } from '../storage/state/db.js';
import type { CapAlert } from './cap/index.js';
import { DEFAULT_ALERT_POLICY, type Alert, type AlertPolicy, type AlertState } from './types.js';

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

function toAlert(r: AlertRow): Alert {
  return {
    id: r.id,
    cap: JSON.parse(r.cap_json) as CapAlert,
    state: r.state,
    areas: JSON.parse(r.areas_json) as string[],
    devices: JSON.parse(r.devices_json) as string[],
    expiresAt: r.expires_at,
    ...(r.media_id !== null ? { mediaId: r.media_id } : {}),
    ...(r.broadcast_id !== null ? { broadcastId: r.broadcast_id } : {}),
    createdBy: r.created_by,
    createdAt: r.created_at,
    ...(r.approved_by !== null ? { approvedBy: r.approved_by } : {}),
    ...(r.approved_at !== null ? { approvedAt: r.approved_at } : {}),
    playedAtOnce: r.played_at_once === 1,
    ...(r.ended_by !== null ? { endedBy: r.ended_by } : {}),
    ...(r.ended_at !== null ? { endedAt: r.ended_at } : {}),
    ...(r.end_reason !== null ? { endReason: r.end_reason } : {}),
    ...(r.replaced_by !== null ? { replacedBy: r.replaced_by } : {}),
    updatedAt: r.updated_at,
  };
}

export interface AlertListQuery {
  states?: readonly AlertState[];
  from?: number;
  to?: number;
  limit?: number;
}

export class AlertRepo {
  constructor(private readonly db: SqliteDatabase) {}

  insert(a: Alert): void {
    this.db.prepare(`
      INSERT INTO alerts (id, identifier, state, status, msg_type, severity, urgency, areas_json, devices_json, expires_at, cap_json,
        media_id, broadcast_id, created_by, created_at, approved_by, approved_at, played_at_once, ended_by, ended_at, end_reason,
        replaced_by, updated_at)
      VALUES (@id, @identifier, @state, @status, @msg_type, @severity, @urgency, @areas_json, @devices_json, @expires_at, @cap_json,
        @media_id, @broadcast_id, @created_by, @created_at, @approved_by, @approved_at, @played_at_once, @ended_by, @ended_at, @end_reason,
        @replaced_by, @updated_at)`).run(toRow(a));
  }

  /** Writes every mutable column of `a` (the service changes a copy, then saves it). */
  save(a: Alert): void {
    this.db.prepare(`
      UPDATE alerts SET state = @state, media_id = @media_id, broadcast_id = @broadcast_id, approved_by = @approved_by,
        approved_at = @approved_at, played_at_once = @played_at_once, ended_by = @ended_by, ended_at = @ended_at,
        end_reason = @end_reason, replaced_by = @replaced_by, updated_at = @updated_at
      WHERE id = @id`).run(toRow(a));
  }

  get(id: string): Alert | undefined {
    const r = this.db.prepare('SELECT * FROM alerts WHERE id = ?').get(id) as AlertRow | undefined;
    return r ? toAlert(r) : undefined;
  }

  byIdentifier(identifier: string): Alert | undefined {
    const r = this.db.prepare('SELECT * FROM alerts WHERE identifier = ?').get(identifier) as AlertRow | undefined;
    return r ? toAlert(r) : undefined;
  }

  /** Newest first. */
  list(q: AlertListQuery = {}): Alert[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.states?.length) { where.push(`state IN (${q.states.map(() => '?').join(', ')})`); args.push(...q.states); }
    if (q.from !== undefined) { where.push('created_at >= ?'); args.push(q.from); }
    if (q.to !== undefined) { where.push('created_at < ?'); args.push(q.to); }
    const sql = `SELECT * FROM alerts ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, id DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, q.limit ?? 500) as AlertRow[]).map(toAlert);
  }

  /** Open alerts (pending or active) whose expiry has come, oldest expiry first. */
  due(now: number): Alert[] {
    return (this.db.prepare(`SELECT * FROM alerts WHERE state IN ('pending_approval', 'active') AND expires_at <= ? ORDER BY expires_at`)
      .all(now) as AlertRow[]).map(toAlert);
  }

  /** The earliest expiry of an open alert (for the timer), or undefined. */
  nextExpiry(): number | undefined {
    const r = this.db.prepare(`SELECT MIN(expires_at) AS t FROM alerts WHERE state IN ('pending_approval', 'active')`).get() as { t: number | null };
    return r.t ?? undefined;
  }

  policy(): AlertPolicy {
    const r = this.db.prepare(`SELECT value_json FROM alert_settings WHERE key = 'policy'`).get() as { value_json: string } | undefined;
    return r ? { ...DEFAULT_ALERT_POLICY, ...(JSON.parse(r.value_json) as Partial<AlertPolicy>) } : DEFAULT_ALERT_POLICY;
  }

  setPolicy(p: AlertPolicy, by: string, at: number): void {
    this.db.prepare(`
      INSERT INTO alert_settings (key, value_json, updated_by, updated_at) VALUES ('policy', ?, ?, ?)
      ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, updated_by = excluded.updated_by, updated_at = excluded.updated_at`)
      .run(JSON.stringify(p), by, at);
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

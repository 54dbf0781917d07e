/**
 * Row types of broadcasts, targets, the log and missed occurrences (migrations.ts, pg-schema.ts) and their
 * conversion to the API's shapes. Writes go through the state window (repo-sql.ts, the tables' one writer);
 * reads through the same `Db` (repo-sql.ts for one broadcast, queries.ts for lists, the log, CSV and totals).
 */
import type {
  Broadcast, BroadcastTarget, LogEntry, LogSource, MediaContent, Priority, StreamContent, TargetState,
} from './types.js';

export interface BroadcastRow {
  id: string; schedule_id: string | null; planned_at: number; priority: Priority; volume: number; content_json: string;
  duration_sec: number | null; not_after: number; created_at: number; stop_requested_at: number | null;
}
export interface TargetRow {
  broadcast_id: string; device_id: string; area: string; state: TargetState; updated_at: number; detail: string | null;
  play_request_id: string | null; stop_request_id: string | null;
}
export interface LogRow {
  seq: number; at: number; device_at: number | null; broadcast_id: string; schedule_id: string | null; device_id: string;
  area: string; state: TargetState; prev_state: TargetState | null; detail: string | null; source: LogSource;
}
export interface MissedRow { schedule_id: string; planned_at: number; device_id: string; area: string; recorded_at: number }

export interface NewLog {
  at: number; deviceAt?: number; broadcastId: string; scheduleId?: string; deviceId: string; area: string;
  state: TargetState; prevState?: TargetState; detail?: string; source: LogSource;
}

export interface NewBroadcast {
  id: string; scheduleId?: string; plannedAt: number; priority: Priority; volume: number; content: { media?: MediaContent; stream?: StreamContent };
  durationSec?: number; notAfter: number; createdAt: number;
}

/** A target as the broadcast starts: `pending`, or already in its first state after pending (see create()). */
export interface NewTarget {
  deviceId: string; area: string; playRequestId?: string;
  /** Default pending. */
  state?: TargetState;
  /** Of the first transition (state other than pending). */
  detail?: string; source?: LogSource;
}

/** What a transition's log line adds to the target row. */
export type TransitionLog = Omit<NewLog, 'at' | 'broadcastId' | 'deviceId' | 'area' | 'state' | 'prevState'>;

export function toTarget(r: TargetRow): BroadcastTarget {
  return { deviceId: r.device_id, area: r.area, state: r.state, updatedAt: r.updated_at, ...(r.detail !== null ? { detail: r.detail } : {}) };
}

export function toBroadcast(b: BroadcastRow, targets: TargetRow[]): Broadcast {
  const content = JSON.parse(b.content_json) as { media?: MediaContent; stream?: StreamContent };
  return {
    id: b.id,
    ...(b.schedule_id !== null ? { scheduleId: b.schedule_id } : {}),
    plannedAt: b.planned_at, priority: b.priority, volume: b.volume,
    ...(content.media ? { media: content.media } : {}),
    ...(content.stream ? { stream: content.stream } : {}),
    ...(b.duration_sec !== null ? { durationSec: b.duration_sec } : {}),
    notAfter: b.not_after, startedAt: b.created_at,
    ...(b.stop_requested_at !== null ? { stopRequestedAt: b.stop_requested_at } : {}),
    targets: targets.map(toTarget),
  };
}

export function toLogEntry(r: LogRow): LogEntry {
  return {
    at: r.at, ...(r.device_at !== null ? { deviceAt: r.device_at } : {}), broadcastId: r.broadcast_id,
    ...(r.schedule_id !== null ? { scheduleId: r.schedule_id } : {}),
    deviceId: r.device_id, area: r.area, state: r.state,
    ...(r.prev_state !== null ? { prevState: r.prev_state } : {}),
    ...(r.detail !== null ? { detail: r.detail } : {}), source: r.source,
  };
}

export function missedToLogEntry(r: MissedRow): LogEntry {
  return {
    at: r.planned_at, scheduleId: r.schedule_id, deviceId: r.device_id, area: r.area, state: 'missed',
    detail: 'schedule occurrence missed (controller was not running)', source: 'scheduler',
  };
}

/**
 * Proof of play: the broadcast log (nhật ký phát thanh) per
 * speaker, queryable by time, area (with its subtree) and schedule, as JSON
 * or CSV, and totals per area.
 *
 * Time windows are half-open [from, to) in epoch ms; either end may be absent.
 *
 * Totals (per area where the speakers are registered, and in all), counted in
 * speaker-broadcasts ("one speaker × one occurrence"), for broadcasts whose
 * planned time (the schedule occurrence, or the start of a "play now") is in
 * the window, plus missed occurrences planned in the window:
 *   planned    = every target + every missed slot
 *              = played + unconfirmed + failed + missed + stopped + preempted + inProgress
 *   played     = completed (played to the end, reported by the speaker)
 *   unconfirmed = accepted (or started) but the end never reported, and the
 *                content must have ended: firmware without playback events
 *                (ThingsBoard SDKs); it may have played, it is not proven
 *   failed     = failed + rejected + expired, plus targets still `pending` or
 *                `offline` whose notAfter has passed (they can no longer play;
 *                the RPC sweep turns them `expired` within seconds)
 *   missed     = speakers of schedule occurrences recorded missed (Keng was
 *                not running at the planned time; recordMissed)
 *   stopped    = stopped by staff (broadcast.stop) or the local stop button
 *   preempted  = interrupted by an emergency (not a fault of the speaker)
 *   inProgress = pending, offline, sent, accepted or playing, still valid
 */
import type { DeviceRegistryApi } from '../../devices/registry-types.js';
import { toCsv, type CsvValue } from './csv.js';
import {
  missedToLogEntry, toBroadcast, toLogEntry, type BroadcastRepo, type BroadcastRow, type LogRow, type MissedRow, type TargetRow,
} from './repo.js';
import { formatTime } from '../../core/time.js';
import type { AreaTotals, Broadcast, ListQuery, LogEntry, LogNames, LogQuery, TargetState, TotalsQuery, TotalsResult } from './types.js';

export type QueryRegistry = Pick<DeviceRegistryApi, 'subtree' | 'getArea' | 'getDevice'>;

export const DEFAULT_LIST_LIMIT = 100;
export const MAX_LIST_LIMIT = 1000;
export const DEFAULT_LOG_LIMIT = 10_000;
export const MAX_LOG_LIMIT = 100_000;

/** Columns of the log as CSV (executor.csv() and the scoped export of the API). */
export const LOG_CSV_HEADER = ['time', 'device_time', 'broadcast_id', 'schedule_id', 'schedule_name', 'media_id', 'media_name',
  'area', 'area_name', 'device_id', 'device_name', 'state', 'previous_state', 'detail', 'source'] as const;

/** One log line as a CSV record (LOG_CSV_HEADER), times in `tz`. */
export function logCsvRow(e: LogEntry, tz: string, areaName: (code: string) => string, deviceName: (id: string) => string): CsvValue[] {
  return [
    formatTime(e.at, tz), e.deviceAt !== undefined ? formatTime(e.deviceAt, tz) : '',
    e.broadcastId, e.scheduleId, e.scheduleName, e.mediaId, e.mediaName, e.area, areaName(e.area), e.deviceId, deviceName(e.deviceId),
    e.state, e.prevState, e.detail, e.source,
  ];
}

const NO_NAMES: LogNames = { schedule: () => undefined, media: () => undefined };

const MIN = -8.64e15;
const MAX = 8.64e15;

function clampLimit(v: number | undefined, def: number, max: number): number {
  if (v === undefined || !Number.isFinite(v)) return def;
  return Math.max(1, Math.min(max, Math.trunc(v)));
}

export class BroadcastQueries {
  constructor(
    private readonly repo: BroadcastRepo, private readonly registry: QueryRegistry, private readonly timeZone: string,
    private readonly names: LogNames = NO_NAMES,
  ) {}

  /** Area codes of the subtree as JSON (for json_each), or null for no area filter. Unknown area → empty set. */
  private areaSet(area: string | undefined): string | null {
    if (area === undefined) return null;
    return JSON.stringify(this.registry.getArea(area) ? this.registry.subtree(area) : []);
  }

  list(q: ListQuery = {}): Broadcast[] {
    const areas = this.areaSet(q.area);
    const rows = this.repo.db.prepare(`SELECT * FROM broadcasts b
      WHERE b.created_at >= ? AND b.created_at < ?
        AND (? IS NULL OR b.schedule_id = ?)
        AND (? IS NULL OR EXISTS (SELECT 1 FROM broadcast_targets t WHERE t.broadcast_id = b.id AND t.area IN (SELECT value FROM json_each(?))))
      ORDER BY b.created_at DESC, b.id LIMIT ?`)
      .all(q.from ?? MIN, q.to ?? MAX, q.scheduleId ?? null, q.scheduleId ?? null, areas, areas,
        clampLimit(q.limit, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)) as BroadcastRow[];
    const inArea = areas !== null ? new Set(JSON.parse(areas) as string[]) : null;
    return rows.map((b) => {
      const targets = this.repo.targetRows(b.id).filter((t: TargetRow) => !inArea || inArea.has(t.area));
      return toBroadcast(b, targets);
    });
  }

  /** Transitions and missed occurrences in time order (missed ones only when no broadcastId is asked for). */
  log(q: LogQuery = {}): LogEntry[] {
    const areas = this.areaSet(q.area);
    const limit = clampLimit(q.limit, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT);
    const from = q.from ?? MIN;
    const to = q.to ?? MAX;
    const sched = q.scheduleId ?? null;
    const dev = q.deviceId ?? null;
    // A broadcast's lines are found by broadcast_log_broadcast: a plain `broadcast_id = ?` term (not
    // `? IS NULL OR …`, which no index serves), else the planner would walk the whole `at` index.
    const byBroadcast = q.broadcastId !== undefined;
    const rows = this.repo.db.prepare(`SELECT * FROM broadcast_log
      WHERE at >= ? AND at < ?
        AND (? IS NULL OR schedule_id = ?) AND (? IS NULL OR device_id = ?) AND ${byBroadcast ? 'broadcast_id = ?' : '? IS NULL'}
        AND (? IS NULL OR area IN (SELECT value FROM json_each(?)))
      ORDER BY at, seq LIMIT ?`)
      .all(from, to, sched, sched, dev, dev, q.broadcastId ?? null, areas, areas, limit) as LogRow[];
    const entries = this.named(rows.map(toLogEntry));
    if (q.broadcastId !== undefined) return entries;
    const missed = this.repo.db.prepare(`SELECT * FROM broadcast_missed
      WHERE planned_at >= ? AND planned_at < ?
        AND (? IS NULL OR schedule_id = ?) AND (? IS NULL OR device_id = ?)
        AND (? IS NULL OR area IN (SELECT value FROM json_each(?)))
      ORDER BY planned_at, device_id LIMIT ?`)
      .all(from, to, sched, sched, dev, dev, areas, areas, limit) as MissedRow[];
    if (missed.length === 0) return entries;
    return [...entries, ...this.named(missed.map(missedToLogEntry))].sort((a, b) => a.at - b.at).slice(0, limit);
  }

  /** Adds the media id of each line's broadcast and the names of its schedule and media (each looked up once per call). */
  private named(entries: LogEntry[]): LogEntry[] {
    const mediaOf = new Map<string, string | null>();
    const scheduleNames = new Map<string, string | undefined>();
    const mediaNames = new Map<string, string | undefined>();
    const once = <V>(m: Map<string, V>, k: string, f: (k: string) => V): V => {
      if (!m.has(k)) m.set(k, f(k));
      return m.get(k) as V;
    };
    const mediaStmt = this.repo.db.prepare(`SELECT json_extract(content_json, '$.media.mediaId') FROM broadcasts WHERE id = ?`).pluck();
    for (const e of entries) {
      const mediaId = e.broadcastId !== undefined ? once(mediaOf, e.broadcastId, (id) => (mediaStmt.get(id) as string | null | undefined) ?? null) : null;
      if (mediaId !== null) {
        e.mediaId = mediaId;
        const n = once(mediaNames, mediaId, (id) => this.names.media(id));
        if (n !== undefined) e.mediaName = n;
      }
      if (e.scheduleId !== undefined) {
        const n = once(scheduleNames, e.scheduleId, (id) => this.names.schedule(id));
        if (n !== undefined) e.scheduleName = n;
      }
    }
    return entries;
  }

  /** The log as CSV (RFC 4180, UTF-8 with BOM), times in the commune's time zone. */
  csv(q: LogQuery = {}): string {
    const areaNames = new Map<string, string>();
    const deviceNames = new Map<string, string>();
    const areaName = (c: string): string => {
      let n = areaNames.get(c);
      if (n === undefined) { n = this.registry.getArea(c)?.name ?? ''; areaNames.set(c, n); }
      return n;
    };
    const deviceName = (id: string): string => {
      let n = deviceNames.get(id);
      if (n === undefined) { n = this.registry.getDevice(id)?.name ?? ''; deviceNames.set(id, n); }
      return n;
    };
    return toCsv(LOG_CSV_HEADER, this.log(q).map((e) => logCsvRow(e, this.timeZone, areaName, deviceName)));
  }

  totals(q: TotalsQuery = {}, now = Date.now()): TotalsResult {
    const areas = this.areaSet(q.area);
    const from = q.from ?? MIN;
    const to = q.to ?? MAX;
    const byArea = new Map<string, AreaTotals>();
    const row = (area: string): AreaTotals => {
      let r = byArea.get(area);
      if (!r) {
        const name = this.registry.getArea(area)?.name;
        r = { area, ...(name !== undefined ? { areaName: name } : {}), planned: 0, played: 0, failed: 0, missed: 0, stopped: 0, preempted: 0, unconfirmed: 0, inProgress: 0 };
        byArea.set(area, r);
      }
      return r;
    };
    const counts = this.repo.db.prepare(`SELECT t.area AS area, t.state AS state,
        (t.state IN ('pending', 'offline') AND b.not_after <= ?) AS late, COUNT(*) AS n
      FROM broadcast_targets t JOIN broadcasts b ON b.id = t.broadcast_id
      WHERE b.planned_at >= ? AND b.planned_at < ?
        AND (? IS NULL OR t.area IN (SELECT value FROM json_each(?)))
      GROUP BY t.area, t.state, late`)
      .all(now, from, to, areas, areas) as Array<{ area: string; state: TargetState; late: number; n: number }>;
    for (const c of counts) {
      const r = row(c.area);
      r.planned += c.n;
      if (c.state === 'completed') r.played += c.n;
      else if (c.state === 'failed' || c.state === 'rejected' || c.state === 'expired' || c.late) r.failed += c.n;
      else if (c.state === 'stopped') r.stopped += c.n;
      else if (c.state === 'preempted') r.preempted += c.n;
      else if (c.state === 'unconfirmed') r.unconfirmed += c.n;
      else r.inProgress += c.n;
    }
    const missed = this.repo.db.prepare(`SELECT area, COUNT(*) AS n FROM broadcast_missed
      WHERE planned_at >= ? AND planned_at < ? AND (? IS NULL OR area IN (SELECT value FROM json_each(?)))
      GROUP BY area`).all(from, to, areas, areas) as Array<{ area: string; n: number }>;
    for (const m of missed) {
      const r = row(m.area);
      r.missed += m.n;
      r.planned += m.n;
    }
    const list = [...byArea.values()].sort((a, b) => (a.area < b.area ? -1 : a.area > b.area ? 1 : 0));
    const total = { planned: 0, played: 0, failed: 0, missed: 0, stopped: 0, preempted: 0, unconfirmed: 0, inProgress: 0 };
    for (const r of list) {
      for (const k of Object.keys(total) as Array<keyof typeof total>) total[k] += r[k];
    }
    return { ...(q.from !== undefined ? { from: q.from } : {}), ...(q.to !== undefined ? { to: q.to } : {}), areas: list, total };
  }
}
